"""Export a trained model's feature extractor to ONNX or TorchScript: ``unreid export``.

The exported graph maps a batch of **preprocessed** images ``(B, 3, H, W) float32`` to L2-normalised
features ``(B, d) float32`` (the model in eval mode, as ``unreid extract``). Preprocessing is not in the
graph; it is written into the file's metadata (:func:`export_metadata`), so that a user of the file can
reproduce :func:`unreid.data.transforms.build_test_transform`: decode to RGB, resize to ``H x W``
(bicubic, antialiased), scale to ``[0, 1]``, subtract ``mean`` and divide by ``std`` per channel.

Where the metadata goes:

* ONNX: the model's ``metadata_props`` (string key -> string value; the values below as JSON text under
  the key ``unreid``, and each field also under its own key); the batch axis is dynamic.
* TorchScript: ``torch.jit.save(..., _extra_files={"unreid.json": ...})``; read it back with
  ``torch.jit.load(path, _extra_files={"unreid.json": ""})`` (or :func:`read_metadata`). Traced with
  ``torch.jit.trace``; torch 2.14 marks ``torch.jit`` deprecated (its warnings are silenced here) but still
  ships it, and TorchScript files load in C++ (libtorch) without Python.

Camera BN (``model.camera_bn``): ``unreid extract`` re-estimates every camera's BN statistics from that
camera's images; a single exported graph cannot, so the export uses the model's **running statistics**
(the eval-mode BN layers) and says so in the metadata (``camera_bn``). Its features are therefore not
those of ``unreid extract`` for such a model; the CLI warns.

ONNX exporter (:func:`onnx_exporter`): torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``,
the default since torch 2.9) when ``onnxscript`` is installed (``pip install 'unreid[export]'`` installs
it), else the TorchScript-based one (``dynamo=False``, deprecated by torch, needs only ``onnx``). Both
were checked against onnxruntime on torch 2.14 (features equal to PyTorch's within 1e-6); the dynamo one
takes ~15 s for a ResNet on CPU where the old one takes ~1 s. Opset 18 (onnxruntime >= 1.14).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unreid.config import Config
from unreid.search import InputError

#: accepted ``--format`` values and the file suffix each gets
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
#: the ONNX opset used (onnxruntime >= 1.14; the dynamo exporter's lowest well-supported opset)
ONNX_OPSET = 18


def export_metadata(cfg: Config, feature_dim: int, checkpoint: str | os.PathLike | None) -> dict[str, Any]:
    """What a user of the exported file needs to feed it and read its output.

    Returns:
        ``{"format": "unreid-export-1", "input": "(B, 3, H, W) float32 RGB", "height", "width", "resize":
        "bicubic, antialiased", "scale": "1/255", "mean": [3 floats], "std": [3 floats], "output":
        "(B, d) float32", "feature_dim": d, "normalisation": "L2", "distance": "cosine (1 - dot)",
        "backbone", "camera_bn", "checkpoint"}``. mean / std are the ImageNet statistics of
        :mod:`unreid.data.transforms` (torchvision weights; Cluster Contrast ``normalizer``).
    """
    from unreid.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return {
        "format": "unreid-export-1",
        "input": "(B, 3, H, W) float32 RGB, preprocessed as below",
        "height": int(cfg.data.height),
        "width": int(cfg.data.width),
        "resize": "bicubic, antialiased, to (height, width)",
        "scale": "pixel / 255",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "output": "(B, feature_dim) float32",
        "feature_dim": int(feature_dim),
        "normalisation": "L2",
        "distance": "cosine distance 1 - dot(a, b)",
        "backbone": cfg.model.backbone,
        "camera_bn": ("running statistics (the per-camera re-estimation of `unreid extract` is not in the graph)"
                      if cfg.model.camera_bn else "no"),
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
    }


class FeatureExtractor(nn.Module):
    """``model`` in eval mode, returning L2-normalised ``(B, d) float32`` features of preprocessed images
    ``(B, 3, H, W) float32``. The wrapped model is kept in eval mode whatever mode the wrapper is put in
    (its BN layers use their running statistics, dropout is off)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model(x).float(), dim=1)


def _temp_next_to(out: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    return Path(tmp)


def onnx_exporter(exporter: str = "auto") -> str:
    """The ONNX exporter to use: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, needs ``onnxscript``) or
    ``"legacy"`` (``dynamo=False``, the TorchScript-based exporter, deprecated by torch but ~10x faster);
    ``"auto"`` picks dynamo when ``onnxscript`` is installed. Raises ``InputError`` on another name."""
    import importlib.util

    if exporter == "auto":
        return "dynamo" if importlib.util.find_spec("onnxscript") is not None else "legacy"
    if exporter not in ("dynamo", "legacy"):
        raise InputError(f"ONNX exporter {exporter!r}: choose auto, dynamo or legacy")
    return exporter


def _onnx_export(extractor: nn.Module, example: torch.Tensor, path: Path, exporter: str) -> None:
    """``torch.onnx.export`` of ``extractor`` to ``path``: input ``images``, output ``features``, dynamic batch."""
    with torch.no_grad(), warnings.catch_warnings():
        # exporter chatter (deprecation of the legacy exporter, constant-folding notes); numbers are tested
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        if onnx_exporter(exporter) == "dynamo":
            torch.onnx.export(extractor, (example,), str(path), input_names=["images"], output_names=["features"],
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, opset_version=ONNX_OPSET,
                              dynamo=True, verbose=False)
        else:
            torch.onnx.export(extractor, (example,), str(path), input_names=["images"], output_names=["features"],
                              dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)


def export_model(model: nn.Module, cfg: Config, fmt: str, out: str | os.PathLike,
                 checkpoint: str | os.PathLike | None = None, exporter: str = "auto") -> Path:
    """Write ``model``'s feature extractor to ``out`` as ONNX or TorchScript, with :func:`export_metadata`.

    Args:
        model: a re-ID model (any device; exported on CPU, float32).
        cfg: its config (input size, backbone, camera BN).
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: the file to write; never overwritten. Written to a temporary file of the same folder, then
            renamed.
        checkpoint: the checkpoint it came from (recorded in the metadata).
        exporter: ONNX only: ``"auto"``, ``"dynamo"`` or ``"legacy"`` (:func:`onnx_exporter`).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: an unknown ``fmt``, or ``out`` exists.
        ImportError: ``onnx`` is not installed (``pip install unreid[export]``).
    """
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists():
        raise InputError(f"{out} exists; choose another --out (files are never overwritten)")
    extractor = FeatureExtractor(copy.deepcopy(model).float().cpu()).eval()  # the caller's model is left as it is
    example = torch.zeros(2, 3, cfg.data.height, cfg.data.width)
    with torch.no_grad():
        dim = int(extractor(example).shape[1])
    meta = export_metadata(cfg, dim, checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_next_to(out)
    try:
        if fmt == "onnx":
            try:
                import onnx
            except ImportError as err:
                raise ImportError("ONNX export needs the onnx package: pip install 'unreid[export]'") from err
            _onnx_export(extractor, example, tmp, exporter)
            proto = onnx.load(str(tmp))
            props = {"unreid": json.dumps(meta)} | {k: json.dumps(v) if not isinstance(v, str) else v
                                                     for k, v in meta.items()}
            onnx.helper.set_model_props(proto, props)
            onnx.save(proto, str(tmp))
        else:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
                traced = torch.jit.trace(extractor, example, check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={"unreid.json": json.dumps(meta)})
        if out.exists():  # appeared meanwhile: still never overwrite
            raise InputError(f"{out} exists; choose another --out (files are never overwritten)")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The :func:`export_metadata` dict stored in an exported ``.onnx`` or TorchScript file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props["unreid"])
    extra = {"unreid.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["unreid.json"])


__all__ = ["FORMATS", "FeatureExtractor", "export_metadata", "export_model", "read_metadata"]

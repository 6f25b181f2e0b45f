"""Structure images for GCL's generator: the original view and a novel view of each training image.

GCL (Chen et al., CVPR 2021, Sec. 3.1) renders each person's 3D mesh (SMPL fitted by HMR) from the original
viewpoint and from a new one; its generator keeps the appearance of the image and takes the body shape and
pose from the rendering. Two sources here (``method.gcl.structure``):

* ``"mesh"``: the authors' pre-rendered views, read from their layout (chenhao2345/GCL @88aed52,
  ``gcl/utils/data/preprocessor.py`` ``MeshPreprocessor``): ``<mesh_dir>/train/render/<name>`` (original view)
  and ``<mesh_dir>/train/render_<deg>/<name>`` (novel view, ``deg`` drawn uniformly from
  ``method.gcl.novel_degrees``), 1-channel, resized to the input size (bicubic) and normalised with mean 0.5 /
  std 0.5 (``mesh_transformer``). ``<name>`` is the image's file name (Market-1501, DukeMTMC-reID), or its last
  two path components (MSMT17's ``<pid>/<file>``), whichever exists.
* ``"edges"``: a **stand-in, not the paper's method**, for users without meshes (SMPL's body models are
  licensed and HMR needs them; docs/methods/gcl.md): the Sobel edge magnitude of the grey image, scaled
  to [0, 1] per image and normalised like a mesh view; the novel view is that edge map randomly flipped and
  affinely warped (torchvision ``RandomHorizontalFlip`` + ``RandomAffine``: +-10 degrees, 10 % translation, scale
  0.9-1.1; the edges are warped, not the image, so the warp's border draws no edge). It changes pose and
  framing a little; it cannot turn a person round.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from torch import Tensor
from torchvision.io import ImageReadMode, read_image

from unreid.data.datasets.base import Sample

STRUCTURES = ("mesh", "edges")
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def mesh_candidates(mesh_dir: str | Path, image_path: str, view: str) -> list[Path]:
    """Where the authors' layout keeps ``view`` (``"render"`` or ``"render_<deg>"``) of ``image_path``:
    ``<mesh_dir>/train/<view>/<file name>``, then ``<mesh_dir>/train/<view>/<parent>/<file name>``."""
    p = Path(image_path)
    base = Path(mesh_dir) / "train" / view
    return [base / p.name, base / p.parent.name / p.name]


def find_mesh(mesh_dir: str | Path, image_path: str, view: str) -> Path:
    """The first existing :func:`mesh_candidates` path.

    Raises:
        FileNotFoundError: none exists (one line: the paths tried and the layout expected).
    """
    tried = mesh_candidates(mesh_dir, image_path, view)
    for c in tried:
        if c.is_file():
            return c
    raise FileNotFoundError(f"GCL mesh view missing for {image_path}: tried {', '.join(map(str, tried))}; expected the "
                            f"authors' layout <mesh_dir>/train/render/<image name> and <mesh_dir>/train/render_<deg>/"
                            f"<image name> (1-channel), or set method.gcl.structure=edges (a stand-in)")


def check_mesh_dir(mesh_dir: str | Path, samples: Sequence[Sample], degrees: Sequence[int]) -> None:
    """Check that every training image has its original view and every novel view of ``degrees``.

    Raises:
        FileNotFoundError: ``mesh_dir`` is not a folder, or views are missing (the message counts them and
            names the first).
    """
    if not Path(mesh_dir).is_dir():
        raise FileNotFoundError(f"method.gcl.mesh_dir={mesh_dir}: no such folder (it should hold train/render/ and "
                                f"train/render_<deg>/ for deg in {list(degrees)})")
    views = ["render"] + [f"render_{d}" for d in degrees]
    missing, first = 0, None
    for s in samples:
        for v in views:
            if not any(os.path.isfile(c) for c in mesh_candidates(mesh_dir, s.path, v)):
                missing += 1
                first = first or (s.path, v)
    if missing:
        raise FileNotFoundError(f"method.gcl.mesh_dir={mesh_dir}: {missing} of {len(samples) * len(views)} views "
                                f"missing, first {first[1]} of {first[0]} (expected {mesh_candidates(mesh_dir, *first)[0]})")


def sobel_edges(grey: Tensor) -> Tensor:
    """Sobel gradient magnitude of ``grey`` ``(1, H, W)`` float, scaled to [0, 1] by its maximum
    (all zeros stay zeros); replicate padding keeps the size."""
    k = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(grey)
    g = F.conv2d(F.pad(grey.unsqueeze(0), (1, 1, 1, 1), mode="replicate"), k)[0]
    mag = g.pow(2).sum(0, keepdim=True).sqrt()
    return mag / mag.max().clamp_min(1e-12)


class StructureViews:
    """Training transform of GCL: ``(img uint8 (3, h, w), sample) -> {"img", "mesh", "mesh_nv"}``.

    ``img``: ``image_transform(img)`` (``float32 (3, H, W)``; GCL uses no augmentation: resize + normalise);
    ``mesh`` / ``mesh_nv``: ``float32 (1, H, W)`` in [-1, 1], the original and a novel structure view (module
    docstring). Random draws (novel angle, warp) use torch's global generator (seeded per DataLoader worker).

    Args:
        image_transform: the image's transform.
        size: ``(H, W)`` of the model input.
        structure: ``"mesh"`` or ``"edges"``.
        mesh_dir: the authors' mesh folder (``"mesh"``).
        degrees: the novel-view angles to draw from (``"mesh"``).

    Raises:
        ValueError: an unknown ``structure``, or ``"mesh"`` without ``mesh_dir``.
    """

    takes_sample = True  # unreid.data.loader.ReIDImageDataset passes the sample (its path names the mesh files)

    def __init__(self, image_transform: Any, size: tuple[int, int], structure: str = "edges",
                 mesh_dir: str | None = None, degrees: Sequence[int] = (45, 90, 135, 180, 225, 270)) -> None:
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        if structure == "mesh" and not mesh_dir:
            raise ValueError("structure='mesh' needs mesh_dir (method.gcl.mesh_dir)")
        self.image_transform = image_transform
        self.size = (int(size[0]), int(size[1]))
        self.structure, self.mesh_dir, self.degrees = structure, mesh_dir, [int(d) for d in degrees]
        self.warp = T.Compose([T.RandomHorizontalFlip(0.5),
                               T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))])

    def _normalise(self, x: Tensor) -> Tensor:
        """``(1, h, w)`` in [0, 1] -> ``(1, H, W)`` in [-1, 1] (bicubic resize, mean 0.5, std 0.5)."""
        x = F.interpolate(x.unsqueeze(0), size=self.size, mode="bicubic", align_corners=False)[0].clamp(0, 1)
        return (x - 0.5) / 0.5

    def _read(self, path: Path) -> Tensor:
        return read_image(str(path), mode=ImageReadMode.GRAY).float() / 255.0

    def __call__(self, img: Tensor, sample: Sample) -> dict[str, Tensor]:
        out = {"img": self.image_transform(img)}
        if self.structure == "mesh":
            deg = self.degrees[int(torch.randint(len(self.degrees), (1,)))]
            out["mesh"] = self._normalise(self._read(find_mesh(self.mesh_dir, sample.path, "render")))
            out["mesh_nv"] = self._normalise(self._read(find_mesh(self.mesh_dir, sample.path, f"render_{deg}")))
            return out
        rgb = torch.as_tensor(img).float() / 255.0
        grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).unsqueeze(0)
        grey = F.interpolate(grey.unsqueeze(0), size=self.size, mode="bilinear", align_corners=False)[0]
        edges = sobel_edges(grey)
        out["mesh"] = self._normalise(edges)
        out["mesh_nv"] = self._normalise(self.warp(edges))  # warping the edge map: no edge along the warp's border
        return out


__all__ = ["STRUCTURES", "StructureViews", "check_mesh_dir", "find_mesh", "mesh_candidates", "sobel_edges"]

"""The ``unreid`` command line: ``train``, ``eval``, ``extract``, ``search``, ``export``, ``datasets``, ``demo``.

Every command takes a YAML config (see ``configs/``) and dotted ``key=value`` overrides, e.g.::

    unreid train configs/cluster_contrast/market1501.yaml data.root=/data/Market-1501-v15.09.15
    unreid eval  configs/cluster_contrast/market1501.yaml --checkpoint outputs/cc-market/model_best.pth
    unreid extract configs/cluster_contrast/market1501.yaml --checkpoint ckpt.pth --split query --out q.npz
    unreid search --checkpoint ckpt.pth --gallery market1501:/data/Market --query q.jpg --out search/
    unreid export --checkpoint ckpt.pth --format onnx --out model.onnx
    unreid datasets
    unreid datasets --check vehicleid /data/VehicleID_V1.0 test_sizes=800 draws=1
    unreid demo

On several GPUs or machines, ``torchrun`` starts one process per GPU (docs/DISTRIBUTED.md)::

    torchrun --nproc_per_node 4 -m unreid train configs/cluster_contrast/market1501.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEMO_HELP = (
    "Train camera-aware Cluster Contrast (per-camera standardised neighbourhoods + camera-aware proxies) "
    "on the built-in synthetic set (procedural identities seen by 4 cameras) with an ImageNet "
    "EfficientNet-Lite0 and print the metrics before and after; about 4 minutes on 2 CPU cores. "
    "--plain runs the published Cluster Contrast recipe instead (on this set it loses cross-camera mAP: "
    "its clusters follow the cameras)."
)


SEARCH_HELP = (
    "Rank a gallery for query images with a trained model: the top-k gallery images of each query with "
    "their distances, printed and drawn as rank lists (green / red frames when identities are known). The "
    "gallery's features are cached in --out and recomputed when the checkpoint or the gallery files change; "
    "nothing is written into the gallery or query folders."
)
#: ``unreid extract --format`` values and the suffix of the main output file
EXTRACT_FORMATS = {"npz": ".npz", "npy": ".npy", "parquet": ".parquet"}


def _add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    p.add_argument("config", nargs=None if config_required else "?", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. optim.epochs=10 data.root=/data/market1501")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unreid", description="Unsupervised object re-identification.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (unsupervised, or the supervised reference)")
    _add_config_args(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue the run in output_dir (or from CHECKPOINT) exactly where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous run in output_dir (otherwise it is never overwritten)")

    p = sub.add_parser("eval", help="evaluate a checkpoint on the config's query / gallery")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="model_best.pth / checkpoint_last.pth of a run")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al., CVPR 2017)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--visualize", type=int, default=0, metavar="K",
                   help="also draw the rank lists of K queries (the best and worst by AP, and random ones)")
    p.add_argument("--vis-out", default=None, metavar="DIR",
                   help="folder for the --visualize PNGs (default: ranklists/ next to the checkpoint; a fresh "
                        "name is chosen when it exists)")

    p = sub.add_parser("extract", help="write L2-normalised features of a split (.npz, .npy + index, .parquet)")
    _add_config_args(p)
    p.add_argument("--checkpoint", default=None,
                   help="trained weights; without it the (ImageNet) backbone of the config is used")
    p.add_argument("--split", choices=["train", "query", "gallery"], default="query",
                   help="with model.camera_bn, each camera's BN statistics come from this split's images")
    p.add_argument("--out", required=True, help="output file (features, paths, pids, camids); never overwritten")
    p.add_argument("--format", choices=list(EXTRACT_FORMATS), default="npz",
                   help="npz: one .npz with features, paths, pids, camids; npy: features .npy (N, d) float32 + "
                        "<name>.index.csv (row, path, pid, camid); parquet: one row per image with columns "
                        "path, pid, camid, feature (list<float32>), needs pyarrow")

    p = sub.add_parser("search", help=SEARCH_HELP, description=SEARCH_HELP)
    p.add_argument("--checkpoint", required=True, help="model_best.pth / checkpoint_last.pth of a run")
    p.add_argument("--gallery", required=True, metavar="DIR|NAME:ROOT",
                   help="a folder of images (recursive; identities unknown) or a data set and its root, e.g. "
                        "market1501:/data/Market-1501 (its gallery split; identities known)")
    p.add_argument("--query", required=True, metavar="IMG|DIR|NAME:ROOT",
                   help="an image, a folder of images, or NAME:ROOT (that data set's query split)")
    p.add_argument("--topk", type=int, default=10, help="gallery images listed per query (default 10)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: results.json, ranklists/*.png and the gallery-feature cache")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al., CVPR 2017)")
    p.add_argument("--config", default=None, help="YAML config (default: the one stored in the checkpoint)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. device=cpu")

    p = sub.add_parser("export", help="write the feature extractor as ONNX or TorchScript (preprocessing in "
                                      "its metadata)")
    p.add_argument("--checkpoint", required=True, help="model_best.pth / checkpoint_last.pth of a run")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="output file (.onnx / .pt); never overwritten")
    p.add_argument("--onnx-exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="torch's dynamo exporter (needs onnxscript; auto picks it when installed) or the legacy "
                        "TorchScript-based one")
    p.add_argument("--config", default=None, help="YAML config (default: the one stored in the checkpoint)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")

    p = sub.add_parser("datasets", help="list the known datasets and their expected folder layouts, or check "
                                        "a copy against the published counts (--check)")
    p.add_argument("--check", nargs=2, metavar=("NAME", "ROOT"),
                   help="load data set NAME from ROOT and compare its counts with the published ones "
                        "(exit status 1 when they differ)")
    p.add_argument("options", nargs="*", metavar="key=value", help="data set options for --check, e.g. draws=1")

    p = sub.add_parser("demo", help=DEMO_HELP, description=DEMO_HELP)
    p.add_argument("--output", default="unreid-demo", help="output folder (a fresh one is chosen if it exists)")
    p.add_argument("--plain", action="store_true", help="plain Cluster Contrast, without the camera-aware parts")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the demo run")
    return parser


def _load(args: argparse.Namespace):
    from unreid.config import load_config

    return load_config(args.config, args.overrides)


def _device(name: str):
    """The torch device of ``device=...``; a device that is not there is a configuration error (exit 2)."""
    import torch

    from unreid.config import ConfigError
    from unreid.engine.trainer import resolve_device

    try:
        dev = resolve_device(name)
    except RuntimeError as err:
        raise ConfigError(str(err).splitlines()[0]) from err
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                          "device(s); use device=cuda, cpu or auto")
    return dev


def _load_model(path: str, cfg):
    """The checkpoint's model for ``cfg``, printing what it was trained with where that differs."""
    from unreid.engine.checkpoint import load_trained_model

    model, warnings = load_trained_model(path, cfg)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return model


def _run_state(trainer) -> str:
    """What a stopped or interrupted run left in its folder, and how to go on."""
    done = trainer.state.epoch
    if done == 0:
        return (f"no epoch was completed in {trainer.output_dir}: `unreid train CONFIG --resume` starts this run "
                "again from epoch 0 with the same config; to change the config, start it with --overwrite (this "
                "run is moved aside) or another output_dir=...")
    return (f"the run in {trainer.output_dir} is kept as of epoch {done - 1} (checkpoint_last.pth, metrics.jsonl "
            "and model_best.pth agree): `unreid train CONFIG --resume` continues it")


def cmd_train(args: argparse.Namespace) -> int:
    from unreid.engine import dist

    try:
        return _train(args)
    finally:
        dist.cleanup()  # under torchrun: leave the process group


def _train(args: argparse.Namespace) -> int:
    from unreid.engine import Trainer, TrainingStopped

    cfg = _load(args)
    _device(cfg.device)  # before the run folder is touched
    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite)
    try:
        record = trainer.train()
    except TrainingStopped as err:
        if _is_main_process():
            print(f"training stopped: {err}\n{_run_state(trainer)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; {_run_state(trainer)}", file=sys.stderr)
        return 130
    if not _is_main_process():
        return 0
    print(f"outputs: {trainer.output_dir}  (metrics.jsonl, train.log, checkpoint_last.pth, model_best.pth)")
    if record.get("test"):
        print(json.dumps({"mode": trainer.mode, "epoch": record["epoch"], **record["test"]}))
    return 0


def _fresh_folder(path: Path) -> Path:
    """``path`` when it does not exist, else the first free ``path-2``, ``path-3``, ... (never overwrite)."""
    if not path.exists():
        return path
    i = 2
    while Path(f"{path}-{i}").exists():
        i += 1
    return Path(f"{path}-{i}")


def _is_main_process() -> bool:
    """Rank 0 of a torchrun launch (``RANK`` unset or 0): the process that prints."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def cmd_eval(args: argparse.Namespace) -> int:
    from unreid.engine import evaluate_model
    from unreid.engine.hooks import METRIC_KEYS
    from unreid.engine.trainer import load_data

    cfg = _load(args)
    if args.rerank:
        cfg.eval.rerank = True
    if args.visualize < 0:
        print(f"error: --visualize {args.visualize}: give the number of queries to draw (>= 1)", file=sys.stderr)
        return 2
    device = _device(cfg.device)
    model = _load_model(args.checkpoint, cfg)
    model.to(device)
    data = load_data(cfg)
    if not data.query or not data.gallery:
        print(f"error: dataset {cfg.data.name!r} has no query/gallery to evaluate on", file=sys.stderr)
        return 2
    drawn: list[dict] = []
    if args.visualize:  # rank lists of the default split (the first trial of a multi-trial protocol)
        res, drawn = _evaluate_and_draw(model, data.query, data.gallery, cfg, device, args)
    if data.trials or not args.visualize:
        res = evaluate_model(model, data.query, data.gallery, cfg, device, trials=data.trials)
    if args.json:
        print(json.dumps({**res, "ranklists": drawn} if drawn else res))
    else:
        from unreid.evaluation.trials import format_groups

        print(f"{data.name} ({cfg.eval.protocol} protocol{', re-ranked' if cfg.eval.rerank else ''}): "
              + "  ".join(f"{k} {res[k]:.2f}" for k in METRIC_KEYS if k in res))
        table = format_groups(res)
        if table:  # multi-trial protocols: mean ± population std per group; the line above = first group
            print(f"per group, mean ± std (ddof=0) over trials; the line above is the first group:\n{table}")
        for d in drawn:
            print(f"  {d['kind']:>6} query {d['query_index']} (AP {100 * d['ap']:.1f}): {d['ranklist']}")
    return 0


def _evaluate_and_draw(model, query, gallery, cfg, device, args) -> tuple[dict, list[dict]]:
    """``evaluate_model``'s metrics, plus rank lists of ``args.visualize`` queries (best, worst, random by AP)
    drawn with the protocol's camera filter and distance; returns ``(metrics, [{"kind", "query_index", "query",
    "ap", "gallery" (the top-10 paths), "ranklist"}])``."""
    from unreid.engine.trainer import evaluate_features, extract
    from unreid.evaluation.visualize import draw_rank_lists

    t0 = time.time()
    feats = extract(model, list(query) + list(gallery), cfg, device)  # one pass, as evaluate_model
    qf, gf = feats[:len(query)], feats[len(query):]
    res = evaluate_features(qf, gf, query, gallery, cfg)
    res["time_s"] = round(time.time() - t0, 2)
    out = _fresh_folder(Path(args.vis_out) if args.vis_out else Path(args.checkpoint).parent / "ranklists")
    drawn = draw_rank_lists(qf, gf, query, gallery, args.visualize, out, protocol=cfg.eval.protocol,
                            rerank=cfg.eval.rerank, seed=cfg.seed, size=(cfg.data.height, cfg.data.width))
    return res, drawn


def cmd_extract(args: argparse.Namespace) -> int:
    import numpy as np

    from unreid.engine import extract
    from unreid.engine.trainer import load_data
    from unreid.models import build_model

    cfg = _load(args)
    suffix = EXTRACT_FORMATS[args.format]
    out = Path(args.out)
    if out.suffix != suffix:
        out = out.with_suffix(out.suffix + suffix)
    index = out.with_suffix(".index.csv") if args.format == "npy" else None
    for path in (out, index):
        if path is not None and path.exists():
            print(f"error: {path} exists; choose another --out (files are never overwritten)", file=sys.stderr)
            return 2
    if args.format == "parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            print("error: --format parquet needs pyarrow: pip install 'unreid[export]' (or use --format npz / npy)",
                  file=sys.stderr)
            return 2
    device = _device(cfg.device)
    model = _load_model(args.checkpoint, cfg) if args.checkpoint else build_model(cfg.model)
    model.to(device)
    samples = getattr(load_data(cfg), args.split)
    t0 = time.time()
    feats = extract(model, samples, cfg, device).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [s.path for s in samples]
    pids = np.asarray([s.pid for s in samples], dtype=np.int64)
    camids = np.asarray([s.camid for s in samples], dtype=np.int64)
    if args.format == "npz":
        np.savez(out, features=feats, paths=np.asarray(paths), pids=pids, camids=camids)
    elif args.format == "npy":
        write_npy_features(out, index, feats, paths, pids, camids)
    else:
        write_parquet_features(out, feats, paths, pids, camids,
                               {"split": args.split, "checkpoint": args.checkpoint, "dataset": cfg.data.name})
    extra = f" (+ {index})" if index is not None else ""
    print(f"wrote {out}{extra}: {feats.shape[0]} x {feats.shape[1]} features in {time.time() - t0:.1f}s")
    return 0


def write_npy_features(out: Path, index: Path, feats, paths, pids, camids) -> None:
    """``unreid extract --format npy``: ``out`` holds the ``(N, d) float32`` features (``numpy.save``), ``index``
    a CSV with a header and one row per feature row: ``row`` (0-based), ``path``, ``pid``, ``camid``."""
    import csv

    import numpy as np

    np.save(out, np.asarray(feats, dtype=np.float32))
    with open(index, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "path", "pid", "camid"])
        for i, (p, pid, cam) in enumerate(zip(paths, pids, camids)):
            w.writerow([i, p, int(pid), int(cam)])


def write_parquet_features(out: Path, feats, paths, pids, camids, meta: dict) -> None:
    """``unreid extract --format parquet``: one row per image, columns ``path`` (string), ``pid`` (int64),
    ``camid`` (int64), ``feature`` (list<float32>, L2-normalised, length d); the schema metadata key
    ``unreid`` holds JSON with ``feature_dim``, ``normalisation`` ("L2") and ``meta``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    feats = np.asarray(feats, dtype=np.float32)
    n, d = feats.shape
    column = pa.ListArray.from_arrays(pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)),
                                      pa.array(feats.reshape(-1), type=pa.float32()))
    table = pa.table({"path": pa.array(list(paths), type=pa.string()), "pid": pa.array(pids, type=pa.int64()),
                      "camid": pa.array(camids, type=pa.int64()), "feature": column})
    info = {"feature_dim": d, "normalisation": "L2", **meta}
    table = table.replace_schema_metadata({"unreid": json.dumps(info)})
    pq.write_table(table, out)


def cmd_search(args: argparse.Namespace) -> int:
    from unreid.search import format_results, search

    res = search(args.checkpoint, args.gallery, args.query, args.out, topk=args.topk, rerank=args.rerank,
                 config=args.config, overrides=args.overrides or [])
    print(format_results(res))
    cached = "from the cache" if res["from_cache"] else "computed and cached"
    print(f"gallery: {res['gallery_size']} images, features {cached} in {Path(args.out) / 'gallery_features.npz'}; "
          f"results in {Path(args.out) / 'results.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from unreid.engine.checkpoint import load_trained_model
    from unreid.export import export_model
    from unreid.search import InputError, config_for_checkpoint

    out = Path(args.out)
    if out.exists():
        raise InputError(f"{out} exists; choose another --out (files are never overwritten)")
    cfg = config_for_checkpoint(args.checkpoint, args.config, args.overrides or [])
    model, warnings = load_trained_model(args.checkpoint, cfg)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if cfg.model.camera_bn:
        print("warning: model.camera_bn: the export uses the running BN statistics; `unreid extract` re-estimates "
              "each camera's statistics, so the exported features differ from its features", file=sys.stderr)
    export_model(model, cfg, args.format, out, checkpoint=args.checkpoint, exporter=args.onnx_exporter)
    print(f"wrote {out} ({args.format}; input (B, 3, {cfg.data.height}, {cfg.data.width}) ImageNet-normalised, "
          "output L2-normalised features; preprocessing in its metadata)")
    return 0


def _option_value(text: str):
    """A ``key=value`` option value as YAML reads it (``3`` -> 3, ``true`` -> True, ``800,1600`` stays text)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def cmd_datasets(args: argparse.Namespace) -> int:
    from unreid.config import ConfigError
    from unreid.data.datasets import DATASETS, build_dataset, compare_published

    if args.check:
        name, root = args.check
        options = {}
        for item in args.options:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"datasets --check: expected key=value options, got {item!r}")
            options[key] = _option_value(value)
        if name not in DATASETS:
            raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
        info = DATASETS[name]
        try:
            data = build_dataset(name, root, **options)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        print(data.summary())
        if not info.published:
            print(f"{name}: no published counts recorded; nothing to compare")
            return 0
        table, diffs = compare_published(data, info.published)
        print(f"\nloaded vs published counts ({info.published_source}):\n{table}")
        if diffs:
            print(f"\n{len(diffs)} difference(s) from the published counts:\n" + "\n".join(f"  {d}" for d in diffs))
            return 1
        print("\nevery loaded part matches the published counts")
        return 0
    if args.options:
        raise ConfigError(f"datasets: options {args.options} are only used with --check NAME ROOT")
    for name, info in DATASETS.items():
        print(f"{name}: {info.description}")
        for line in info.layout.strip("\n").splitlines():
            print(f"    {line}")
        print()
    return 0


def demo_config(output: str | Path, overrides: list[str] | tuple[str, ...] = (), camera_aware: bool = True):
    """The demo's config: Cluster Contrast on the synthetic set with an ImageNet EfficientNet-Lite0.

    Sized to finish in about 4 minutes on 2 CPU cores; see ``unreid demo --help``. With
    ``camera_aware`` (the default) it adds per-camera standardisation and CAP proxies
    (docs/methods/camera_aware.md), with the inter-camera loss from epoch 1 of 6. eps 0.45 suits the
    synthetic set's ImageNet features (at 0.6 DBSCAN merges it into ~12 clusters).
    """
    from unreid.config import load_config

    output = Path(output)
    base = [
        "name=demo",
        f"output_dir={output / 'run'}",
        "data.name=synthetic",
        f"data.root={output / 'data'}",
        "data.height=128", "data.width=64",
        "data.batch_size=64", "data.num_instances=4",
        "data.workers=0",
        "data.synthetic.num_ids=60", "data.synthetic.num_test_ids=30",
        "data.synthetic.num_cameras=4", "data.synthetic.images_per_id_cam=4",
        "model.backbone=efficientnet_lite0", "model.pretrained=true",
        "pseudo_labels.eps=0.45", "pseudo_labels.min_samples=4",
        "optim.epochs=6", "optim.iters=20", "optim.step_size=20",
        "eval.every=2", "eval.batch_size=128",
    ]
    if camera_aware:
        base += ["method.camera.neighbourhood=standardize", "method.camera.proxies=true",
                 "method.camera.inter_start_epoch=1"]
    return load_config(None, base + list(overrides))


def cmd_demo(args: argparse.Namespace) -> int:
    from unreid.engine import Trainer

    output = Path(args.output)
    if output.exists():  # never write into something the user has
        i = 2
        while Path(f"{output}-{i}").exists():
            i += 1
        output = Path(f"{output}-{i}")
    cfg = demo_config(output, args.overrides, camera_aware=not args.plain)
    t0 = time.time()
    trainer = Trainer(cfg)
    trainer.train()
    rows = [json.loads(line) for line in (trainer.output_dir / "metrics.jsonl").read_text().splitlines()]
    tests = [(r["epoch"], r["test"]) for r in rows if r.get("test")]
    kind = "plain Cluster Contrast" if args.plain else "camera-aware Cluster Contrast"
    print(f"\nunreid demo: {kind}, synthetic data, EfficientNet-Lite0 (ImageNet)")
    print(f"{'epoch':>12} | {'mAP':>6} | {'rank1':>6} | {'rank5':>6} | clusters | ARI (report only)")
    for epoch, m in tests:
        pl = next((r.get("pseudo_labels", {}) for r in rows if r["epoch"] == epoch), {})
        label = "before" if epoch < 0 else str(epoch)
        ari = pl.get("ari")
        print(f"{label:>12} | {m['mAP']:6.1f} | {m['rank1']:6.1f} | {m['rank5']:6.1f} | "
              f"{pl.get('num_clusters', '-')!s:>8} | {'-' if ari is None else f'{ari:.3f}'}")
    print(f"\nfinished in {(time.time() - t0) / 60:.1f} min; outputs in {trainer.output_dir} "
          "(train.log, metrics.jsonl, config.yaml, checkpoint_last.pth, model_best.pth)")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "extract": cmd_extract, "search": cmd_search,
            "export": cmd_export, "datasets": cmd_datasets, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unreid`` script; returns the exit status.

    Configuration and data errors are printed as one actionable line (exit status 2), not a traceback.
    """
    from unreid.config import ConfigError
    from unreid.engine.checkpoint import CheckpointError
    from unreid.search import InputError

    parser = build_parser()
    # key=value overrides may also come after the options (``eval CONFIG --checkpoint X key=value``),
    # which argparse alone does not accept for a positional list behind a sub-command
    args, rest = parser.parse_known_args(argv)
    if rest and hasattr(args, "overrides") and all("=" in t and not t.startswith("-") for t in rest):
        args.overrides = list(args.overrides or []) + rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, CheckpointError, InputError, FileNotFoundError, FileExistsError, KeyError,
            ImportError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        if _is_main_process():  # under torchrun every rank raises the same error: rank 0 prints it
            print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as err:
        from unreid.engine import TrainingStopped

        if isinstance(err, TrainingStopped):
            print(f"training stopped: {err}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The recommended camera-aware recipe's labelling step with and without its LOMO prior, at any N.

One labelling step of ``configs/camera_aware/cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml``
(per-camera standardisation, per-camera k-reciprocal Jaccard + DBSCAN, clusters matched across
cameras; k1 20, eps 0.5), built by ``unreid.pseudo_labels.pipeline.build_label_pipeline`` from that
config, in one of three forms:

* ``plain``: ``pseudo_labels.colour_weight=0`` (no prior);
* ``append``: the LOMO prior concatenated to the features every epoch (``prior_mode=append``, the
  form before issue 34);
* ``gram``: the prior's per-camera Gram blocks computed once (``prior_mode=gram``, the default;
  ``unreid.pseudo_labels.prior``).

The network features are synthetic (``benchmarks/pseudo_labels.py``'s ``make_features``: 2048-d,
identities of about 16 images, ``--cams`` cameras with their own offsets, each identity seen by
``min(cams, 3)`` of them, so that each camera holds a few images of a person, as the per-camera
clustering with ``min_samples`` 4 needs). The descriptors are
``lomo`` (LOMO of synthetic images drawn by the library's generator, ``unreid.data.synthetic``, one
per feature row with its identity and camera, 128 x 64; cached in ``--cache`` as ``.npy``, which the
store reads in chunks as it would read images) or ``random`` (unit rows of LOMO's 26,960
dimensions: the labelling's cost does not depend on their content; used where drawing and
describing 100,000 images would take ~30 min).

The pipeline is called ``--epochs`` times on the same features: the first call includes what is done
once (descriptors -> standardised store -> Gram blocks); the later calls are the per-epoch cost, split
into stages by timing the pipeline's own steps (transforms, k-NN, Jaccard, DBSCAN; the rest is the
cross-camera centroids and matching). Peak RSS: ``VmHWM`` after the first call and over the later
calls (reset between, as in ``benchmarks/pseudo_labels.py``). k-NN against the machine's float32
GEMM throughput (same process, same threads): ``sum_g 2 N_g^2 d`` multiply-adds (the per-camera
products) over the k-NN wall time.

    PYTHONPATH=. python benchmarks/label_prior.py --n 5300 --cams 2 --form gram --cache /tmp/lomo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pseudo_labels import Peak, gemm_gflops, make_features  # noqa: E402

CONFIG = "configs/camera_aware/cuhk03_detected_cpu_cbn_cap_clustering_lomo_online.yaml"
LOMO_DIM = 26960


def lomo_of_synthetic(ids: np.ndarray, cams: np.ndarray, path: Path, seed: int = 0, batch: int = 64) -> np.ndarray:
    """LOMO ``(N, 26960)`` of one synthetic 128 x 64 image per row (identity ``ids[i]`` in camera
    ``cams[i]``), written to the ``.npy`` file ``path`` (reused when it exists with that shape)."""
    from unreid.data import synthetic
    from unreid.pseudo_labels.lomo import lomo_descriptors

    n = len(ids)
    if path.exists():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (n, LOMO_DIM):
            return arr
        raise SystemExit(f"{path} holds {arr.shape}, not ({n}, {LOMO_DIM}); pass another --cache")
    rng = np.random.default_rng(seed)
    people = [synthetic._identity(rng) for _ in range(int(ids.max()) + 1)]
    cameras = [synthetic._camera(rng, c) for c in range(int(cams.max()) + 1)]
    bases = [synthetic._background_base(c, 128, 64) for c in cameras]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, LOMO_DIM))
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        imgs = np.stack([synthetic._draw(people[ids[i]], cameras[cams[i]], bases[cams[i]], rng)
                         for i in range(s, min(n, s + batch))])
        out[s:s + len(imgs)] = lomo_descriptors(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()).numpy()
    out.flush()
    del out
    os.replace(tmp, path)
    print(f"LOMO of {n} synthetic images: {time.perf_counter() - t0:.1f} s "
          f"({(time.perf_counter() - t0) / n * 1e3:.1f} ms per image)", flush=True)
    return np.load(path, mmap_mode="r")


def chunks_of(path: Path, rows: int = 1024):
    """Row chunks of a 2-D float32 ``.npy`` read with plain file reads (an ``mmap`` would count the
    file's pages in this process's resident memory, which the training run, describing images, has not)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(fh)
        for s in range(0, shape[0], rows):
            m = min(rows, shape[0] - s)
            yield torch.from_numpy(np.fromfile(fh, dtype=np.float32, count=m * shape[1]).reshape(m, shape[1]))


def random_chunks(n: int, seed: int, rows: int = 1024):
    g = torch.Generator().manual_seed(seed)
    for s in range(0, n, rows):
        yield torch.nn.functional.normalize(torch.randn(min(rows, n - s), LOMO_DIM, generator=g).abs(), dim=1)


class Timer:
    """Accumulates the wall time of wrapped calls by name."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def wrap(self, name, fn):
        def inner(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0
        return inner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5300)
    p.add_argument("--cams", type=int, default=2)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--form", choices=["plain", "append", "gram"], default="gram")
    p.add_argument("--descriptors", choices=["lomo", "random"], default="lomo")
    p.add_argument("--store", choices=["auto", "memory", "disk"], default="auto")
    p.add_argument("--cache", default="bench_cache", help="folder for the synthetic LOMO .npy and the store file")
    p.add_argument("--epochs", type=int, default=3, help="labelling calls (the first includes the once-only work)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--merge-check", default=None, choices=["auto", "none", "own_group"],
                   help="pseudo_labels.merge_check (default: the config's, auto)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from unreid.config import load_config
    from unreid.pseudo_labels.pipeline import build_label_pipeline

    feats, ids, cams = make_features(args.n, args.dim, seed=args.seed, cams=args.cams, views=min(args.cams, 3))
    cache = Path(args.cache)
    overrides = [f"pseudo_labels.prior_store={args.store}"]
    if args.merge_check is not None:
        overrides.append(f"pseudo_labels.merge_check={args.merge_check}")
    descriptors = None
    if args.form == "plain":
        overrides.append("pseudo_labels.colour_weight=0")
    else:
        overrides.append(f"pseudo_labels.prior_mode={args.form}")
        if args.descriptors == "lomo":
            path = cache / f"lomo_n{args.n}_c{args.cams}_v{min(args.cams, 3)}_s{args.seed}.npy"
            lomo_of_synthetic(ids, cams, path, args.seed)
            descriptors = lambda: chunks_of(path)  # noqa: E731
        else:
            descriptors = lambda: random_chunks(args.n, args.seed)  # noqa: E731
    cfg = load_config(CONFIG, overrides)
    gemm = max(gemm_gflops(args.dim, sizes=(1024, 2048)).values())
    peak = Peak()
    base_rss = peak.current()
    pipe = build_label_pipeline(cfg, cams, descriptors=descriptors, store_dir=cache)
    timer = Timer()
    lab = pipe.labeller
    lab.neighbours = timer.wrap("knn", lab.neighbours)
    lab.jaccard_graph = timer.wrap("jaccard", lab.jaccard_graph)
    lab.dbscan = timer.wrap("dbscan", lab.dbscan)
    prior_step = pipe.transforms[-1]
    pipe.transforms = [timer.wrap("transforms", t) for t in pipe.transforms]
    gram_once = 0.0
    if args.form == "gram":  # the store's Gram blocks are built on first use inside the k-NN's caller
        from unreid.pseudo_labels import prior as prior_mod
        prior_mod.DescriptorStore.gram = timer.wrap("gram", prior_mod.DescriptorStore.gram)
        prior_mod.DescriptorStore.full_gram = timer.wrap("gram", prior_mod.DescriptorStore.full_gram)
    calls = []
    for epoch in range(args.epochs):
        timer.t.clear()
        peak.start()
        t0 = time.perf_counter()
        pl = pipe(feats)
        total = time.perf_counter() - t0
        stages = dict(timer.t)
        if epoch == 0:
            gram_once = stages.get("gram", 0.0)
        rest = total - sum(v for k, v in stages.items() if k != "gram")
        keep = pl.labels >= 0  # the synthetic identities, for the report only (never used to label)
        quality = {"outliers": float(1.0 - keep.mean()),
                   "ari": float(adjusted_rand_score(ids[keep], pl.labels[keep])) if keep.any() else 0.0,
                   "matched_pairs": pl.report.get("matched_pairs"), "matches_rejected": pl.report.get("matches_rejected")}
        calls.append({"total_s": total, **{k + "_s": v for k, v in stages.items()}, "merge_rest_s": rest,
                      "peak_rss_gib": peak.peak(), "clusters": pl.num_clusters, **quality})
        print(f"call {epoch}: {total:.2f} s " + " ".join(f"{k} {v:.2f}" for k, v in stages.items())
              + f" rest {rest:.2f}; peak RSS {peak.peak():.2f} GiB; {pl.num_clusters} clusters, "
              f"{quality['outliers']:.1%} outliers, ARI vs the synthetic identities {quality['ari']:.3f}, matches "
              f"merged {quality['matched_pairs']} / rejected {quality['matches_rejected']}", flush=True)
    sizes = np.bincount(cams)
    flops = float(sum(2.0 * int(s) ** 2 * args.dim for s in sizes))
    later = calls[1:] or calls
    knn_s = float(np.mean([c["knn_s"] for c in later]))
    store = {}
    if args.form == "gram":
        st = prior_step.store
        store = {"store_gb": st.shape[0] * st.shape[1] * 4 / 1e9, "store_on_disk": st.on_disk,
                 "gram_gb": st.gram_bytes() / 1e9,
                 "full_gram_gb": 4 * st.shape[0] ** 2 / 1e9 if st.uses_full_gram else 0.0}
    out = {"n": args.n, "cams": args.cams, "form": args.form, "descriptors": args.descriptors, "dim": args.dim,
           "threads": args.threads, "gemm_gflops": gemm, "baseline_rss_gib": base_rss, "calls": calls,
           "per_epoch_s": float(np.mean([c["total_s"] for c in later])), "knn_s": knn_s,
           "knn_gemm_fraction": flops / knn_s / (gemm * 1e9), "first_call_s": calls[0]["total_s"],
           "gram_once_s": gram_once, "peak_rss_first_gib": calls[0]["peak_rss_gib"],
           "peak_rss_epoch_gib": max(c["peak_rss_gib"] for c in later), **store}
    print(json.dumps({k: v for k, v in out.items() if k != "calls"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

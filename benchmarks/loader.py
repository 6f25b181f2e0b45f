"""Loader vs model throughput: is the model kept busy?

Prints images/s of (a) the training loader alone - camera-aware sampler, decoding (or the in-memory
uint8 cache), augmentation and collation - with the cache and without it (decoding from disk), and
(b) model forward + backward + Adam step alone on random tensors of the same size. When (a) is well
above (b), the loader is not the bottleneck.

    python benchmarks/loader.py --data-root ../shared/data/cuhk03-detected --height 128 --width 64
    python benchmarks/loader.py                      # the synthetic set (generated in a temporary folder)

``--cache auto`` measures the cached loader only when the decoded set fits in ``--cache-max-mb`` (as
the trainer decides), ``on`` always, ``off`` never; the disk loader is always measured. The sampler
groups images by their true identity here (a benchmark: the grouping only shapes the access pattern);
unlabeled sets (``folder``) are grouped by consecutive indices.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def loader_rate(samples, cfg, cache, iters: int, seed: int = 0) -> float:
    """Images/s of ``iters`` training batches (after one warm-up batch that starts the workers)."""
    from unreid.data.loader import IterLoader, build_train_loader
    from unreid.data.samplers import build_sampler

    labels = np.array([s.pid for s in samples])
    if (labels < 0).any():
        labels = np.arange(len(samples)) // cfg.num_instances
    cams = np.array([s.camid for s in samples])
    sampler = build_sampler(labels, cams, cfg.batch_size, cfg.num_instances, "camera_aware", seed=seed)
    it = iter(IterLoader(build_train_loader(samples, sampler, cfg, cache), iters + 1))
    next(it)
    t0 = time.perf_counter()
    n = sum(int(b["img"].shape[0]) for b in it)
    return n / (time.perf_counter() - t0)


def model_rate(backbone: str, batch_size: int, size: tuple[int, int], iters: int, device: torch.device,
               amp: bool) -> float | None:
    """Images/s of forward + backward + Adam step on random input; ``None`` without unreid.models."""
    try:
        from unreid.config import ModelConfig
        from unreid.models import build_model
    except ImportError as err:
        print(f"model part skipped: unreid.models is not importable yet ({err})")
        return None
    model = build_model(ModelConfig(backbone=backbone, pretrained=False)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, *size, device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp, dtype=torch.float16):
            loss = model(x).float().pow(2).mean()
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up (cudnn autotune, allocator)
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iters * batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    from unreid.config import DataConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None, help="data set folder; default: a generated synthetic set")
    p.add_argument("--dataset", default="market1501", help="registry name (see `unreid datasets`)")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-instances", type=int, default=4)
    p.add_argument("--iters", type=int, default=20, help="batches timed per measurement")
    p.add_argument("--workers", type=int, default=DataConfig().workers, help="DataLoader worker processes")
    p.add_argument("--cache", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--cache-max-mb", type=int, default=DataConfig().cache_max_mb)
    p.add_argument("--cache-threads", type=int, default=os.cpu_count() or 1, help="cache decoding threads")
    p.add_argument("--device", default="auto", help="model part: auto | cpu | cuda")
    p.add_argument("--amp", action="store_true", help="model part: float16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from unreid.data.datasets import build_dataset
    from unreid.data.loader import ImageCache, should_cache

    size = (args.height, args.width)
    if args.data_root:
        data = build_dataset(args.dataset, args.data_root)
    else:
        data = build_dataset("synthetic", tempfile.mkdtemp(prefix="unreid-bench-"), num_ids=100,
                             num_test_ids=10, num_cameras=4, images_per_id_cam=6, height=args.height,
                             width=args.width, seed=0)
    samples = data.train
    cfg = DataConfig(height=args.height, width=args.width, batch_size=args.batch_size,
                     num_instances=args.num_instances, workers=args.workers)
    print(f"{data.name}: {len(samples)} training images -> {args.height}x{args.width}, "
          f"batch {args.batch_size}, {args.workers} loader workers, {args.threads} torch threads, "
          f"{os.cpu_count()} CPUs")

    fits = should_cache(len(samples), size, args.cache_max_mb)
    use_cache = args.cache == "on" or (args.cache == "auto" and fits)
    if use_cache:
        t0 = time.perf_counter()
        cache = ImageCache([s.path for s in samples], size, workers=args.cache_threads)
        dt = time.perf_counter() - t0
        print(f"cache: decoded {len(cache)} images once in {dt:.1f} s ({len(cache) / dt:.0f} images/s, "
              f"{args.cache_threads} threads), {cache.data.numel() / 2**20:.0f} MiB uint8, "
              f"{cache.num_failed} unreadable")
        print(f"loader alone, cached:    {loader_rate(samples, cfg, cache, args.iters):8.0f} images/s")
    else:
        print(f"loader alone, cached:    skipped (--cache {args.cache}; "
              f"{len(samples) * 3 * size[0] * size[1] / 2**20:.0f} MiB decoded, "
              f"--cache-max-mb {args.cache_max_mb})")
    print(f"loader alone, from disk: {loader_rate(samples, cfg, None, args.iters):8.0f} images/s")

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rate = model_rate(args.backbone, args.batch_size, size, max(3, args.iters // 2), device,
                      args.amp and device.type == "cuda")
    if rate is not None:
        print(f"model fwd+bwd+step alone ({args.backbone}, {device.type}{', amp' if args.amp else ''}): "
              f"{rate:8.0f} images/s")


if __name__ == "__main__":
    main()

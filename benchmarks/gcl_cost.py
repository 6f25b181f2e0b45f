"""Step time and peak memory of GCL's stage 2 (generator + discriminator, encoder frozen) and stage 3 (joint)
(issue 32; docs/BENCHMARKS.md "GCL").

Each (backbone, stage) is measured in a fresh process: the method (:class:`unreid.methods.gcl.GCL`) with its three
modules and optimisers, on random images of the given size and random structure views, ``--steps`` timed
steps after ``--warmup`` untimed ones (one step = the forward pass, the discriminator's step, the generator's
step, and in stage 3 the encoder's and the memory update). Stage 3 uses an instance memory of ``--memory`` rows
(random, L2-normalised) with random pseudo-labels of 4-image clusters. Peak memory = the process's maximum
resident set size (``resource.getrusage``), which includes the Python interpreter and torch (~0.4 GB).

    python benchmarks/gcl_cost.py --backbone resnet50 --height 256 --width 128 --batch 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(backbone: str, stage: str, height: int, width: int, batch: int, steps: int, warmup: int, memory: int,
            threads: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from unreid.config import load_config
    from unreid.data.datasets.base import Sample
    from unreid.engine.optim import Optimizers
    from unreid.methods.gcl import GCL
    from unreid.models import build_model
    from unreid.pseudo_labels.base import PseudoLabels

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_config("configs/gcl/market1501.yaml", [f"model.backbone={backbone}", "model.pretrained=false",
                                                      f"data.height={height}", f"data.width={width}",
                                                      f"data.batch_size={batch}", "method.gcl.image_every=0",
                                                      "device=cpu"])
    model = build_model(cfg.model)
    train = [Sample(f"img{i}.jpg", -1, i % 2) for i in range(memory)]
    method = GCL(cfg, model, train)
    optim = Optimizers(method.param_groups(), cfg.optim)
    st = {s.name: s for s in method.stages()}[stage]
    method.stage = st
    mods = method.modules()
    for name, m in mods.items():
        trains = st.train is None or name in st.train
        m.train(trains)
        for p in m.parameters():
            p.requires_grad_(trains)
    if stage == "joint":
        labels = np.arange(memory) // 4
        feats = F.normalize(torch.randn(memory, model.feature_dim), dim=1)
        lab = PseudoLabels(labels, int(labels.max()) + 1)
        method.set_labels(lab)
        method.build_memories(0, {"global": feats}, lab)

    def batch_at(i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"img": torch.randn(batch, 3, height, width, generator=g),
                "mesh": torch.rand(batch, 1, height, width, generator=g) * 2 - 1,
                "mesh_nv": torch.rand(batch, 1, height, width, generator=g) * 2 - 1,
                "index": torch.randint(memory, (batch,), generator=g), "camid": torch.zeros(batch, dtype=torch.long)}

    times = []
    for i in range(warmup + steps):
        b = batch_at(i)
        t0 = time.perf_counter()
        out = method.step(b, 0)
        method.optimize_step(out, optim, st)
        with torch.no_grad():
            method.after_step(b, out.outputs)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"backbone": backbone, "stage": stage, "size": f"{height}x{width}", "batch": batch,
            "step_s_mean": round(float(np.mean(times)), 3), "step_s_std": round(float(np.std(times)), 3),
            "steps": steps, "peak_rss_gb": round(peak_gb, 2), "threads": threads, "memory_rows": memory}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", nargs="+", default=["resnet50", "efficientnet_lite0"])
    ap.add_argument("--stage", nargs="+", default=["generator", "joint"])
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--memory", type=int, default=12936, help="instance-memory rows in stage 3 (Market: 12,936)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        bb, st = a.one.split(":")
        print(json.dumps(measure(bb, st, a.height, a.width, a.batch, a.steps, a.warmup, a.memory, a.threads)))
        return
    print("| backbone | stage | input | batch | step s (mean ± std) | peak RSS GB |")
    print("|---|---|---|---|---|---|")
    for bb in a.backbone:
        for st in a.stage:
            cmd = [sys.executable, __file__, "--one", f"{bb}:{st}", "--height", str(a.height), "--width", str(a.width),
                   "--batch", str(a.batch), "--steps", str(a.steps), "--warmup", str(a.warmup), "--memory",
                   str(a.memory), "--threads", str(a.threads)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            print(f"| {bb} | {st} | {r['size']} | {r['batch']} | {r['step_s_mean']:.2f} ± {r['step_s_std']:.2f} | "
                  f"{r['peak_rss_gb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()

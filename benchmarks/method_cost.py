"""Wall time of one labelling phase and of training steps, method against method, in one process.

Each method is built by the trainer from its config (the same data, model and budget), then timed:
``refresh`` (feature extraction of the training set + pseudo-labels + memories) and ``--steps`` training
steps; methods alternate for ``--repeats`` rounds so that a change in machine load hits all of them alike.
Usage (the numbers in docs/BENCHMARKS.md, "Method cost"; run on a quiet machine)::

    OMP_NUM_THREADS=2 python benchmarks/method_cost.py \
        cc=configs/cluster_contrast/vehicle_2cam_cpu.yaml tcl=configs/tcl/vehicle_2cam_cpu.yaml \
        --steps 8 --repeats 2

Prints one Markdown table: per method, mean ± std over rounds of the labelling time (s), the time per step
(s) and the projected epoch time (labelling + ``optim.iters`` steps; evaluation excluded).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _trainer(config: str, out: Path, steps: int, overrides: list[str]):
    from unreid.config import load_config
    from unreid.engine import Trainer

    cfg = load_config(config, [f"output_dir={out}", f"optim.iters={steps}", "optim.epochs=1", "eval.every=1000",
                               *overrides])
    return Trainer(cfg), load_config(config, overrides).optim.iters


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="NAME=CONFIG")
    p.add_argument("--steps", type=int, default=8, help="training steps timed per round")
    p.add_argument("--repeats", type=int, default=2, help="rounds (methods alternate within a round)")
    p.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every config")
    args = p.parse_args(argv)
    runs = [r.split("=", 1) for r in args.runs]
    times: dict[str, dict[str, list[float]]] = {n: {"label": [], "step": []} for n, _ in runs}
    iters: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, config in runs:
                trainer, iters[name] = _trainer(config, Path(tmp) / f"{name}-{r}", args.steps, args.set)
                trainer.enter_stage(0, fresh=True)
                t0 = time.perf_counter()
                trainer.refresh(0)
                t1 = time.perf_counter()
                trainer.train_epoch(0)
                t2 = time.perf_counter()
                times[name]["label"].append(t1 - t0)
                times[name]["step"].append((t2 - t1) / args.steps)
                print(f"round {r} {name}: labelling {t1 - t0:.1f} s, {(t2 - t1) / args.steps:.2f} s/step", flush=True)

    def ms(xs: list[float], nd: int = 1) -> str:
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return f"{statistics.mean(xs):.{nd}f} ± {sd:.{nd}f}"

    print("\n| method | labelling s | s / step | epoch s (labelling + iters x step) |")
    print("|---|---|---|---|")
    for name, _ in runs:
        t = times[name]
        epoch = [a + iters[name] * b for a, b in zip(t["label"], t["step"])]
        print(f"| {name} | {ms(t['label'])} | {ms(t['step'], 2)} | {ms(epoch)} ({iters[name]} iters) |")


if __name__ == "__main__":
    main()

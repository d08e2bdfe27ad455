"""AdamW's step: PyTorch's default (one small kernel per tensor on a CPU) against the fused
kernel that ``training.make_adamw`` picks, measured in the same run.

Each variant trains its own copy of bench_training's bare model (same seed) on one in-memory
batch, in our loop's memory layout and precision (``amp="auto"``); the rounds alternate between the variants
and the best round of each is kept (the fairest comparison on a shared machine). Reported:
milliseconds of forward + backward, of the optimizer step, and the whole step's ratio.

Usage::

    python benchmarks/bench_optimizer.py                       # resnet10t, 32 px, batch 64
    python benchmarks/bench_optimizer.py --threads 1 --json benchmarks/results/optimizer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from galaxy_helpers.core import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import bare_parts  # noqa: E402

VARIANTS = ("default", "fused")


def make_step(variant, architecture, image_size, batch_size):
    """``(step, fused)``: ``step()`` trains bench_training's bare model one step on its batch
    and returns (forward + backward seconds, optimizer seconds); ``fused``, whether the
    optimizer uses the fused kernel."""
    make = None if variant == "fused" else torch.optim.AdamW  # None: training.make_adamw
    forward_backward, opt, x = bare_parts(architecture, image_size, batch_size, "cpu", make)

    def step():
        t0 = time.perf_counter()
        forward_backward(x)
        t1 = time.perf_counter()
        opt.step()
        return t1 - t0, time.perf_counter() - t1

    return step, bool(opt.defaults.get("fused"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default="resnet10t")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round (after 5)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = {v: make_step(v, args.architecture, args.image_size, args.batch_size) for v in VARIANTS}
    best = {v: None for v in VARIANTS}
    for _ in range(args.rounds):
        for v in VARIANTS:
            step = steps[v][0]
            for _ in range(5):  # warm-up
                step()
            times = [step() for _ in range(args.steps)]
            fb = sum(t[0] for t in times) / len(times)
            op = sum(t[1] for t in times) / len(times)
            if best[v] is None or fb + op < sum(best[v]):
                best[v] = (fb, op)
    from galaxy_helpers.training import numerics

    result = {
        "config": vars(args) | {"fused_kernel_used": steps["fused"][1]},
        "numerics": numerics("cpu"),
        "ms": {
            v: {"forward_backward": round(1e3 * fb, 2), "optimizer": round(1e3 * op, 2)}
            for v, (fb, op) in best.items()
        },
    }
    whole = {v: sum(best[v]) for v in VARIANTS}
    result["fused_step_over_default"] = round(whole["fused"] / whole["default"], 3)
    result["fused_optimizer_over_default"] = round(best["fused"][1] / best["default"][1], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""AdamW's step: PyTorch's default (one small kernel per tensor on a CPU) against the fused
kernel that ``training.make_adamw`` picks, measured in the same run.

Each variant trains its own copy of the same network (same seed) on one in-memory batch, in our
loop's memory layout and precision (``amp="auto"``); the rounds alternate between the variants
and the best round of each is kept (the fairest comparison on a shared machine). Reported:
milliseconds of forward + backward, of the optimizer step, and the whole step's ratio.

Usage::

    python benchmarks/bench_optimizer.py                       # resnet10t, 32 px, batch 64
    python benchmarks/bench_optimizer.py --threads 1 --json benchmarks/results/optimizer.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from galaxy_helpers.core import write_json

VARIANTS = ("default", "fused")


def make_step(variant, architecture, image_size, batch_size):
    """``step(x) -> (forward+backward s, optimizer s)`` of a fresh GalaxyModel, and its batch."""
    from galaxy_helpers.models import GalaxyModel
    from galaxy_helpers.training import amp_settings, make_adamw

    amp_on, amp_dtype = amp_settings("auto", torch.device("cpu"))
    torch.manual_seed(0)
    model = GalaxyModel(architecture).to(memory_format=torch.channels_last).train()
    if variant == "fused":
        opt = make_adamw(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # PyTorch's default on a CPU
    x = torch.randn(batch_size, 3, image_size, image_size).contiguous(
        memory_format=torch.channels_last
    )

    def step():
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp_dtype, enabled=amp_on):
            out = model(x)
        loss = out.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        return t1 - t0, time.perf_counter() - t1

    return step, opt.defaults.get("fused")


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

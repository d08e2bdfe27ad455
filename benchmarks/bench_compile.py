"""torch.compile against eager PyTorch for one training step of the quick profile, same run.

Issue 17 asks whether ``torch.compile`` pays on a 2-core CPU. The step is the bare loop of
``bench_training.py`` (forward + backward + AdamW on one in-memory batch, channels-last, the
mixed precision ``amp="auto"`` picks on this machine) at the quick profile's image size and
batch. Measured in one process, alternately:

- eager images/s (best of ``--rounds``);
- compiled: the seconds of the first compiled step (tracing + Inductor's C++ build, with an
  empty Inductor cache: a fresh ``TORCHINDUCTOR_CACHE_DIR``), the first step again after
  ``torch._dynamo.reset()`` (the warm cache a second run on the same machine would find), and
  steady images/s (best of ``--rounds``);
- what that means for notebook 02: seconds for ``--course-steps`` optimizer steps (the quick
  profile's 7 epochs x 57 steps) eager, and compiled from a cold and from a warm cache.

A compile that fails (no C++ compiler, an unsupported build) is reported, not raised: that is
the fallback the course would need.

Usage::

    python benchmarks/bench_compile.py --json benchmarks/results/compile_<date>.json
    python benchmarks/bench_compile.py --threads 1 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# Before torch is imported: Inductor reads its cache folder once.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor_cold_"))

import torch  # noqa: E402

from galaxy_helpers.core import write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import bare_step  # noqa: E402


def _rate(step, x, steps) -> float:
    step(x)  # one untimed step
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x)
    return steps * len(x) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default="resnet10t")
    p.add_argument("--image-size", type=int, default=48, help="the quick profile's 48 px")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--course-steps", type=int, default=7 * 57)
    p.add_argument("--mode", default=None, help="torch.compile mode (default: its default)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from galaxy_helpers.training import amp_precision

    eager, x = bare_step(args.architecture, args.image_size, args.batch_size, "cpu")
    compiled, error, first_cold, first_warm = None, None, None, None
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(eager, mode=args.mode)
        compiled(x)
        first_cold = time.perf_counter() - t0
        torch._dynamo.reset()
        compiled = torch.compile(eager, mode=args.mode)
        t0 = time.perf_counter()
        compiled(x)
        first_warm = time.perf_counter() - t0
    except Exception as err:  # the fallback the course would take
        error = f"{type(err).__name__}: {str(err)[:300]}"
        compiled = None
    rates = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        rates["eager"].append(_rate(eager, x, args.steps))
        if compiled is not None:
            rates["compiled"].append(_rate(compiled, x, args.steps))
        print(
            f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} img/s" for k, v in rates.items() if v),
            flush=True,
        )
    eager_rate = max(rates["eager"])
    result = {
        "architecture": args.architecture,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": amp_precision("auto", "cpu"),
        "mode": args.mode or "default",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "eager_images_per_s": round(eager_rate, 1),
        "compile_error": error,
    }
    step_s = args.batch_size / eager_rate
    result["course_steps"] = args.course_steps
    result["course_eager_s"] = round(args.course_steps * step_s, 1)
    if compiled is not None:
        rate = max(rates["compiled"])
        c_step_s = args.batch_size / rate
        result.update(
            compiled_images_per_s=round(rate, 1),
            speedup=round(rate / eager_rate, 3),
            first_step_cold_cache_s=round(first_cold, 1),
            first_step_warm_cache_s=round(first_warm, 1),
            course_compiled_cold_s=round(first_cold + (args.course_steps - 1) * c_step_s, 1),
            course_compiled_warm_s=round(first_warm + (args.course_steps - 1) * c_step_s, 1),
        )
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

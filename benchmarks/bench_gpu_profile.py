"""Full profile on one GPU: throughput and memory of our training loop, then a short real run.

This is what the README's GPU table reports. In one process:

1. a synthetic sky of ``--n-galaxies`` at ``--image-size`` (default 20,000 galaxies at 224 px,
   sky seed 1), rendered on all CPU cores (or read from the cache);
2. for each of ``--architectures``: images/s of the bare loop (forward, backward and AdamW on
   one batch already on the GPU, same mixed precision) and of ``training.train`` over the same
   number of steps (``bench_training.py``'s two loops, alternated ``--rounds`` times, best kept),
   each with its peak GPU memory;
3. a full-profile training run of the first architecture (``augment=True``, the paper's
   rotations, zoom and shifts; bfloat16 mixed precision) with as many epochs as fit in about
   ``--train-seconds`` at the measured speed, evaluated on the test split (vote-fraction error
   against the mean baseline, with test-time augmentation, and confident accuracy). Its
   checkpoint, history, loss curve and a JSON of every number go to ``--out``.

A stage that fails prints its traceback and the script goes on to the next, so one run on a
borrowed GPU returns everything that worked.

Usage::

    python benchmarks/bench_gpu_profile.py --out runs/gpu_profile        # on a GPU machine
    # the same code on a CPU, tiny, as a smoke test:
    python benchmarks/bench_gpu_profile.py --device cpu --image-size 64 --n-galaxies 800 \\
        --architectures resnet10t --batch-size 32 --steps 3 --rounds 1 --train-seconds 10 \\
        --out /tmp/gpu_profile_smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import bare_loop, our_loop  # noqa: E402


def _gpu_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"device": str(device), "cpu_count": os.cpu_count()}
    props = torch.cuda.get_device_properties(device)
    return {
        "device": torch.cuda.get_device_name(device),
        "gpu_memory_gb": round(props.total_memory / 1e9, 1),
        "multiprocessors": props.multi_processor_count,
        "bf16": torch.cuda.is_bf16_supported(),
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
    }


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device):
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 2)


def _stage(name, results, fn):
    t0 = time.perf_counter()
    print(f"\n=== {name} ===", flush=True)
    try:
        fn()
    except Exception:  # noqa: BLE001 - report and go on: one borrowed-GPU run returns all it can
        traceback.print_exc()
        results.setdefault("failed_stages", []).append(name)
    results.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    _write(results)


def _write(results):
    out = Path(results["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_profile.json").write_text(json.dumps(results, indent=2, default=str))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architectures", nargs="+", default=["convnext_nano", "efficientnet_b0"])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--n-galaxies", type=int, default=20000)
    p.add_argument("--steps", type=int, default=30, help="timed steps per loop and round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (kernel choice)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--train-seconds", type=float, default=150.0, help="0: no training run")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=None, help="sky rendering processes")
    p.add_argument("--out", default="runs/gpu_profile")
    args = p.parse_args(argv)

    from galaxy_helpers import evaluation, synthetic, training
    from galaxy_helpers.course import device as best_device
    from galaxy_helpers.models import save_checkpoint

    device = torch.device(args.device or best_device())
    results = {
        "out": args.out,
        "args": vars(args),
        "machine": {**_gpu_info(device), "python": platform.python_version()},
        "library": {"torch": torch.__version__},
    }
    try:
        import timm

        results["library"]["timm"] = timm.__version__
    except ImportError:
        pass
    print(json.dumps(results["machine"]), flush=True)
    state = {}

    def make_sky():
        t0 = time.perf_counter()
        workers = args.workers or max(1, (os.cpu_count() or 2) - 1)
        state["sky"] = synthetic.make_sky(
            n_galaxies=args.n_galaxies, image_size=args.image_size, seed=1, workers=workers
        )
        results["sky"] = {
            "n_galaxies": args.n_galaxies,
            "image_size": args.image_size,
            "workers": workers,
            "seconds": round(time.perf_counter() - t0, 1),
        }

    _stage("synthetic sky", results, make_sky)
    if "sky" not in state:
        return 1
    sky = state["sky"]

    # Enough rows for warmup + steps batches of training galaxies (about 80% are "train").
    n_bench = min(len(sky), math.ceil((args.warmup + args.steps) * args.batch_size / 0.75))
    bench_sky = sky.iloc[:n_bench]
    results["throughput"] = {}
    for arch in args.architectures:

        def bench(arch=arch):
            bare, ours, bare_mem, ours_mem = [], [], [], []
            for r in range(args.rounds):
                _reset_peak(device)
                bare.append(
                    bare_loop(
                        arch, args.image_size, args.batch_size, args.steps, device, args.warmup
                    )
                )
                bare_mem.append(_peak_gb(device))
                _reset_peak(device)
                ours.append(
                    our_loop(
                        bench_sky,
                        arch,
                        args.image_size,
                        args.batch_size,
                        args.steps,
                        device,
                        args.warmup,
                    )
                )
                ours_mem.append(_peak_gb(device))
                print(
                    f"{arch} round {r + 1}: bare {bare[-1]:.0f} img/s, ours {ours[-1]:.0f} img/s",
                    flush=True,
                )
            results["throughput"][arch] = {
                "batch_size": args.batch_size,
                "bare_images_per_s": round(max(bare), 1),
                "ours_images_per_s": round(max(ours), 1),
                "ratio": round(max(ours) / max(bare), 3),
                "bare_peak_gpu_memory_gb": bare_mem[-1],
                # includes the preloaded uint8 images of the benchmark's galaxies
                "ours_peak_gpu_memory_gb": ours_mem[-1],
            }

        _stage(f"throughput {arch}", results, bench)

    def full_run():
        arch = args.architectures[0]
        n_train = int((sky["split"] == "train").sum())
        ips = results["throughput"].get(arch, {}).get("ours_images_per_s")
        # Epochs that fit the time budget (validation adds about 15%).
        epochs = args.max_epochs
        if ips:
            epochs = int(args.train_seconds * ips / (1.15 * n_train))
        epochs = max(1, min(args.max_epochs, epochs))
        cfg = training.TrainConfig(
            architecture=arch,
            image_size=args.image_size,
            batch_size=args.batch_size,
            epochs=epochs,
            lr=1e-3,
            augment=True,
            patience=epochs,
            device=str(device),
            progress=False,
        )
        t0 = time.perf_counter()
        model, history = training.train(sky, cfg, data_description={"synthetic_sky_seed": 1})
        seconds = time.perf_counter() - t0
        out = Path(args.out)
        save_checkpoint(model, out / f"full_{arch}", model.metadata, half=True)
        (out / "history.json").write_text(json.dumps(history.to_dict(), indent=2))
        fig = training.plot_history(history)
        fig.savefig(out / "loss_curve.png", dpi=100, bbox_inches="tight")
        metrics = model.metadata["metrics"]
        results["full_run"] = {
            "architecture": arch,
            "epochs": epochs,
            "n_train": n_train,
            "seconds": round(seconds, 1),
            "images_per_s_median_epoch": metrics["images_per_s"],
            "images_per_s_per_epoch": history.images_per_s,
            "peak_gpu_memory_gb": metrics.get("gpu_peak_memory_gb"),
            "preloaded_images_gb": round(len(sky) * args.image_size**2 * 3 / 1e9, 2),
            "best_val_loss": round(history.best_val_loss, 3),
            "val_loss": [round(v, 3) for v in history.val_loss],
        }
        _write(results)
        model = model.to(device)
        train_rows, test_rows = sky[sky["split"] == "train"], sky[sky["split"] == "test"]
        for name, tta in (("one_view", False), ("tta", True)):
            t1 = time.perf_counter()
            ev = evaluation.evaluate(
                model, test_rows, baseline_catalogue=train_rows, tta=tta, progress=False
            )
            results["full_run"][f"eval_{name}"] = {
                **ev.summary(),
                "seconds": round(time.perf_counter() - t1, 1),
            }

    if args.train_seconds > 0:
        _stage("full-profile training", results, full_run)
    print("\n" + json.dumps({k: v for k, v in results.items() if k != "args"}, indent=2))
    return 1 if results.get("failed_stages") else 0


if __name__ == "__main__":
    raise SystemExit(main())

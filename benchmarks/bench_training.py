"""Training throughput: our loop vs a bare PyTorch loop, measured in the same run.

The bare loop is the floor of what any training loop can cost: the same model, batch size and
AdamW step on one batch of random float tensors already in memory (no data, no augmentation,
no Dirichlet-Multinomial loss -- a plain mean of the outputs stands in for it). Our loop is
``training.train`` on the synthetic sky, counted over its training steps only (images are
read once into memory before the loop; validation is excluded): uint8 -> float conversion,
normalisation, batched flips/rotations/zoom, the float64 Dirichlet-Multinomial loss and the
progress bookkeeping. Target: ours >= 80% of bare.

The two are run alternately (``--rounds``) and the best round of each is kept, which is the
fairest comparison on a shared machine whose load changes from minute to minute.

Usage::

    python benchmarks/bench_training.py                      # resnet10t, 64 px, batch 32
    python benchmarks/bench_training.py --steps 40 --rounds 3 --threads 1
    python benchmarks/bench_training.py --architecture convnext_nano --image-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from galaxy_helpers.core import write_json


def bare_parts(architecture, image_size, batch_size, device, make_optimizer=None):
    """``(forward_backward, optimizer, x)`` of a fresh GalaxyModel: ``forward_backward(x)``
    runs forward + backward (its loss returned), ``optimizer`` is ``make_optimizer(params,
    lr=1e-3)`` (default ``training.make_adamw``, our loop's), ``x`` one in-memory random
    batch, both in our loop's memory layout (``TrainConfig.channels_last``) and mixed precision
    (``training.amp_settings`` of ``amp="auto"``: bfloat16 autocast on a GPU and on a CPU with
    native bfloat16, none on other CPUs)."""
    from galaxy_helpers.models import GalaxyModel
    from galaxy_helpers.training import TrainConfig, amp_settings, make_adamw

    device = torch.device(device)
    amp_on, amp_dtype = amp_settings(TrainConfig().amp, device)
    torch.manual_seed(0)
    model = GalaxyModel(architecture).to(device).to(memory_format=torch.channels_last).train()
    opt = (make_optimizer or make_adamw)(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)

    def forward_backward(x):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_on):
            out = model(x)
        loss = out.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss.detach()

    return forward_backward, opt, x.contiguous(memory_format=torch.channels_last)


def bare_step(architecture, image_size, batch_size, device):
    """``(step, x)``: ``step(x)`` runs forward + backward + AdamW on :func:`bare_parts`' model
    (its loss returned), so that only the loop around the step differs from
    ``training.train``."""
    forward_backward, opt, x = bare_parts(architecture, image_size, batch_size, device)

    def step(x):
        loss = forward_backward(x)
        opt.step()
        return loss

    return step, x


def bare_loop(architecture, image_size, batch_size, steps, device, warmup=2) -> float:
    """Images/s of :func:`bare_step` (``warmup`` steps untimed)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training.train does on a GPU
    step, x = bare_step(architecture, image_size, batch_size, device)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        step(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def our_loop(sky, architecture, image_size, batch_size, steps, device, warmup=2) -> float:
    """Images/s of ``training.train`` over its optimizer steps (first ``warmup`` excluded)."""
    from galaxy_helpers.training import TrainConfig, train

    cfg = TrainConfig(
        architecture=architecture,
        image_size=image_size,
        batch_size=batch_size,
        epochs=1,
        max_steps_per_epoch=warmup + steps,
        progress=False,
        device=str(device),
    )
    _, history = train(sky, cfg)
    t = history.step_end_s  # seconds since the epoch started, one per optimizer step
    return steps * batch_size / (t[warmup + steps - 1] - t[warmup - 1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default="resnet10t")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--n-galaxies", type=int, default=2000)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None)
    p.add_argument("--target", type=float, default=0.8, help="ours / bare to reach")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from galaxy_helpers import synthetic
    from galaxy_helpers.course import device as best_device
    from galaxy_helpers.training import TrainConfig, amp_precision

    device = torch.device(args.device or best_device())
    # A prefix of the course sky (galaxy i is the same whatever n_galaxies is).
    sky = synthetic.make_sky(n_galaxies=args.n_galaxies, image_size=args.image_size)
    bare, ours = [], []
    for r in range(args.rounds):
        bare.append(
            bare_loop(args.architecture, args.image_size, args.batch_size, args.steps, device)
        )
        ours.append(
            our_loop(sky, args.architecture, args.image_size, args.batch_size, args.steps, device)
        )
        print(f"round {r + 1}: bare {bare[-1]:.1f} img/s, ours {ours[-1]:.1f} img/s", flush=True)
    result = {
        "architecture": args.architecture,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "device": str(device),
        "precision": amp_precision(TrainConfig().amp, device),
        "n_galaxies": args.n_galaxies,
        "steps": args.steps,
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "bare_images_per_s": round(max(bare), 1),
        "ours_images_per_s": round(max(ours), 1),
        "ratio": round(max(ours) / max(bare), 3),
        "target_ratio": args.target,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

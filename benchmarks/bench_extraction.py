"""Extraction throughput from image files on disk against the bare forward pass, same run.

``extract_representations`` reads PNG files, decodes them in background threads while the
model encodes the previous batch, and writes a table. If the overlap works, it should run at
nearly the speed of the model alone on tensors already in memory (target: at least 80%).

Both are timed in the same process, alternately, best of ``--repeats`` runs each, with the same
model (convnext_atto, random weights: speed does not depend on training), image size, batch
size and precision (extraction's default: bfloat16 on CPUs with native bfloat16). Images are
the first ``--n`` galaxies of the synthetic sky (galaxy i is the same whatever
the sky's size; rendered once and cached).

Usage::

    python benchmarks/bench_extraction.py                # 2,000 galaxies at 64 px
    python benchmarks/bench_extraction.py --n 500 --architecture resnet18
"""

from __future__ import annotations

import argparse
import json
import time

from galaxy_helpers.core import write_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="galaxies")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--architecture", default="convnext_atto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.8, help="from files / bare to reach")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)

    import torch

    from galaxy_helpers import synthetic
    from galaxy_helpers.images import load_images, to_tensor
    from galaxy_helpers.representations import extract_representations, random_weights_model
    from galaxy_helpers.training import amp_precision, amp_settings

    # Only the galaxies timed (a 5,000-galaxy default sky would cap --n and cost minutes to
    # render where it is not cached).
    sky = synthetic.make_sky(n_galaxies=args.n, progress=False)
    meta = {
        "architecture": args.architecture,
        "image_size": args.image_size,
        "channels": 3,
        "mean": [0.1, 0.1, 0.1],
        "std": [0.2, 0.2, 0.2],
    }
    model, meta = random_weights_model(meta, seed=0)
    # the bare forward pass: tensors prepared in memory beforehand, nothing else timed
    tensors = to_tensor(
        load_images(sky["file_loc"].tolist(), args.image_size, progress=False),
        3,
        meta["mean"],
        meta["std"],
    )

    # the precision extraction uses by default (bfloat16 where this CPU has it natively)
    amp_on, amp_dtype = amp_settings("auto", "cpu")

    def bare():
        with torch.inference_mode(), torch.autocast("cpu", amp_dtype, enabled=amp_on):
            for s in range(0, len(tensors), args.batch_size):
                model.encode(tensors[s : s + args.batch_size])

    def from_files():
        extract_representations(
            (model, meta), sky, batch_size=args.batch_size, cache=False, progress=False
        )

    bare()  # warm up (first-call allocations)
    times = {"bare": [], "files": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare), ("files", from_files)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "n": len(sky),
        "image_size": args.image_size,
        "architecture": args.architecture,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "precision": amp_precision("auto", "cpu"),
        "bare_forward_img_per_s": round(len(sky) / best["bare"], 1),
        "from_files_img_per_s": round(len(sky) / best["files"], 1),
        "ratio": round(best["bare"] / best["files"], 3),
        "target_ratio": args.target,
        "all_times_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }
    print(json.dumps(result, indent=1))
    print(
        f"extraction from files runs at {result['ratio']:.0%} of the bare forward pass "
        f"(target >= {args.target:.0%})"
    )
    if args.json:
        write_json(args.json, result, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

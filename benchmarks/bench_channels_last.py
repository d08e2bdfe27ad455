"""Channels-last (NHWC) against contiguous NCHW input for the course encoder's two CPU
workloads outside notebook 02's training (which was channels-last already): encoding a
catalogue (``representations`` in notebooks 03-06) and a finetuning step (``finetuned.train_full``
in notebook 06's label-budget runs), measured in the same run.

Both variants run the same course checkpoint on the same decoded synthetic-sky images, under
the precision the helpers use (``amp="auto"``: bfloat16 autocast on CPUs with native bfloat16);
rounds alternate the variants and the best round of each is kept (the fairest comparison on a
shared machine). The helpers ask `images.to_tensor(..., channels_last=True)` for every encoder
input; the ratio is why.

Usage::

    python benchmarks/bench_channels_last.py --json benchmarks/results/channels_last_<date>.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time

VARIANTS = ("nchw", "channels_last")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="course")
    p.add_argument("--n", type=int, default=2048, help="images encoded per round")
    p.add_argument("--steps", type=int, default=20, help="finetuning steps per round")
    p.add_argument("--batch", type=int, default=32, help="finetuning batch (FinetuneConfig's)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n-galaxies", type=int, default=None, help="sky size (default: the course's)")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    import torch

    from galaxy_helpers import checkpoints, synthetic
    from galaxy_helpers.core import write_json
    from galaxy_helpers.images import catalogue_crops, load_images, to_tensor
    from galaxy_helpers.training import amp_settings, numerics

    model, meta = checkpoints.load_model(args.encoder, progress=False)
    sky_size = {} if args.n_galaxies is None else {"n_galaxies": args.n_galaxies}
    sky = synthetic.make_sky(progress=False, **sky_size).iloc[: args.n]
    size = int(meta["image_size"])
    images = load_images(sky["file_loc"], size, progress=False, crop=catalogue_crops(sky, meta))
    prep = dict(channels=int(meta["channels"]), mean=meta.get("mean"), std=meta.get("std"))
    x_all = to_tensor(images, **prep)  # NCHW, as to_tensor returns it
    amp_on, amp_dtype = amp_settings("auto", torch.device("cpu"))

    def layout(x, variant):
        nhwc = torch.channels_last
        return x.contiguous(memory_format=nhwc) if variant == "channels_last" else x.contiguous()

    def encode(variant) -> float:
        model.eval()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", amp_dtype, enabled=amp_on):
            for s in range(0, len(x_all), 256):
                model.encode(layout(x_all[s : s + 256], variant)).float()
        return len(x_all) / (time.perf_counter() - t0)

    def finetune(variant) -> float:
        net = copy.deepcopy(model).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            idx = torch.randint(0, len(x_all), (args.batch,), generator=gen)
            with torch.autocast("cpu", amp_dtype, enabled=amp_on):
                z = net.encode(layout(x_all[idx], variant)).float()
            loss = z.square().mean()  # any scalar: the step's cost is the encoder's
            opt.zero_grad()
            loss.backward()
            opt.step()
        return args.steps * args.batch / (time.perf_counter() - t0)

    for variant in VARIANTS:  # warm-up: first calls allocate and pick kernels
        encode(variant), finetune(variant)
    best = {v: {"encode_img_per_s": 0.0, "finetune_img_per_s": 0.0} for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            b = best[variant]
            b["encode_img_per_s"] = max(b["encode_img_per_s"], encode(variant))
            b["finetune_img_per_s"] = max(b["finetune_img_per_s"], finetune(variant))
    base, nhwc = best["nchw"], best["channels_last"]
    result = {
        "encoder": args.encoder,
        "image_size": size,
        "torch_threads": torch.get_num_threads(),
        "numerics": numerics(torch.device("cpu")),
        "rounds": args.rounds,
        "variants": {v: {k: round(x, 1) for k, x in b.items()} for v, b in best.items()},
        "speedup_encode": round(nhwc["encode_img_per_s"] / base["encode_img_per_s"], 3),
        "speedup_finetune": round(nhwc["finetune_img_per_s"] / base["finetune_img_per_s"], 3),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

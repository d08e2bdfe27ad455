"""Decoding a catalogue once for every encoder (representations.read_pixels) against decoding
it again in each notebook, measured in the same run.

The sequence is the course's: notebook 03 extracts the course encoder's representation table
of a catalogue; notebook 04 then reads the same catalogue for its two baselines, the same
architecture with random weights and raw-pixel block means (``transfer.encoder_features``).
Variant ``per_notebook`` keeps no decoded pixels (``PIXEL_CACHE_MAX_BYTES = 0``: notebook 04
decodes the images again, as before); variant ``once`` keeps them beside the tables. Each round
runs both variants, alternating, each in a fresh cache folder (the catalogue's files stay in a
data folder of their own); the best round of each is kept (the fairest comparison on a shared
machine). The catalogue is the 5,000 real Galaxy Zoo 2 galaxies when the mirror or cache has
them (424-px JPEGs, the slow decode), else the synthetic sky (64-px PNGs).

Usage::

    GALAXY_DATA_MIRROR=../shared/data python benchmarks/bench_decode_once.py \\
        --json benchmarks/results/decode_once_<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

VARIANTS = ("per_notebook", "once")


def catalogue(name: str, data_dir: Path, n: int | None):
    from galaxy_helpers import data, synthetic

    if name == "synthetic":
        cat = synthetic.make_sky(progress=False, cache_dir=data_dir)
    else:
        cat = data.load_dataset(name, cache_dir=data_dir, progress=False)
    return cat if n is None else cat.iloc[:n].reset_index(drop=True)


def one_round(cat, variant: str, folder: Path, encoder: str) -> dict[str, float]:
    """Seconds of notebook 03's extraction and notebook 04's two baselines, in ``folder``."""
    from galaxy_helpers import checkpoints, representations, transfer

    os.environ["GALAXY_HELPERS_CACHE"] = str(folder)  # where transfer's baselines cache
    keep = representations.PIXEL_CACHE_MAX_BYTES, representations.RECENT_PIXELS_MAX_BYTES
    representations._RECENT.clear()  # each round starts as a new notebook's process
    if variant == "per_notebook":  # nothing kept, on disk or in memory
        representations.PIXEL_CACHE_MAX_BYTES = representations.RECENT_PIXELS_MAX_BYTES = 0
    try:
        model, meta = checkpoints.load_model(encoder, progress=False)
        t0 = time.perf_counter()
        representations.extract_representations((model, meta), cat, progress=False)
        t1 = time.perf_counter()
        shared: dict = {}  # one notebook's in-memory decode, shared by its two baselines
        transfer.encoder_features("random", cat, reference=encoder, cache=shared)
        transfer.encoder_features("pixels", cat, reference=encoder, cache=shared)
        t2 = time.perf_counter()
    finally:
        representations.PIXEL_CACHE_MAX_BYTES, representations.RECENT_PIXELS_MAX_BYTES = keep
    return {"nb03_extract": t1 - t0, "nb04_baselines": t2 - t1, "total": t2 - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="gz2_kaggle_subset", help="or 'synthetic'")
    p.add_argument("--n", type=int, default=None, help="first n galaxies only")
    p.add_argument("--encoder", default="course")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    from galaxy_helpers import data
    from galaxy_helpers.core import write_json
    from galaxy_helpers.training import numerics

    outer_cache = os.environ.get("GALAXY_HELPERS_CACHE")
    with tempfile.TemporaryDirectory(prefix="bench_decode_once_") as tmp:
        root = Path(tmp)
        dataset = args.dataset
        if dataset != "synthetic" and not data.dataset_available(dataset, cache_dir=root / "data"):
            print(f"{dataset} is neither cached nor in a mirror: using the synthetic sky")
            dataset = "synthetic"
        cat = catalogue(dataset, root / "data", args.n)
        best: dict[str, dict[str, float]] = {}
        for r in range(args.rounds):
            for v in VARIANTS:
                t = one_round(cat, v, root / f"{v}_{r}", args.encoder)
                print(f"round {r + 1} {v}: " + ", ".join(f"{k} {s:.1f} s" for k, s in t.items()))
                if v not in best or t["total"] < best[v]["total"]:
                    best[v] = t
    if outer_cache is None:  # one_round pointed it at the round's folder
        os.environ.pop("GALAXY_HELPERS_CACHE", None)
    else:
        os.environ["GALAXY_HELPERS_CACHE"] = outer_cache
    result = {
        "config": vars(args) | {"dataset": dataset, "galaxies": len(cat)},
        "numerics": numerics(),
        "seconds": {v: {k: round(s, 2) for k, s in t.items()} for v, t in best.items()},
        "once_over_per_notebook": round(best["once"]["total"] / best["per_notebook"]["total"], 3),
        "nb04_once_over_per_notebook": round(
            best["once"]["nb04_baselines"] / best["per_notebook"]["nb04_baselines"], 3
        ),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

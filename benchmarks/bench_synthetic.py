"""How long does the synthetic sky take? Target: 10,000 galaxies at 64 px in under 60 s.

Runs :func:`galaxy_helpers.synthetic.make_sky` end to end into a fresh temporary cache (truth,
volunteers, rendering, PNG files, parquet), and times each step on its own. As a baseline
measured in the same run, it renders 300 galaxies (and writes their PNG files) in this process
and reports the CPU time per galaxy: on a shared machine the wall-clock time depends on the
load, the CPU time much less. ``ideal_wall_s_on_idle_machine`` (truth + votes + n x CPU per
galaxy / workers) is what the run would take with the cores to itself, and ``wall_over_ideal``
says how much the load cost.

Usage::

    python benchmarks/bench_synthetic.py [--n 10000] [--size 64] [--workers N] [--budget 60]
    python benchmarks/bench_synthetic.py --json synthetic.json

Prints one JSON object (and writes it to ``--json``); exits 1 when the end-to-end wall time
exceeds ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from galaxy_helpers import synthetic
from galaxy_helpers.core import write_json
from galaxy_helpers.schema import DECALS_DR5

BASELINE_GALAXIES = 300  # rendered in this process for the CPU time per galaxy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="default: make_sky's choice")
    p.add_argument("--budget", type=float, default=60.0)
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    config = synthetic.SkyConfig(n_galaxies=args.n, image_size=args.size)
    result = {"n_galaxies": args.n, "image_size": args.size, "cpus": os.cpu_count()}
    result["load_average_before"] = [round(x, 2) for x in os.getloadavg()]

    # Baseline in the same run: CPU time per galaxy (render + PNG file), one process.
    result["baseline_galaxies"] = BASELINE_GALAXIES
    truth = synthetic.draw_truth(BASELINE_GALAXIES, config.seed, config)
    rows = truth.to_dict("records")
    c0 = time.process_time()
    for i, row in enumerate(rows):
        synthetic.render_galaxy(row, args.size, np.random.default_rng([config.seed, i, 1]))
    render_cpu = (time.process_time() - c0) / len(rows)
    result["baseline_render_cpu_ms_per_galaxy"] = round(1000 * render_cpu, 3)
    for i, row in enumerate(rows):
        row.update(_index=i, id_str=f"bench-{i}")
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        synthetic.sky._render_chunk((rows, config.seed, args.size, tmp))
        cpu_per_galaxy = (time.process_time() - c0) / len(rows)
    result["baseline_render_and_png_cpu_ms_per_galaxy"] = round(1000 * cpu_per_galaxy, 3)

    t0 = time.perf_counter()
    truth = synthetic.draw_truth(args.n, config.seed, config)
    result["draw_truth_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    synthetic.simulate_votes(truth, DECALS_DR5, config.seed, config)
    result["simulate_votes_s"] = round(time.perf_counter() - t0, 3)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        c0 = time.process_time()
        catalogue = synthetic.make_sky(config, cache_dir=tmp, progress=False, workers=args.workers)
        wall = time.perf_counter() - t0
        result["make_sky_wall_s"] = round(wall, 2)
        result["make_sky_cpu_s_main_process"] = round(time.process_time() - c0, 2)
        assert len(catalogue) == args.n
        t0 = time.perf_counter()
        synthetic.make_sky(config, cache_dir=tmp, progress=False)
        result["cache_hit_s"] = round(time.perf_counter() - t0, 3)
    workers = args.workers if args.workers is not None else synthetic.sky._default_workers(args.n)
    result["workers"] = workers
    # The wall time this run would take with the cores to itself: truth and votes in the main
    # process, then rendering + PNG files shared by the workers.
    ideal = (
        result["draw_truth_s"]
        + result["simulate_votes_s"]
        + args.n * cpu_per_galaxy / max(1, workers)
    )
    result["ideal_wall_s_on_idle_machine"] = round(ideal, 2)
    result["wall_over_ideal"] = round(wall / ideal, 2)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["budget_s"] = args.budget
    result["within_budget"] = wall <= args.budget
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result, indent=2)
    return 0 if wall <= args.budget else 1


if __name__ == "__main__":
    sys.exit(main())

"""Independent repeats in worker processes (``core.parallel_map``) against one after the other,
measured in the same run on the course's own workloads: notebook 05's sky comparison
(``anomaly.compare_methods``: 5 GP searches and Astronomaly's, 200 labels each) and, where the
Galaxy Zoo 2 subset is available, the paper's GZ2 anomaly experiment and notebook 06's GZ2 ring
probe (``transfer.compare_anomaly_search`` / ``compare_linear_probe``: the course checkpoint and
both baselines). Every repeat is seeded on its own, so both variants must give the same tables.

The variants alternate (``GALAXY_HELPERS_JOBS`` = 1, then the default), best of ``--rounds``;
the first parallel call in a process starts the workers, and that start is counted (a notebook
pays it once).

Usage::

    GALAXY_DATA_MIRROR=../shared/data python benchmarks/bench_parallel_repeats.py \\
        --json benchmarks/results/parallel_repeats_<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from unittest import mock


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="course")
    p.add_argument("--n-labels", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--n-galaxies", type=int, default=None, help="sky size (default: the course's)")
    p.add_argument("--no-gz2", action="store_true", help="leave out the Galaxy Zoo 2 workloads")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)

    import pandas as pd

    from galaxy_helpers import anomaly, core, data, representations, synthetic, transfer

    sky_size = {} if args.n_galaxies is None else {"n_galaxies": args.n_galaxies}
    sky = synthetic.make_sky(progress=False, **sky_size)
    table = representations.extract_representations(args.encoder, sky, progress=False)
    scores = anomaly.get_researcher("merger hunter").score(sky)
    common = dict(n_labels=args.n_labels, repeats=args.repeats, progress=False)
    workloads = {"05 sky comparison": lambda: anomaly.compare_methods(table, scores, **common)}
    if not args.no_gz2 and data.dataset_available("gz2_kaggle_subset"):
        gz2 = data.load_dataset("gz2_kaggle_subset", progress=False)
        transfer._features_by_encoder(gz2, args.encoder)  # computed and cached outside the clock
        workloads["05 GZ2 anomaly experiment"] = lambda: transfer.compare_anomaly_search(
            gz2, args.encoder, repeats=args.repeats
        )
        workloads["06 GZ2 ring probe"] = lambda: transfer.compare_linear_probe(
            gz2, "tag_ring", args.encoder
        )

    jobs = {"one_after_another": "1", "workers": str(core.n_jobs())}
    best = {w: dict.fromkeys(jobs, float("inf")) for w in workloads}
    tables = {}
    for _ in range(args.rounds):
        for variant, n in jobs.items():
            with mock.patch.dict(os.environ, {core.JOBS_ENV: n}):
                for name, run in workloads.items():
                    t0 = time.perf_counter()
                    out = run()
                    best[name][variant] = min(best[name][variant], time.perf_counter() - t0)
                    tables[name, variant] = dict(out) if isinstance(out, dict) else {"": out}

    def same(name: str) -> bool:
        a, b = (tables[name, v] for v in jobs)
        try:
            for key in a:
                pd.testing.assert_frame_equal(a[key], b[key])
        except AssertionError:
            return False
        return a.keys() == b.keys()

    result = {
        "encoder": args.encoder,
        "workers": int(jobs["workers"]),
        "rounds": args.rounds,
        "no_gz2": args.no_gz2,  # else a missing GZ2 workload means the data was not there
        "seconds": {n: {v: round(s, 2) for v, s in b.items()} for n, b in best.items()},
        "speedup": {n: round(b["one_after_another"] / b["workers"], 2) for n, b in best.items()},
        "same_tables": {n: same(n) for n in workloads},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        core.write_json(args.json, result)
    return 0 if all(result["same_tables"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

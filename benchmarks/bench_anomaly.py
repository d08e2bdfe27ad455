"""Is the labelling widget's "retrain and show next batch" instant? (notebook 05)

One step = retrain the Gaussian process on 200 labels + rescore every galaxy (posterior mean and
standard deviation) + choose the next batch of 10 by expected improvement, on 50,000 galaxies.
Measured against the isolation-forest baseline scoring the same 50,000 galaxies in the same run
(and Astronomaly's fold-in step, for the record). The budget is 1 s per step on a shared 2-core
CPU, so the widget feels instant.

Features are Gaussian with a planted interesting cluster, 320-d like convnext_atto's pooled
representation; the embedding (PCA-40 + scaling) is fitted once per session, outside the step,
exactly as the widget does.

Usage::

    python benchmarks/bench_anomaly.py [--n 50000] [--dim 320] [--labels 200] [--repeats 5]
    python benchmarks/bench_anomaly.py --json anomaly.json

Prints one JSON object (and writes it to ``--json``); exits 1 when the median step exceeds
``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from galaxy_helpers.anomaly import ActiveLearner, AstronomalyScorer, IsolationForestScorer
from galaxy_helpers.core import write_json


def make_features(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    special = rng.choice(n, n // 100, replace=False)
    X[special, :5] += 3.0
    truth = np.zeros(n, dtype=int)
    truth[special] = 5
    return X, truth


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=320)
    p.add_argument("--labels", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)

    X, truth = make_features(args.n, args.dim)
    rng = np.random.default_rng(1)
    y = np.full(args.n, np.nan)
    labelled = rng.choice(args.n, args.labels, replace=False)
    # a realistic mix: the learner has found some interesting galaxies by now
    found = np.flatnonzero(truth)[: args.labels // 5]  # fewer on a small --n
    labelled[: len(found)] = found
    y[labelled] = truth[labelled]

    t0 = time.perf_counter()
    learner = ActiveLearner(random_state=0).fit(X)  # once per session
    embed_s = time.perf_counter() - t0

    def step():
        learner.update(y)
        learner.predict()
        return learner.next_batch(10)

    step_times = timed(step, args.repeats)
    batch = step()
    forest = IsolationForestScorer(random_state=0).fit(X)
    forest_times = timed(lambda: forest.score_samples(X), args.repeats)
    astro = AstronomalyScorer(random_state=0).fit(X)
    astro_times = timed(lambda: astro.update(y).next_batch(10), max(1, args.repeats // 2))

    median = statistics.median(step_times)
    result = {
        "benchmark": "anomaly_retrain_rescore_next_batch",
        "n_galaxies": args.n,
        "dim": args.dim,
        "n_labels": args.labels,
        "repeats": args.repeats,
        "embedding_fit_once_s": round(embed_s, 3),
        "gp_step_median_s": round(median, 3),
        "gp_step_all_s": [round(t, 3) for t in step_times],
        "isolation_forest_score_median_s": round(statistics.median(forest_times), 3),
        "isolation_forest_score_all_s": [round(t, 3) for t in forest_times],
        "astronomaly_step_median_s": round(statistics.median(astro_times), 3),
        "gp_step_over_isolation_forest": round(median / statistics.median(forest_times), 2),
        "next_batch_interesting": int((truth[batch] >= 4).sum()),
        "budget_s": args.budget,
        "within_budget": median < args.budget,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result, indent=2)
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Query latency of the similarity index against scikit-learn's ball tree, same run.

The paper searched its PCA-10 representation with ``sklearn.neighbors.NearestNeighbors``
(ball tree). We time one query at a time (what a volunteer's click costs) for 10k, 100k and 1M
galaxies at 10 and 40 dimensions, for every backend of :class:`SimilarityIndex` and for the ball
tree, and check that all of them return the same neighbours.

Data: Gaussian with a PCA-like spectrum (the standard deviation of component i falls as
``1 / (1 + i) ** 0.75``, as for PCA components of a representation) or isotropic with
``--spectrum isotropic`` (the hardest case for trees).

Usage::

    python benchmarks/bench_search.py                   # all sizes (a few minutes on 2 cores)
    python benchmarks/bench_search.py --sizes 10000 --dims 10 --queries 20
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from galaxy_helpers.core import write_json


def make_data(n: int, d: int, spectrum: str, seed: int = 0) -> np.ndarray:
    """Random float32 features with a PCA-like or flat spectrum."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    if spectrum == "pca":
        x *= (1.0 / (1.0 + np.arange(d)) ** 0.75).astype(np.float32)
    return x


def time_queries(fn, queries, repeats: int = 1) -> float:
    """Median milliseconds per single query."""
    fn(queries[0])  # warm up
    times = []
    for q in queries:
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn(q)
        times.append((time.perf_counter() - t0) / repeats)
    return 1e3 * float(np.median(times))


def run(
    sizes, dims, n_queries: int, k: int, spectrum: str, backends, metric: str, target_ms=None
) -> list[dict]:
    """Time every backend and the ball tree; return one record per (size, dims, method), each
    with its speed-up over the ball tree of the same run (``ball tree ms / its ms``)."""
    from sklearn.neighbors import NearestNeighbors

    from galaxy_helpers.similarity import SimilarityIndex, faiss_available

    if "faiss" in backends and not faiss_available():
        backends = [b for b in backends if b != "faiss"]
    sk_metric = {"euclidean": "euclidean", "manhattan": "manhattan"}[metric]
    records = []
    for d in dims:
        for n in sizes:
            x = make_data(n, d, spectrum)
            ids = np.arange(n).astype(str)
            rng = np.random.default_rng(1)
            # queries are galaxies of the catalogue, as when a volunteer clicks one
            qrows = rng.choice(n, n_queries, replace=False)
            queries = x[qrows]
            t0 = time.perf_counter()
            tree = NearestNeighbors(n_neighbors=k, algorithm="ball_tree", metric=sk_metric).fit(x)
            fit_s = time.perf_counter() - t0
            ms = time_queries(lambda q, tree=tree: tree.kneighbors(q[None], k), queries)
            _, reference = tree.kneighbors(queries, k)
            base = {"n": n, "dims": d, "k": k, "queries": n_queries}
            base |= {"spectrum": spectrum, "metric": metric, "target_ms_per_query": target_ms}
            ball_ms = ms
            records.append(
                {
                    **base,
                    "method": "sklearn ball_tree",
                    "fit_s": round(fit_s, 3),
                    "ms_per_query": round(ms, 3),
                    "same_neighbours": 1.0,
                    "speedup_over_ball_tree": 1.0,
                }
            )
            print(json.dumps(records[-1]), flush=True)
            for backend in backends:
                t0 = time.perf_counter()
                index = SimilarityIndex(metric=metric, backend=backend).fit(x, ids=ids)
                fit_s = time.perf_counter() - t0
                ms = time_queries(lambda q, index=index: index.query(q, k=k), queries)
                found = index.query(queries, k=k)["id_str"].to_numpy().astype(int)
                same = float(np.mean(found.reshape(len(queries), k) == reference))
                records.append(
                    {
                        **base,
                        "method": f"SimilarityIndex {index.backend_}",
                        "fit_s": round(fit_s, 3),
                        "ms_per_query": round(ms, 3),
                        "same_neighbours": round(same, 4),
                        "speedup_over_ball_tree": round(ball_ms / max(ms, 1e-9), 2),
                    }
                )
                print(json.dumps(records[-1]), flush=True)
    return records


def markdown(records: list[dict]) -> str:
    """The records as a markdown table, with the speed-up over the ball tree."""
    lines = [
        "| galaxies x dims | method | fit (s) | ms / query | vs ball tree | same neighbours |",
        "|---|---|---|---|---|---|",
    ]
    ref = {}
    for r in records:
        if r["method"] == "sklearn ball_tree":
            ref[(r["n"], r["dims"])] = r["ms_per_query"]
    for r in records:
        speed = ref[(r["n"], r["dims"])] / max(r["ms_per_query"], 1e-9)
        lines.append(
            f"| {r['n']:,} x {r['dims']} | {r['method']} | {r['fit_s']:.2f} | "
            f"{r['ms_per_query']:.2f} | {speed:.1f}x | {r['same_neighbours']:.0%} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", default="euclidean", choices=["euclidean", "manhattan"])
    parser.add_argument("--spectrum", default="pca", choices=["pca", "isotropic"])
    parser.add_argument("--backends", nargs="+", default=["kdtree", "numpy", "faiss"])
    parser.add_argument(
        "--target-ms", type=float, default=20.0, help="budget of one query (recorded, not enforced)"
    )
    parser.add_argument("--json", help="also write the records to this file")
    args = parser.parse_args(argv)
    records = run(
        args.sizes,
        args.dims,
        args.queries,
        args.k,
        args.spectrum,
        args.backends,
        args.metric,
        args.target_ms,
    )
    print()
    print(markdown(records))
    if args.json:
        write_json(args.json, records, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

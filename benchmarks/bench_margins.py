"""Science margins: every claim of tests/science_claims.py over several seeds and thread counts.

The course runner executes notebooks 02-06 (quick profile) once per seed ``s`` and thread count:
``seed = s`` in every notebook (training initialisation and batch order in 02, the query, label
and repeat draws in 03-06) and the synthetic sky drawn with seed ``s + 1`` (``sky_seed`` in 02-04,
``sky={"seed": ...}`` in 05-06), so seed 0 is the committed course run. Torch's thread count is
set through ``OMP_NUM_THREADS`` for the kernels; with ``--fresh-cache`` each thread count gets a
cache folder of its own, so no representation table or finetuning run computed at one thread
count is reused at another. For each claim it reports the mean, the standard
deviation and ``mean - 2 sd`` against the claim's threshold: a claim "holds with margin" when
``mean - 2 sd`` still clears it. The real-galaxy claims vary only with ``seed`` (the real
catalogues are fixed); the course checkpoint is the same in every run.

Usage (``GALAXY_DATA_MIRROR`` pointing at the data mirror, as ``make`` sets it, so that the
real-galaxy sections run)::

    python benchmarks/bench_margins.py                          # seeds 0-4, 2 and 1 threads
    python benchmarks/bench_margins.py --seeds 0 1 --threads 2 --only 02
    python benchmarks/bench_margins.py --from course_output/margins   # re-tabulate

Each run's metrics stay in ``--work`` (default ``course_output/margins/``), so an
interrupted study resumes where it stopped. Every value goes to
``benchmarks/results/margins_<date>.json`` and the table rendered from it to the ``.md`` beside
it, which the README quotes verbatim (tests/test_margins_results.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))

from science_claims import CLAIMS  # noqa: E402

NOTEBOOKS = ("02", "03", "04", "05", "06")


def run_folder(work: Path, threads: int, seed: int) -> Path:
    return work / f"threads{threads}_seed{seed}"


def run_one(work: Path, threads: int, seed: int, only, fresh_cache: bool = False) -> None:
    """Run the course for one (threads, seed), unless a finished run of ``only`` is there."""
    from galaxy_helpers import notebooks

    folder = run_folder(work, threads, seed)
    record = folder / "course_run.json"
    if record.exists():
        done = json.loads(record.read_text())
        if done.get("ok") and set(only) <= {n[:2] for n in done.get("notebooks", [])}:
            return
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if fresh_cache:  # nothing computed at another thread count is reused
        env["GALAXY_HELPERS_CACHE"] = str(work / f"cache_threads{threads}")
        if not os.environ.get("GALAXY_DATA_MIRROR"):
            print(
                "[margins] warning: a fresh cache holds no real data and GALAXY_DATA_MIRROR is "
                "not set, so the real-galaxy sections will be skipped (run through `make` or set "
                "it to the mirror folder)",
                flush=True,
            )
    parameters = {"seed": seed, "sky_seed": seed + 1, "sky": {"seed": seed + 1}}
    # only what the notebooks to run declare (notebook 02 alone has no `sky`; run_course refuses
    # a parameter that no notebook to run defines)
    paths = notebooks.numbered_notebooks(notebooks.default_notebook_dir(), list(only))
    declared = set().union(*(notebooks._parameter_names(p) for p in paths))
    parameters = {k: v for k, v in parameters.items() if k in declared}
    t0 = time.perf_counter()
    with mock.patch.dict(os.environ, env):  # the kernels inherit it
        notebooks.run_course(folder, only=list(only), parameters=parameters, verbose=False)
    print(f"[margins] threads={threads} seed={seed}: {time.perf_counter() - t0:.0f} s", flush=True)


def finished_runs(work: Path) -> dict[tuple[int, int], Path]:
    """``{(threads, seed): folder}`` of every run in ``work`` with a course-run record."""
    runs = {}
    for folder in sorted(work.glob("threads*_seed*")):
        threads, seed = folder.name.removeprefix("threads").split("_seed")
        if (folder / "course_run.json").exists():
            runs[(int(threads), int(seed))] = folder
    return runs


def collect(work: Path) -> dict[tuple[int, int], dict]:
    """Every finished run in ``work``: ``{(threads, seed): metrics by notebook}``."""
    from galaxy_helpers import course

    return {key: course.load_metrics(folder) for key, folder in finished_runs(work).items()}


def run_numerics(work: Path) -> dict[str, dict]:
    """``{"threads=T seed=S": numerics}`` of every finished run (``training.numerics()`` as the
    course runner recorded it; ``torch_threads`` is the run's own thread count)."""
    out = {}
    for (threads, seed), folder in finished_runs(work).items():
        record = json.loads((folder / "course_run.json").read_text())
        numerics = record.get("numerics") or {}
        out[f"threads={threads} seed={seed}"] = numerics | {"torch_threads": threads}
    return out


def machine(numerics: dict[str, dict]) -> str:
    """One line naming what the runs' numbers depend on (CPU kernels, precision, torch)."""
    keys = ("cpu_capability", "precision", "torch")
    seen = sorted({tuple(str(n.get(k, "?")) for k in keys) for n in numerics.values()})
    return "; ".join(f"CPU kernels {c}, training in {p}, torch {t}" for c, p, t in seen)


def claim_values(runs: dict) -> dict[str, dict[str, float]]:
    """``{claim id: {"threads=T seed=S": value}}`` over the runs where the claim applies."""
    out: dict[str, dict[str, float]] = {}
    for claim in CLAIMS:
        values = {}
        for (threads, seed), metrics in sorted(runs.items()):
            m = metrics.get(claim.notebook)
            if m and claim.applies(m):
                values[f"threads={threads} seed={seed}"] = float(claim.value(m))
        out[claim.id] = values
    return out


def run_times(runs: dict) -> dict[str, dict[str, float]]:
    """``{"threads=T seed=S": {"training_s": notebook 02's epochs, NN: runtime_s}}``."""
    out = {}
    for (threads, seed), metrics in sorted(runs.items()):
        row = {nb[:2]: m["runtime_s"] for nb, m in metrics.items() if "runtime_s" in m}
        if "training_s" in metrics.get("02_train_on_votes", {}):
            row["training_s"] = metrics["02_train_on_votes"]["training_s"]
        out[f"threads={threads} seed={seed}"] = row
    return out


def margins_table(
    values: dict[str, dict[str, float]], times: dict | None = None
) -> tuple[str, list]:
    """Markdown (claims table, then notebook 02's training time by thread count) and the rows.

    Seeds are the repeats: for each thread count, the mean and standard deviation over seeds and
    ``mean - 2 sd``; a claim holds with margin when ``mean - 2 sd`` clears its bound at every
    thread count measured (pooling thread counts would count a seed twice where the threads do
    not change the result). Rendered from the JSON's values.
    """
    groups_seen = sorted(
        {run.split()[0].removeprefix("threads=") for v in values.values() for run in v},
        key=int,
        reverse=True,
    )
    head = " | ".join(
        f"{t} thread{'s' if t != '1' else ''}: mean, sd (mean - 2 sd)" for t in groups_seen
    )
    lines = [
        f"| claim | bound | seeds | {head} | holds with margin |",
        "|---|---|---|" + "---|" * len(groups_seen) + "---|",
    ]
    rows = []
    for claim in CLAIMS:
        groups: dict[str, list[float]] = {}
        for run, value in values.get(claim.id, {}).items():
            groups.setdefault(run.split()[0].removeprefix("threads="), []).append(value)
        if not groups:
            continue
        cells, stats, verdict = [], {}, True
        for t in groups_seen:
            v = np.array(groups.get(t, []), dtype=float)
            if not len(v):
                cells.append("not measured")
                continue
            mean, sd = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
            low = mean - 2 * sd
            verdict &= claim.holds(low)
            stats[t] = {"n": len(v), "mean": mean, "sd": sd, "mean_minus_2sd": low}
            cells.append(f"{mean:.3f}, {sd:.3f} ({low:.3f})")
        seeds = min(s["n"] for s in stats.values())
        rows.append(
            {"claim": claim.id, "threshold": claim.threshold, "relation": claim.relation}
            | {"by_threads": stats, "holds": verdict}
        )
        lines.append(
            f"| {claim.id} | {claim.relation} {claim.threshold:g} | {seeds} | {' | '.join(cells)} | "
            f"{'yes' if verdict else '**no**'} |"
        )
    by_threads: dict[str, list[float]] = {}
    for run, row in (times or {}).items():
        if "training_s" in row:
            by_threads.setdefault(run.split()[0], []).append(row["training_s"])
    for threads, secs in sorted(by_threads.items(), reverse=True):
        lines.append(
            f"\nNotebook 02's training ({threads.replace('=', ' = ')}): {np.mean(secs):.1f} s on "
            f"average over {len(secs)} runs ({min(secs):.1f} to {max(secs):.1f} s)."
        )
    return "\n".join(lines) + "\n", rows


def render(result: dict) -> str:
    """The Markdown file of a saved result (what the README quotes)."""
    head = f"{result['n_runs']} course runs ({result['runs']})"
    if result.get("numerics"):
        head += f", {machine(result['numerics'])}"
    head += "\n\n"
    return head + margins_table(result["values"], result.get("times"))[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--only", nargs="+", default=list(NOTEBOOKS), help="notebook numbers")
    p.add_argument("--work", type=Path, default=ROOT / "course_output/margins")
    p.add_argument("--from", dest="from_", type=Path, help="only tabulate the runs in this folder")
    p.add_argument(
        "--fresh-cache",
        action="store_true",
        help="a cache folder of its own per thread count (representations, finetuning runs)",
    )
    p.add_argument("--json", type=Path, help="default benchmarks/results/margins_<date>.json")
    p.add_argument("--markdown", type=Path, help="default: the JSON's path with .md")
    args = p.parse_args(argv)

    work = args.from_ or args.work
    if args.from_ is None:
        work.mkdir(parents=True, exist_ok=True)
        for threads in args.threads:
            for seed in args.seeds:
                run_one(work, threads, seed, args.only, args.fresh_cache)
    runs = collect(work)
    values = claim_values(runs)
    threads = ", ".join(map(str, sorted({t for t, _ in runs})))
    seeds = ", ".join(str(s) for s in sorted({s for _, s in runs}))
    result = {"n_runs": len(runs), "runs": f"torch threads {threads}; seeds {seeds}"}
    result |= {"values": values, "times": run_times(runs), "numerics": run_numerics(work)}
    result["rows"] = margins_table(values, result["times"])[1]
    text = render(result)
    print(text)
    stem = RESULTS / f"margins_{date.today().isoformat()}"
    json_path = args.json or stem.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    (args.markdown or json_path.with_suffix(".md")).write_text(text)
    print(f"[margins] wrote {json_path} and its .md")
    return 0 if all(r["holds"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())

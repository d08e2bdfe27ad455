"""How long does each notebook of the course take, against its budget?

Wall-clock budgets are a speed measurement, so they live here and not in the unit tests (a
loaded machine would fail them for no fault of the code). The script reads the metrics files of
a finished course run (``runtime_s`` is written by each notebook's ``run.write_metrics``) or,
with ``--run``, runs the course first with the one papermill runner. As a baseline measured in
the same run it times notebook 01, which reads and draws but trains nothing: ``over_01`` says how
many "notebook 01s" each notebook costs, a ratio that moves much less with the machine's load
than the seconds do.

Usage::

    python benchmarks/bench_course.py --output course_output          # a finished run
    python benchmarks/bench_course.py --run --output /tmp/course_run   # run it first

Prints one JSON object; exits 1 when a notebook exceeds its budget.
"""

from __future__ import annotations

import argparse
import json
import sys

from galaxy_helpers import course

#: seconds per notebook on the 2-core laptop CPU the quick profile is made for
BUDGETS_S = {
    "01_meet_the_galaxies": 60,
    "02_train_on_votes": 90,
    "03_representations": 60,
    "04_similarity_search": 60,
    "05_find_interesting_anomalies": 90,
    "06_finetune_rings": 120,
}


def report(metrics: dict[str, dict]) -> dict:
    """Runtime, budget and ratio to notebook 01 for every notebook with a metrics file."""
    base = metrics.get("01_meet_the_galaxies", {}).get("runtime_s")
    rows = {}
    for stem, m in sorted(metrics.items()):
        runtime = m.get("runtime_s")
        budget = BUDGETS_S.get(stem)
        rows[stem] = {
            "runtime_s": runtime,
            "budget_s": budget,
            "within_budget": None if budget is None or runtime is None else runtime < budget,
            "over_01": round(runtime / base, 2) if runtime and base else None,
        }
    total = sum(r["runtime_s"] or 0 for r in rows.values())
    ok = all(r["within_budget"] is not False for r in rows.values())
    return {"notebooks": rows, "total_s": round(total, 1), "all_within_budget": ok}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="course_output", help="course output folder")
    parser.add_argument("--run", action="store_true", help="run the course into --output first")
    args = parser.parse_args(argv)
    if args.run:
        from galaxy_helpers import notebooks

        notebooks.main(["run", "--output", args.output])
    metrics = course.load_metrics(args.output)
    if not metrics:
        print(f"no metrics files in {args.output}/metrics: run the course first (--run)")
        return 2
    result = report(metrics)
    print(json.dumps(result, indent=2))
    return 0 if result["all_within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())

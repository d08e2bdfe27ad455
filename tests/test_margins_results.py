"""The README's margins table is bench_margins.py's own output, measured on today's claims."""

from __future__ import annotations

import json
from pathlib import Path

from _bench_results import REPO, latest_result, load_benchmark
from science_claims import CLAIMS


def _bench():
    return load_benchmark("bench_margins")


def _latest() -> tuple[Path, dict]:
    run = latest_result("margins_*.json")
    return run, json.loads(run.read_text())


def test_the_markdown_is_rendered_from_the_json():
    path, result = _latest()
    assert path.with_suffix(".md").read_text() == _bench().render(result)


def test_the_readme_quotes_the_latest_table_verbatim_and_names_its_file():
    path, _ = _latest()
    readme = (REPO / "README.md").read_text()
    assert path.with_suffix(".md").read_text() in readme
    assert path.name in readme


def test_every_claim_was_measured_at_its_current_threshold_over_five_seeds_and_two_thread_counts():
    # A new claim or a changed threshold needs a new margins run.
    _, result = _latest()
    rows = {r["claim"]: r for r in result["rows"]}
    for claim in CLAIMS:
        assert claim.id in rows, f"{claim.id} was not measured by the latest margins run"
        assert rows[claim.id]["threshold"] == claim.threshold, claim.id
        assert rows[claim.id]["relation"] == claim.relation, claim.id
        by_threads = rows[claim.id]["by_threads"]
        assert set(by_threads) == {"1", "2"}, claim.id
        assert all(group["n"] >= 5 for group in by_threads.values()), claim.id


def test_the_verdicts_follow_from_the_values():
    _, result = _latest()
    bench = _bench()
    _, rows = bench.margins_table(result["values"], result.get("times"))
    assert rows == result["rows"]

"""Numbers quoted in prose are tied to their metrics (galaxy_helpers.quotes): unit tests, and the
check that every marked number in the notebooks and the README agrees with the course run."""

import json

import nbformat
import pytest
from _bench_results import RESULTS

from galaxy_helpers import notebooks, quotes, training

METRICS = {
    "02_train_on_votes": {"mae_reduction": 0.33471, "n_train": 3952},
    "06_finetune_rings": {"acc": {"head": {"30": 0.7667}, "scratch": {"30": 0.5467}}},
}


def test_a_marked_number_keeps_its_style():
    text = (
        "error 30.1%<!-- m:02:mae_reduction --> below, on 3,000<!-- m:02:n_train --> galaxies; "
        "head 0.70<!-- m:06:acc.head.30 -->, ahead by 0.1<!-- m:06:acc.head.30 - 06:acc.scratch.30 -->"
        " or 1.0x<!-- m:06:acc.head.30 / 06:acc.scratch.30 -->"
    )
    filled = quotes.fill(text, METRICS)
    assert filled == (
        "error 33.5%<!-- m:02:mae_reduction --> below, on 3,952<!-- m:02:n_train --> galaxies; "
        "head 0.77<!-- m:06:acc.head.30 -->, ahead by 0.2<!-- m:06:acc.head.30 - 06:acc.scratch.30 -->"
        " or 1.4x<!-- m:06:acc.head.30 / 06:acc.scratch.30 -->"
    )
    assert quotes.problems(filled, METRICS) == []
    assert quotes.fill(filled, METRICS) == filled


def test_a_quoted_timing_keeps_its_unit_and_can_be_left_unchecked():
    metrics = {"02_train_on_votes": {"runtime_s": 73.14}}
    assert (
        quotes.fill("ran 80 s<!-- m:02:runtime_s -->", metrics) == "ran 73 s<!-- m:02:runtime_s -->"
    )
    assert quotes.is_timing("02:runtime_s") and not quotes.is_timing("02:mae_reduction")
    assert quotes.problems("ran 80 s<!-- m:02:runtime_s -->", metrics)
    assert quotes.problems("ran 80 s<!-- m:02:runtime_s -->", metrics, timings=False) == []


def test_fill_leaves_a_quote_it_cannot_resolve_for_problems_to_report():
    text = "ran 80 s<!-- m:09:runtime_s -->"
    assert quotes.fill(text, {"02_train_on_votes": {"runtime_s": 1.0}}) == text
    assert quotes.problems(text, {"02_train_on_votes": {"runtime_s": 1.0}})


def test_a_wrong_or_unknown_quote_is_reported_with_its_line():
    text = "fine\nhead 0.75<!-- m:06:acc.head.30 -->\nlost 0.5<!-- m:06:acc.full.30 -->"
    found = quotes.problems(text, METRICS, "06.ipynb ")
    assert len(found) == 2
    assert found[0].startswith("06.ipynb line 2: quotes 0.75 but 06:acc.head.30 is 0.77")
    assert "line 3" in found[1] and "'full'" in found[1]
    with pytest.raises(KeyError, match="notebook '07'"):
        quotes.value_of("07:x", METRICS)


def test_unmarked_numbers_are_left_alone():
    text = "the paper's 0.75 with 13 rings"
    assert quotes.fill(text, METRICS) == text and quotes.problems(text, METRICS) == []


def _recorded_run() -> dict[str, dict]:
    path = notebooks.latest_run_record(RESULTS)
    assert path is not None, (
        f"no {notebooks.RECORD_PATTERN} in {RESULTS}: `make notebooks` writes the record of the "
        "run behind the committed outputs; commit it with them"
    )
    return json.loads(path.read_text())["notebooks"]


def test_the_run_record_covers_every_notebook():
    recorded = _recorded_run()
    stems = [p.stem for p in notebooks.numbered_notebooks(notebooks.default_notebook_dir())]
    assert sorted(recorded) == stems
    for stem, entry in recorded.items():
        assert entry["metrics"], stem
        assert {"precision", "cpu_capability", "torch"} <= set(entry["numerics"]), stem


def test_every_quoted_number_agrees_with_the_recorded_run():
    """The prose quotes the run that made the committed outputs, whatever machine checks it."""
    metrics = {stem: entry["metrics"] for stem, entry in _recorded_run().items()}
    folder = notebooks.default_notebook_dir()
    # timings differ run to run: tests/test_course_timing.py checks them against the record
    assert notebooks.quoted_number_problems(folder, metrics, timings=False) == []


def test_a_fresh_run_reproduces_the_recorded_one(course_metrics):
    """On a machine whose numerics match the record's (same torch, CPU kernels, precision and
    threads), this session's run makes every quoted number again. Elsewhere the numbers move in
    the last digits (float32 against bfloat16) and only the science thresholds, checked on this
    session's run by the notebooks' own tests, apply."""
    here = training.numerics()
    recorded = _recorded_run()
    same = [stem for stem, entry in recorded.items() if entry["numerics"] == here]
    if not same:
        numerics = {json.dumps(e["numerics"], sort_keys=True) for e in recorded.values()}
        pytest.skip(
            f"the committed run's numerics {sorted(numerics)} are not this machine's {here}"
        )
    metrics = {stem: entry["metrics"] for stem, entry in recorded.items()}
    metrics |= {stem: course_metrics[stem] for stem in same}
    folder = notebooks.default_notebook_dir()
    assert notebooks.quoted_number_problems(folder, metrics, timings=False) == []


def test_the_run_record_keeps_notebooks_a_partial_run_did_not_execute(tmp_path):
    nbdir, results, out = tmp_path / "notebooks", tmp_path / "results", tmp_path / "out"
    for folder in (nbdir, results, out):
        folder.mkdir()
    for stem in ("01_a", "02_b"):
        nbformat.write(nbformat.v4.new_notebook(), nbdir / f"{stem}.ipynb")

    def ran(metrics: dict, numerics: dict) -> None:
        run = {"metrics": metrics, "numerics": numerics, "wall_s": dict.fromkeys(metrics, 1.5)}
        (out / notebooks.RUN_RECORD).write_text(json.dumps(run))
        (out / "summary.md").write_text("# Course run summary\n\n| notebook |\n")

    ran({"01_a": {"x": 1}, "02_b": {"y": 2}}, {"precision": "bfloat16"})
    first = notebooks.write_run_record(out, nbdir, results, today="2026-01-01")
    assert first.with_suffix(".md").read_text() == "| notebook |\n"
    ran({"02_b": {"y": 3}}, {"precision": "float32"})
    second = notebooks.write_run_record(out, nbdir, results, complete=False, today="2026-02-01")
    assert notebooks.latest_run_record(results) == second
    assert not second.with_suffix(".md").exists()  # a partial run is not the README's table
    entries = json.loads(second.read_text())["notebooks"]
    assert entries["01_a"] == {
        "date": "2026-01-01",
        "metrics": {"x": 1},
        "numerics": {"precision": "bfloat16"},
        "wall_s": 1.5,
    }
    assert entries["02_b"]["metrics"] == {"y": 3}
    assert entries["02_b"]["numerics"] == {"precision": "float32"}

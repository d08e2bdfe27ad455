"""Numbers quoted in prose are tied to their metrics (galaxy_helpers.quotes): unit tests, and the
check that every marked number in the notebooks and the README agrees with the course run."""

import pytest

from galaxy_helpers import notebooks, quotes

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


def test_every_quoted_number_agrees_with_the_course_run(course_metrics):
    # course_metrics runs (or reuses) every notebook of the session once
    folder = notebooks.default_notebook_dir()
    metrics = {
        path.stem: course_metrics[path.stem] for path in notebooks.numbered_notebooks(folder)
    }
    # timings differ run to run: tests/test_course_timing.py checks them against the record
    assert notebooks.quoted_number_problems(folder, metrics, timings=False) == []

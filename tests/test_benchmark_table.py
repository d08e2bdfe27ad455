"""The README's benchmark table is ``benchmarks/bench_table.py``'s own output, never typed by hand:
every number in it is read from the result files the benchmarks wrote in the same run."""

from __future__ import annotations

import json
import re

import pytest
from _bench_results import REPO, RESULTS, load_benchmark

#: A number as the table prints one: 1,000,000 / 144.9 / 1.14x / 86%, not the 10 of resnet10t.
NUMBER = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(%|x)?(?![\w])")


def _bench():
    return load_benchmark("bench_table")


def _json_numbers(value) -> list[float]:
    """Every number anywhere in a parsed JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [x for v in value for x in _json_numbers(v)]
    return []


def untraced_numbers(cell: str, result) -> list[str]:
    """The numbers of ``cell`` that are no number of ``result`` rounded as printed (a min or max
    of a list counts: it is one of its numbers)."""
    known = _json_numbers(result)
    missing = []
    for match in NUMBER.finditer(cell.replace("`", " ")):
        digits, unit = match[1].replace(",", ""), match[2]
        decimals = len(digits.partition(".")[2])
        shown = float(digits)
        if unit == "%":
            shown, decimals = shown / 100, decimals + 2
        tolerance = 0.5 * 10**-decimals + 1e-9
        if not any(abs(v - shown) <= tolerance for v in known):
            missing.append(match[0])
    return missing


def _table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]  # after the header
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]


def test_a_typed_number_is_caught():
    result = {"ours_images_per_s": 144.94, "ratio": 0.858, "all": [0.38, 0.81], "n": 1_000_000}
    assert untraced_numbers("144.9 img/s, 86% (0.38 to 0.81 s), 1,000,000 x", result) == []
    assert untraced_numbers("resnet10t, bfloat16, `faiss-cpu`", {}) == []
    assert untraced_numbers("145.0 img/s, 1.14x the bare loop, 87%", result) == [
        "145.0",
        "1.14x",
        "87%",
    ]


@pytest.mark.slow
def test_the_smoke_table_has_every_row_and_only_numbers_of_its_results(tmp_path):
    bench = _bench()
    out = tmp_path / "results"
    assert bench.main(["--smoke", "--out", str(out), "--date", "2030-01-02"]) == 0
    text = (out / "benchmarks_2030-01-02.md").read_text()
    assert text.startswith(bench.HEADER)
    assert "Smoke run" in text and "CPUs" in text and "torch " in text and "Load average" in text
    meta = json.loads((out / "benchmarks_2030-01-02.json").read_text())
    rows = _table_rows(text)
    assert len(rows) == len(bench.ROWS) == 6
    labels = ["training loop", "representation extraction", "one search query",
              "one search query", "anomaly step", "synthetic sky generation"]  # fmt: skip
    for (name, _), run, cells, label in zip(bench.ROWS, bench.RUNS, rows, labels, strict=True):
        assert name == run.name
        what, command, ours, base = cells
        assert what.startswith(label)
        assert command == f"`python benchmarks/{run.script} {run.smoke}`"
        assert meta["runs"][name]["command"] == command.strip("`")
        result = json.loads((out / f"{name}_2030-01-02.json").read_text())
        for cell in (what, ours, base):
            assert untraced_numbers(cell, result) == [], f"{name}: {cell}"
    # the same table again from the files alone
    assert bench.render(out, "2030-01-02") == text


def test_the_real_commands_are_the_readme_table_s():
    """Until the table is regenerated, the README's commands are the ones the script runs."""
    readme = (REPO / "README.md").read_text()
    for run in _bench().RUNS:
        command = " ".join(["python", f"benchmarks/{run.script}", *run.argv(False)])
        assert f"`{command}`" in readme, run.name


def _latest_table():
    tables = sorted(RESULTS.glob("benchmarks_*.md"))
    if not tables:
        pytest.skip(
            "no benchmarks/results/benchmarks_*.md committed yet: run "
            "`python benchmarks/bench_table.py` on a quiet machine, commit benchmarks/results/"
            "*_<date>.json and benchmarks_<date>.md, and quote the .md in README.md"
        )
    return tables[-1]


def test_the_readme_quotes_the_latest_benchmark_table_verbatim():
    table = _latest_table()
    text = table.read_text()
    assert "Smoke run" not in text, f"{table.name} is a smoke run, not a measurement"
    assert text in (REPO / "README.md").read_text(), f"README.md does not quote {table.name}"


def test_the_committed_table_is_rendered_from_its_results():
    table = _latest_table()
    date = table.stem.split("_", 1)[1]
    assert _bench().render(RESULTS, date) == table.read_text()

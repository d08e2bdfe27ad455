"""The README's benchmark table is ``benchmarks/bench_table.py``'s own output, never typed by hand:
every number in it is read from the result files the benchmarks wrote in the same run."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from _bench_results import REPO, RESULTS, latest_result, load_benchmark

#: A number as the table prints one: 1,000,000 / 144.9 / 1.14x / 86%, not the 10 of resnet10t.
NUMBER = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(%|x)?(?![\w])")


def _bench():
    return load_benchmark("bench_table")


def _json_numbers(value) -> list[float]:
    """Every number anywhere in a parsed JSON value, and those in its keys (a result's own
    labels, such as "05 sky comparison")."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        keys = [float(m[1].replace(",", "")) for k in value for m in NUMBER.finditer(str(k))]
        return keys + _json_numbers(list(value.values()))
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
    by_name = {"seconds": {"05 sky comparison": 4.73}}
    assert untraced_numbers("05 sky comparison 4.73 s", by_name) == []
    assert untraced_numbers("06 sky comparison 4.73 s", by_name) == ["06"]


def _mirror_has(dataset: str, tmp_path) -> bool:
    from galaxy_helpers import data

    return data.dataset_available(dataset, cache_dir=tmp_path / "nothing_cached")


#: The start of each row's first cell, in the table's order.
LABELS = ["training loop", "representation extraction", "one search query", "one search query",
          "anomaly step", "synthetic sky generation", "channels-last encoder input",
          "AdamW step", "simulated labelling", "one decode of a catalogue",
          "independent repeats", "a dataset copied from the data mirror"]  # fmt: skip


@pytest.mark.slow
def test_the_smoke_table_has_every_row_and_only_numbers_of_its_results(tmp_path):
    bench = _bench()
    mirror_run = next(r for r in bench.RUNS if r.mirror)
    if not _mirror_has(mirror_run.dataset(smoke=True), tmp_path):
        pytest.skip(
            f"{mirror_run.dataset(smoke=True)} is not in a data mirror (GALAXY_DATA_MIRROR)"
        )
    out = tmp_path / "results"
    assert bench.main(["--smoke", "--out", str(out), "--date", "2030-01-02"]) == 0
    text = (out / "benchmarks_2030-01-02.md").read_text()
    assert text.startswith(bench.HEADER)
    assert "Smoke run" in text and "CPUs" in text and "torch " in text and "Load average" in text
    meta = json.loads((out / "benchmarks_2030-01-02.json").read_text())
    rows = _table_rows(text)
    assert len(rows) == len(bench.ROWS) == 12
    for (name, _), run, cells, label in zip(bench.ROWS, bench.RUNS, rows, LABELS, strict=True):
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


def test_every_run_has_its_row_in_the_table_s_order():
    bench = _bench()
    assert [name for name, _ in bench.ROWS] == list(bench.RUN_NAMES)
    assert len(set(bench.RUN_NAMES)) == len(bench.RUNS) == len(LABELS)
    for run in bench.RUNS:  # every smoke command is smaller than the real one
        assert run.smoke and run.smoke != run.args, run.name


@pytest.mark.parametrize("name", [name for name, _ in _bench().ROWS])
def test_each_row_renders_the_latest_committed_result_of_its_benchmark(name):
    """The row of every benchmark fits the shape of the result its script last committed,
    and quotes only its numbers."""
    rows = dict(_bench().ROWS)
    result = json.loads(latest_result(f"{name}_2*.json").read_text())
    for cell in rows[name](result):
        assert cell and "|" not in cell, name
        assert untraced_numbers(cell, result) == [], f"{name}: {cell}"


#: The numbers (and words) each new row must quote from its script's own 2026-12-04 result.
QUOTED_2026_12_04 = {
    "channels_last": ["1,433.8 img/s (1.44x NCHW's speed)", "351.7 img/s (1.07x", "993.9", "328.3"],
    "optimizer": ["optimizer 5.07 ms (0.42x", "whole step 0.70x", "12.0 ms", "best of 5"],
    "widget_simulation": ["200 labels", "1.07 s (2.21x", "2.36 s", "the same labels"],
    "decode_once": ["5,000 galaxies of `gz2_kaggle_subset`", "17.53 s in all (0.69x", "25.37 s"],
    "parallel_repeats": ["2 worker processes", "06 GZ2 ring probe 2.12 s (2.71x", "13.69 s"],
    "mirror_copy": ["5,001 files of `gz2_kaggle_subset`", "3.55 s (2.34x", "8.30 s", "of 4"],
}


@pytest.mark.parametrize("name", QUOTED_2026_12_04)
def test_the_new_rows_quote_their_2026_12_04_results(name):
    # each script's own run of that day, kept apart: the table's run replaced <name>_2026-12-04
    result = json.loads((RESULTS / "single_runs" / f"{name}_2026-12-04.json").read_text())
    text = " | ".join(dict(_bench().ROWS)[name](result))
    for quoted in QUOTED_2026_12_04[name]:
        assert quoted in text, f"{name}: {quoted!r} not in {text!r}"
    assert "**" not in text  # nothing to flag in these runs


def _flagged(name: str, change) -> str:
    result = json.loads((RESULTS / "single_runs" / f"{name}_2026-12-04.json").read_text())
    change(result)
    return " | ".join(dict(_bench().ROWS)[name](result))


def test_a_row_flags_a_slower_variant_different_outputs_and_missing_real_galaxies():
    def set_(path, value):
        def change(r):
            *keys, last = path
            for k in keys:
                r = r[k]
            r[last] = value

        return change

    assert "(0.90x NCHW's speed, **slower**)" in _flagged(
        "channels_last", set_(["speedup_encode"], 0.9)
    )
    assert "whole step 1.20x the default's time, **slower**" in _flagged(
        "optimizer", set_(["fused_step_over_default"], 1.2)
    )
    assert "**the fused kernel was not available**" in _flagged(
        "optimizer", set_(["config", "fused_kernel_used"], False)
    )
    assert "**different labels**" in _flagged("widget_simulation", set_(["same_labels"], False))
    assert "**different files**" in _flagged("mirror_copy", set_(["same_files"], False))
    assert "**different tables: 06 GZ2 ring probe**" in _flagged(
        "parallel_repeats", set_(["same_tables", "06 GZ2 ring probe"], False)
    )
    synthetic = _flagged("decode_once", set_(["config", "dataset"], "synthetic"))
    assert "synthetic sky: **no real galaxies" in synthetic and "GALAXY_DATA_MIRROR" in synthetic

    def sky_only(no_gz2):
        def change(r):
            for part in ("seconds", "speedup", "same_tables"):
                r[part] = {k: v for k, v in r[part].items() if "GZ2" not in k}
            r["no_gz2"] = no_gz2

        return change

    missing = _flagged("parallel_repeats", sky_only(False))
    assert "**no Galaxy Zoo 2 workloads" in missing and "GALAXY_DATA_MIRROR" in missing
    left_out = _flagged("parallel_repeats", sky_only(True))
    assert "left out (`--no-gz2`)" in left_out and "**" not in left_out


def test_the_benchmarks_get_the_data_mirror_as_an_absolute_path(tmp_path, monkeypatch):
    """The benchmarks run in the repository root: a mirror given relative to where the table
    was started must still name the same folder there."""
    bench = _bench()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("GALAXY_DATA_MIRROR", "../shared/data")
    env = bench.bench_env(cache=str(tmp_path / "cache"))
    assert env["GALAXY_DATA_MIRROR"] == str(tmp_path / "shared" / "data")
    assert env["GALAXY_HELPERS_CACHE"] == str(tmp_path / "cache")
    assert str(REPO) in env["PYTHONPATH"].split(os.pathsep)
    monkeypatch.delenv("GALAXY_HELPERS_CACHE", raising=False)
    assert "GALAXY_HELPERS_CACHE" not in bench.bench_env(cache=None)

    seen = {}

    def fake_call(cmd, cwd, env):  # the benchmark's process: records what it was given
        seen.update(cmd=cmd, cwd=cwd, env=env)
        Path(cmd[cmd.index("--json") + 1]).write_text("{}")
        return 0

    monkeypatch.setattr(bench.subprocess, "call", fake_call)
    run = next(r for r in bench.RUNS if r.name == "decode_once")
    record = bench.run_one(run, tmp_path, "2030-01-04", smoke=True, env=env)
    assert record["ok"] and seen["cwd"] == bench.REPO
    assert seen["env"]["GALAXY_DATA_MIRROR"] == str(tmp_path / "shared" / "data")


@pytest.mark.parametrize("mirror", ["empty folder", "unset"])
def test_a_benchmark_whose_dataset_is_not_in_the_mirror_is_not_run_and_says_why(
    tmp_path, monkeypatch, mirror
):
    bench = _bench()
    if mirror == "unset":
        monkeypatch.delenv("GALAXY_DATA_MIRROR", raising=False)
    else:
        (tmp_path / "mirror").mkdir()
        monkeypatch.setenv("GALAXY_DATA_MIRROR", str(tmp_path / "mirror"))

    def no_call(*args, **kwargs):
        raise AssertionError("a benchmark without its data must not be started")

    monkeypatch.setattr(bench.subprocess, "call", no_call)
    out = tmp_path / "results"
    args = ["--smoke", "--only", "mirror_copy", "--out", str(out), "--date", "2030-01-03"]
    assert bench.main(args) == 1
    why = json.loads((out / "benchmarks_2030-01-03.json").read_text())["runs"]["mirror_copy"]
    assert not why["ok"] and why["exit_code"] is None
    assert "gz_decals_examples" in why["not_run"] and "GALAXY_DATA_MIRROR" in why["not_run"]
    assert ("is not set" in why["not_run"]) == (mirror == "unset")
    assert not (out / "benchmarks_2030-01-03.md").exists()
    with pytest.raises(bench.MissingResults, match="mirror_copy: it copies gz_decals_examples"):
        bench.render(out, "2030-01-03")


def _committed_meta(table) -> dict:
    return json.loads(table.with_suffix(".json").read_text())


def test_the_real_commands_are_the_readme_table_s():
    """The README's commands are the ones the script runs, for every row of its table."""
    readme = (REPO / "README.md").read_text()
    in_table = _committed_meta(_latest_table())["runs"]
    for run in _bench().RUNS:
        if run.name not in in_table:
            continue  # not measured yet: test_the_committed_table_has_every_benchmark
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
    bench, runs = _bench(), _committed_meta(table)["runs"]
    names = [n for n in bench.RUN_NAMES if n in runs]
    assert bench.render(RESULTS, date, names) == table.read_text()


def test_the_committed_table_has_every_benchmark():
    table = _latest_table()
    bench, runs = _bench(), _committed_meta(table)["runs"]
    assert set(runs) <= set(bench.RUN_NAMES), f"{table.name} has rows bench_table.py no longer runs"
    if new := [n for n in bench.RUN_NAMES if n not in runs]:
        pytest.skip(
            f"{table.name} predates the rows {', '.join(new)}: regenerate the table "
            "(GALAXY_DATA_MIRROR=../shared/data python benchmarks/bench_table.py on a quiet "
            "machine) and quote it in README.md"
        )

"""The README's real-galaxy table is the benchmark's own output, never typed by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _bench():
    path = REPO / "benchmarks" / "bench_real_transfer.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _latest() -> tuple[Path, Path]:
    runs = sorted(RESULTS.glob("real_transfer_*.json"))
    assert runs, "no benchmarks/results/real_transfer_*.json"
    return runs[-1], runs[-1].with_suffix(".md")


def test_the_markdown_table_is_rendered_from_the_json():
    json_path, md_path = _latest()
    rows = json.loads(json_path.read_text())
    assert md_path.read_text() == _bench().markdown_table(rows)


def test_the_readme_quotes_the_latest_table_verbatim_and_names_its_run():
    json_path, md_path = _latest()
    readme = (REPO / "README.md").read_text()
    assert md_path.read_text() in readme
    assert json_path.name in readme


def test_the_run_measured_every_encoder_and_baseline_together():
    rows = json.loads(_latest()[0].read_text())
    assert {r["encoder"] for r in rows} >= {"course", "synthetic", "pixels", "random"}
    course = next(r for r in rows if r["encoder"] == "course")
    # the committed checkpoint is the one the notebooks use: its held-out Galaxy Zoo 2 numbers
    import galaxy_helpers.training as training

    _, meta = training.course_checkpoint()
    recorded = meta["metrics"]["test_gz2"]
    assert abs(course["gz2_test_mae_reduction"] - recorded["mae_reduction"]) < 0.01

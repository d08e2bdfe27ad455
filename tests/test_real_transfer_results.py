"""The README's real-galaxy table is the benchmark's own output, never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

from _bench_results import REPO, latest_result, load_benchmark


def _bench():
    return load_benchmark("bench_real_transfer")


def _latest() -> tuple[Path, Path]:
    run = latest_result("real_transfer_*.json")
    return run, run.with_suffix(".md")


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
    from galaxy_helpers.checkpoints import load_model

    _, meta = load_model("course")
    recorded = meta["metrics"]["test_gz2"]
    assert abs(course["gz2_test_mae_reduction"] - recorded["mae_reduction"]) < 0.01


def test_metrics_entries_of_the_comparison_tables():
    import pandas as pd
    import pytest

    from galaxy_helpers import transfer

    sim = pd.DataFrame(
        {
            "representation": [0.2, 0.1],
            "random weights": [0.05, 0.1],
            "raw pixels": [0.03, 0.02],
            "chance": [0.02, 0.01],
        },
        index=pd.Index(["ring", "merger"], name="tag"),
    )
    sim.loc["mean"] = sim.mean()
    m = transfer.similarity_metrics(sim)
    assert list(m) == [
        "gz2_precision_at_10",
        "gz2_precision_at_10_random_weights",
        "gz2_precision_at_10_raw_pixels",
        "gz2_chance_at_10",
        "gz2_mean_precision_at_10",
    ]
    assert m["gz2_precision_at_10"] == {"ring": 0.2, "merger": 0.1}
    assert m["gz2_mean_precision_at_10"] == pytest.approx(0.15)
    anom = pd.DataFrame(
        {
            "precision_at_50": [0.5],
            "average_precision": [0.4],
            "predicted_average_precision": [0.2],
            "n_interesting": [56.0],
        },
        index=["representation"],
    )
    a = transfer.anomaly_metrics(anom, repeats=3)
    assert a["gz2_n_interesting"] == 56 and a["gz2_repeats"] == 3
    assert a["gz2_average_precision"] == {"representation": 0.4}

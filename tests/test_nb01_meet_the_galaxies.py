"""Thresholds for notebook 01 (meet the galaxies), read from its metrics file.

The notebook is executed once per test session by the ``course_metrics`` fixture
(tests/conftest.py) in its quick profile.
"""

from __future__ import annotations

import nbformat
import pytest

from galaxy_helpers import synthetic

STEM = "01_meet_the_galaxies"


@pytest.fixture(scope="module")
def metrics(course_metrics):
    return course_metrics[STEM]


def test_course_sky_has_every_tag_at_a_realistic_rarity(metrics):
    n = metrics["n_galaxies"]
    assert n == 5000  # the quick profile's course sky, shared with the later notebooks
    assert set(metrics["tag_counts"]) == set(synthetic.TAGS)
    for tag, count in metrics["tag_counts"].items():
        # Galaxy Zoo Talk tags are rare: roughly 0.5% to 5% of galaxies
        assert 0.003 <= count / n <= 0.06, f"tag {tag}: {count} of {n} galaxies"


def test_volunteer_numbers_look_like_gz_decals(metrics):
    # most galaxies about 5-10 volunteers, a sizeable share 30-45
    assert 5 <= metrics["median_votes_per_galaxy"] <= 10
    assert 0.15 <= metrics["fraction_ge_30_votes"] <= 0.45
    assert 10 <= metrics["mean_votes_per_galaxy"] <= 25


def test_the_tree_thins_out_the_votes(metrics):
    asked = metrics["share_asked"]
    assert asked["smooth-or-featured-dr5"] == 1.0
    assert asked["spiral-winding-dr5"] <= asked["has-spiral-arms-dr5"]
    assert asked["has-spiral-arms-dr5"] <= asked["disk-edge-on-dr5"] < 1.0
    assert asked["how-rounded-dr5"] < 1.0


def test_confident_labels_are_mostly_right_but_cover_part_of_the_sky(metrics):
    confident = metrics["confident_smooth_or_featured"]
    assert confident["accuracy"] >= 0.9
    assert 0.05 <= confident["share_confident"] <= 0.8


def test_headline_numbers_for_the_summary_table(metrics):
    headline = metrics["headline"]
    assert headline["galaxies"] == metrics["n_galaxies"]
    assert headline["share with >= 30 votes"] == pytest.approx(
        metrics["fraction_ge_30_votes"], abs=1e-3
    )


def test_real_examples_are_shown_when_the_data_is_here(metrics):
    from galaxy_helpers import data

    if not data.dataset_available("gz_decals_examples"):
        assert metrics["real_examples_shown"] == 0
        pytest.skip("gz_decals_examples is not on this machine (set GALAXY_DATA_MIRROR)")
    assert metrics["real_examples_shown"] == 172


def test_executed_notebook_shows_its_figures_without_errors(course_output, metrics):
    nb = nbformat.read(str(course_output / "executed" / f"{STEM}.ipynb"), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    # tree, first galaxies, per-answer and per-tag montages, votes, unasked example,
    # fractions vs truth, faint drift (+ real beside synthetic when the data is here)
    assert len(figures) >= 8

"""Notebook 05's done-when (issue 5), checked on the metrics of the quick-profile course run.

The course run executes notebooks/05_find_interesting_anomalies.ipynb with its defaults: the
course checkpoint's representation of the course sky, the "merger hunter" simulated researcher
(about 1% of galaxies interesting), 200 labels in batches of 10, 5 repeats.
"""

import pytest

STEM = "05_find_interesting_anomalies"


@pytest.fixture(scope="module")
def metrics(course_metrics):
    return course_metrics[STEM]


def test_researcher_is_a_rare_one(metrics):
    # "a simulated researcher whose interesting galaxies are about 1% of the sample"
    assert 0.005 <= metrics["fraction_interesting"] <= 0.02
    assert metrics["n_interesting"] >= 50  # so that precision@50 can reach 1


def test_the_papers_protocol(metrics):
    assert metrics["n_labels"] == 200
    assert metrics["repeats"] >= 5


def test_widget_labels_were_written(metrics):
    assert metrics["widget_labels"] == metrics["n_labels"]


def test_gz2_experiment_is_the_papers(metrics):
    # The paper's Galaxy Zoo 2 experiment (odd > 0.9, round(5 x odd), 200 labels); its
    # thresholds are in tests/science_claims.py.
    if "gz2_average_precision" not in metrics:
        pytest.skip("the Galaxy Zoo 2 subset was not available to the course run")
    assert metrics["gz2_n_interesting"] == 56
    for key in ("gz2_average_precision", "gz2_precision_at_50"):
        assert set(metrics[key]) == {"representation", "random weights", "raw pixels"}, key

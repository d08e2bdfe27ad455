"""Notebook 06 (finetune to rings): what its metrics file must hold, read from the course run.

The notebook is executed once per test session by the ``course_metrics`` fixture
(tests/conftest.py) in its quick profile, starting from the committed course checkpoint. Its
thresholds (issue 6: 0.75 with 30 labels, 0.15 above scratch at 30 and 100; the Galaxy Zoo 2
ring probe against both baselines) are in tests/science_claims.py.
"""

from __future__ import annotations

import pytest

STEM = "06_finetune_rings"
METHODS = ("pretrained_head", "pretrained_full", "scratch")


@pytest.fixture(scope="module")
def metrics(course_metrics):
    return course_metrics[STEM]


@pytest.fixture(scope="module")
def acc(metrics):
    return metrics["ring_balanced_accuracy"]


def test_experiment_is_the_course_one(metrics, acc):
    assert metrics["checkpoint"] == "course"
    assert metrics["label"] == "tag_ring"
    # rings against other face-on disks, on a balanced test set, several repeats
    assert metrics["population"] == "truth_type in ['featured']"
    assert metrics["test_per_class"] >= 50
    assert metrics["repeats"] >= 3
    for method in METHODS:
        assert {"10", "30", "100"} <= set(acc[method]), method
        for budget, value in acc[method].items():
            assert 0.0 <= value <= 1.0, (method, budget)


def test_real_rings_are_reported_when_the_data_are_there(metrics):
    real = metrics["real_ring_balanced_accuracy"]
    if not real:
        pytest.skip("the real GZ DECaLS ring galaxies were not available to the course run")
    for method in ("pretrained_head", "scratch"):
        assert {"10", "30", "100"} <= set(real[method]), method
        assert all(0.0 <= v <= 1.0 for v in real[method].values())

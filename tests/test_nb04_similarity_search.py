"""Notebook 04 (similarity search) in the quick-profile course run: its metrics file.

Done when (issue 4): mean precision@10 over the tags with at least 20 members is at least 0.5,
and beats both baselines (PCA of raw pixels, the same architecture with random weights) on the
mean and on at least 80% of those tags.
"""

import numpy as np
import pytest

STEM = "04_similarity_search"


@pytest.fixture()
def metrics(course_metrics):
    return course_metrics[STEM]


def test_every_common_tag_is_evaluated(metrics):
    members = metrics["tag_members"]
    assert set(metrics["precision_at_10"]) == set(members)
    assert len(members) >= 5 and min(members.values()) >= 20


def test_real_ring_search_when_data_is_there(metrics):
    if "real_ring_precision_at_10" not in metrics:
        pytest.skip("real ring data not available in this run")
    assert metrics["real_galaxies"] == 470 + 172


def _gz2(metrics):
    if "gz2_precision_at_10" not in metrics:
        pytest.skip("the Galaxy Zoo 2 subset was not available to the course run")
    return metrics


def test_gz2_search_reports_each_tag_and_both_baselines(metrics):
    m = _gz2(metrics)
    tags = set(m["gz2_precision_at_10"])
    assert tags == {"ring", "merger", "irregular"}
    assert m["gz2_mean_precision_at_10"] == pytest.approx(
        np.mean(list(m["gz2_precision_at_10"].values()))
    )
    for baseline in ("random_weights", "raw_pixels"):
        assert set(m[f"gz2_precision_at_10_{baseline}"]) == tags

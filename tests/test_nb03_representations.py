"""Notebook 03 (representations) in the quick-profile course run: its metrics file."""

STEM = "03_representations"


def test_representation_extracted_for_every_galaxy(course_metrics):
    m = course_metrics[STEM]
    assert m["n_galaxies"] == 5000
    assert m["representation_dim"] >= 64


def test_pca_keeps_most_variance_in_few_components(course_metrics):
    m = course_metrics[STEM]
    assert 0.5 <= m["explained_variance_10"] <= m["explained_variance_40"] <= 1.0

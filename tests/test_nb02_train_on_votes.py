"""Notebook 02 (train on every question): what its metrics file must hold. The science claims
(confident accuracy, vote-fraction error against the mean baseline, one view and 8 views) are in
tests/science_claims.py, asserted by tests/test_science_claims.py."""

NB = "02_train_on_votes"


def test_enough_confident_test_galaxies_for_the_accuracy_to_mean_something(course_metrics):
    n = course_metrics[NB]["n_confident"]
    for question in ("smooth-or-featured-dr5", "disk-edge-on-dr5"):
        assert n[question] >= 20, (question, n[question])


def test_test_time_augmentation_is_reported_next_to_one_view(course_metrics):
    m = course_metrics[NB]
    assert m["tta"] is True
    assert 0 < m["mae_reduction_single_view"] < 1 and 0 < m["mae_reduction"] < 1


def test_trained_for_real(course_metrics):
    m = course_metrics[NB]
    assert m["epochs_run"] >= 1 and m["n_train"] >= 1000 and m["n_test"] >= 100

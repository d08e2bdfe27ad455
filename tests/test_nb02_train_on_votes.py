"""Notebook 02 (train on every question): the thresholds of issue 3's "done when".

The 30% target is met with test-time augmentation (predictions averaged over each galaxy's 8
orientations); the one-view number is reported and guarded beside it.
"""

NB = "02_train_on_votes"


def test_accuracy_on_confident_test_galaxies(course_metrics):
    m = course_metrics[NB]
    acc, n = m["accuracy_confident"], m["n_confident"]
    for question in ("smooth-or-featured-dr5", "disk-edge-on-dr5"):
        # Enough confident galaxies for the accuracy to mean something.
        assert n[question] >= 20, (question, n[question])
        assert acc[question] >= 0.90, (question, acc[question])


def test_vote_fractions_beat_the_mean_baseline_by_30_percent(course_metrics):
    m = course_metrics[NB]
    assert m["vote_fraction_mae"] <= 0.7 * m["vote_fraction_mae_mean_baseline"], m
    assert m["mae_reduction"] >= 0.30


def test_test_time_augmentation_is_reported_next_to_one_view(course_metrics):
    # The headline averages over 8 orientations (tta); the one-view number stays visible and
    # guarded at the level it reaches (29.9% on seed 0; 29.5-29.9% over seeds 0 to 2).
    m = course_metrics[NB]
    assert m["tta"] is True
    assert m["mae_reduction_single_view"] >= 0.27
    assert m["mae_reduction"] > m["mae_reduction_single_view"]


def test_trained_for_real(course_metrics):
    m = course_metrics[NB]
    assert m["epochs_run"] >= 1 and m["n_train"] >= 1000 and m["n_test"] >= 100

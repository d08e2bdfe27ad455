"""Evaluation numbers against hand-computable cases, and the figures."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from toy_catalogue import make_toy_catalogue

from galaxy_helpers.evaluation import (
    calibration_table,
    evaluate,
    evaluate_concentrations,
    mean_fraction_baseline,
    most_wrong,
    plot_calibration,
    plot_predicted_vs_volunteer,
    predictive_coverage,
    show_most_wrong,
)
from galaxy_helpers.schema import DECALS_DR5, vote_counts, vote_fractions


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_catalogue(tmp_path_factory.mktemp("toy_eval"), n=40, size=32, seed=2)


def _perfect_concentrations(cat, scale=200.0):
    """Concentrations whose Dirichlet mean is (almost) the volunteer fractions."""
    fr = vote_fractions(vote_counts(cat, DECALS_DR5), DECALS_DR5)
    return fr * scale + 1e-3


def test_perfect_predictions_score_perfectly(toy):
    res = evaluate_concentrations(_perfect_concentrations(toy), toy, toy)
    s = res.summary()
    assert s["vote_fraction_mae"] < 1e-3
    assert s["vote_fraction_mae_mean_baseline"] > 0.05
    assert s["mae_reduction"] > 0.95
    assert s["accuracy_confident"]["smooth-or-featured-dr5"] == 1.0
    pq = res.per_question.set_index("question")
    # Only questions somebody answered have confident galaxies / an error.
    assert np.isnan(pq.loc["bar-dr5", "mae"]) and pq.loc["bar-dr5", "n_asked"] == 0
    assert "bar-dr5" not in s["accuracy_confident"]


def test_baseline_prediction_scores_the_baseline_and_wrong_answers_score_zero(toy):
    counts = vote_counts(toy, DECALS_DR5)
    base = mean_fraction_baseline(counts, DECALS_DR5)
    # smooth-or-featured is always asked: its baseline is the plain mean fraction.
    fr = vote_fractions(counts, DECALS_DR5)
    np.testing.assert_allclose(base[0:3], fr[:, 0:3].mean(0))
    res = evaluate_concentrations(np.tile(base * 1000 + 1e-6, (len(toy), 1)), toy, toy)
    s = res.summary()
    assert s["vote_fraction_mae"] == pytest.approx(s["vote_fraction_mae_mean_baseline"], rel=1e-3)
    # Predict the opposite of the volunteers for smooth-or-featured: accuracy 0.
    conc = _perfect_concentrations(toy)
    conc[:, [0, 1]] = conc[:, [1, 0]]
    flipped = evaluate_concentrations(conc, toy, toy).summary()
    assert flipped["accuracy_confident"]["smooth-or-featured-dr5"] == 0.0


def test_hand_computed_mae_and_min_votes():
    cols = DECALS_DR5.answer_columns
    rows = []
    for smooth, feat in [(8, 2), (1, 1)]:
        r = dict.fromkeys(cols, 0)
        r["smooth-or-featured-dr5_smooth"] = smooth
        r["smooth-or-featured-dr5_featured-or-disk"] = feat
        rows.append({"id_str": f"g{smooth}", "file_loc": "/nowhere.png", **r})
    cat = pd.DataFrame(rows)
    conc = np.ones((2, 34))
    conc[:, 0:3] = [[5, 4, 1], [5, 4, 1]]  # predicts 0.5 / 0.4 / 0.1
    res = evaluate_concentrations(conc, cat, cat, min_votes=3)
    # Only galaxy 0 (10 votes) counts: |0.5-0.8| + |0.4-0.2| + |0.1-0| over 3 answers = 0.2.
    assert res.summary()["vote_fraction_mae"] == pytest.approx(0.2)
    assert res.per_question.loc[0, "n_asked"] == 1
    res_all = evaluate_concentrations(conc, cat, cat, min_votes=1)
    assert res_all.per_question.loc[0, "n_asked"] == 2


def test_most_wrong_ranks_by_error(toy):
    conc = _perfect_concentrations(toy)
    conc[5, [0, 1]] = conc[5, [1, 0]]  # one galaxy badly wrong
    res = evaluate_concentrations(conc, toy, toy)
    table = most_wrong(res, n=3)
    assert table["id_str"].iloc[0] == toy["id_str"].iloc[5]
    assert table["error"].is_monotonic_decreasing
    q_table = most_wrong(res, n=2, question="smooth-or-featured")
    assert q_table["id_str"].iloc[0] == toy["id_str"].iloc[5]
    assert q_table["volunteer_answer"].iloc[0] != q_table["predicted_answer"].iloc[0]


def test_figures_and_calibration_table(toy):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    conc = rng.uniform(1, 30, size=(len(toy), 34))
    res = evaluate_concentrations(conc, toy, toy)
    table = calibration_table(res, n_bins=5)
    assert table["n"].sum() == sum(
        res.asked[:, q].sum() * (b - a) for q, (a, b) in enumerate(DECALS_DR5.answer_slices)
    )
    for fig in (
        plot_predicted_vs_volunteer(res),
        plot_calibration(res),
        show_most_wrong(res, n=4, ncols=4),
    ):
        assert fig.axes
        plt.close(fig)


def test_evaluate_runs_a_model_on_catalogue_images(toy):
    from galaxy_helpers.models import GalaxyModel

    torch.manual_seed(0)
    model = GalaxyModel("test_convnext")
    model.metadata = {"image_size": 32, "mean": [0.1] * 3, "std": [0.2] * 3}
    res = evaluate(model, toy, toy, progress=False)
    assert res.predicted.shape == (len(toy), 34)
    for a, b in DECALS_DR5.answer_slices:
        np.testing.assert_allclose(res.predicted[:, a:b].sum(1), 1.0, rtol=1e-6)
    # tta=True predicts over the 8 orientations: the same as evaluating those predictions.
    from galaxy_helpers.images import load_images
    from galaxy_helpers.models import predict_concentrations

    images = load_images(toy["file_loc"].tolist(), 32, progress=False)
    conc = predict_concentrations(model, images, progress=False, tta=True)
    tta = evaluate(model, toy, toy, images=images, progress=False, tta=True)
    np.testing.assert_allclose(
        tta.predicted, evaluate_concentrations(conc, toy, toy).predicted, rtol=1e-5
    )
    assert not np.allclose(tta.predicted, res.predicted)
    model.metadata = {}
    with pytest.raises(ValueError, match="image_size"):
        evaluate(model, toy, progress=False)


def _calibration_toy(scale: float, n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    tree = DECALS_DR5
    alpha = np.array([4.0, 2.0, 1.0])
    start, stop = tree.answer_slices[0]
    counts = np.zeros((n, tree.n_answers), dtype=int)
    for i in range(n):  # the Dirichlet-Multinomial the model claims, 3 to 12 votes each
        counts[i, start:stop] = rng.multinomial(rng.integers(3, 13), rng.dirichlet(alpha))
    cat = pd.DataFrame(counts, columns=tree.answer_columns).assign(
        id_str=[str(i) for i in range(n)]
    )
    conc = np.ones((n, tree.n_answers))
    conc[:, start:stop] = alpha * scale  # scale > 1: same means, falsely sure
    return evaluate_concentrations(conc, cat)


def test_predictive_coverage_is_68_and_95_for_a_calibrated_model_with_few_votes():
    honest = predictive_coverage(_calibration_toy(1.0)).set_index("question")
    row = honest.loc["smooth-or-featured-dr5"]
    assert abs(row["within_68"] - 0.68) < 0.02 and abs(row["within_95"] - 0.95) < 0.01
    sure = predictive_coverage(_calibration_toy(30.0)).set_index("question")
    assert sure.loc["smooth-or-featured-dr5", "within_68"] < row["within_68"] - 0.05

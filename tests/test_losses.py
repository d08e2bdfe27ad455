"""The Dirichlet-Multinomial loss against scipy's independent implementation."""

import numpy as np
import pytest
import torch
from scipy.stats import dirichlet_multinomial

from galaxy_helpers.losses import (
    dirichlet_multinomial_log_prob,
    dirichlet_multinomial_loss,
    question_matrix,
)

# Three questions with 3, 2 and 4 answers (like a small decision tree).
SLICES = [(0, 3), (3, 5), (5, 9)]


def _scipy_log_prob(counts, conc, slices):
    out = np.zeros((counts.shape[0], len(slices)))
    for b in range(counts.shape[0]):
        for q, (s, e) in enumerate(slices):
            n = counts[b, s:e].sum()
            if n == 0:
                continue  # unasked question: contributes nothing
            out[b, q] = dirichlet_multinomial.logpmf(counts[b, s:e], conc[b, s:e], n)
    return out


@pytest.mark.parametrize("max_votes", [5, 50, 5000])
def test_matches_scipy_including_unasked_questions(max_votes):
    rng = np.random.default_rng(max_votes)
    counts = rng.integers(0, max_votes, size=(16, 9)).astype(float)
    # Force unasked questions (all-zero votes) in some rows.
    counts[0, 3:5] = 0
    counts[1, :] = 0
    counts[2, 5:9] = 0
    conc = rng.uniform(1.0, 101.0, size=(16, 9))
    ours = dirichlet_multinomial_log_prob(torch.tensor(counts), torch.tensor(conc), SLICES)
    expected = _scipy_log_prob(counts, conc, SLICES)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert ours[1].abs().sum().item() == 0.0
    assert ours[0, 1].item() == 0.0 and ours[2, 2].item() == 0.0


def test_float32_inputs_still_accurate_for_large_counts():
    rng = np.random.default_rng(3)
    counts = rng.integers(1000, 20000, size=(4, 9)).astype(np.float32)
    conc = rng.uniform(1.0, 101.0, size=(4, 9)).astype(np.float32)
    ours = dirichlet_multinomial_log_prob(torch.tensor(counts), torch.tensor(conc), SLICES)
    expected = _scipy_log_prob(counts.astype(float), conc.astype(float), SLICES)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5)


def test_loss_is_sum_over_questions_mean_over_batch():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 10, size=(8, 9)).astype(float)
    conc = rng.uniform(1.0, 50.0, size=(8, 9))
    lp = _scipy_log_prob(counts, conc, SLICES)
    loss = dirichlet_multinomial_loss(torch.tensor(counts), torch.tensor(conc), SLICES)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(-lp.sum(1).mean(), rel=1e-5)
    per = dirichlet_multinomial_loss(
        torch.tensor(counts), torch.tensor(conc), SLICES, reduction="none"
    )
    np.testing.assert_allclose(per.numpy(), -lp.sum(1), rtol=1e-5)
    total = dirichlet_multinomial_loss(torch.tensor(counts), torch.tensor(conc), SLICES, "sum")
    assert total.item() == pytest.approx(-lp.sum(), rel=1e-5)


def test_gradients_finite_at_extremes_and_zero_for_unasked():
    counts = torch.tensor(
        [
            [0, 0, 0, 20000, 0, 1, 0, 0, 0],  # huge counts, unasked first question
            [40, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    logits = torch.tensor(
        np.random.default_rng(1).normal(0, 30, size=(3, 9)), dtype=torch.float32
    ).requires_grad_(True)
    conc = torch.sigmoid(logits) * 100 + 1  # the model head: concentrations in (1, 101)
    loss = dirichlet_multinomial_loss(counts, conc, SLICES)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[2].abs().sum().item() == 0.0  # no votes at all -> no gradient
    assert logits.grad[0, :3].abs().sum().item() == 0.0  # unasked question -> no gradient


def test_loss_prefers_concentrations_matching_vote_fractions():
    counts = torch.tensor([[30.0, 10.0, 0.0, 5.0, 5.0, 0, 0, 0, 0]])
    good = torch.tensor([[30.0, 10.0, 1.0, 20.0, 20.0, 5, 5, 5, 5]])
    bad = torch.tensor([[1.0, 30.0, 10.0, 5.0, 30.0, 5, 5, 5, 5]])
    assert dirichlet_multinomial_loss(counts, good, SLICES) < dirichlet_multinomial_loss(
        counts, bad, SLICES
    )


def test_question_matrix_and_shape_errors():
    m = question_matrix(SLICES)
    assert m.shape == (9, 3)
    assert m.sum(0).tolist() == [3, 2, 4]
    with pytest.raises(ValueError, match="answers"):
        dirichlet_multinomial_loss(torch.ones(2, 8), torch.ones(2, 8) * 2, SLICES)
    with pytest.raises(ValueError, match="shape"):
        dirichlet_multinomial_loss(torch.ones(2, 9), torch.ones(3, 9) * 2, SLICES)
    with pytest.raises(ValueError, match="reduction"):
        dirichlet_multinomial_loss(torch.ones(2, 9), torch.ones(2, 9) * 2, SLICES, "avg")


def test_toy_loss_table_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    from galaxy_helpers.losses import plot_toy_loss, toy_loss_table

    table = toy_loss_table(
        [7, 3, 0],
        {"right and sure": [70, 30, 1], "vague": [1, 1, 1], "wrong and sure": [10, 80, 10]},
    )
    loss = table["loss (-log p)"]
    assert loss["right and sure"] < loss["vague"] < loss["wrong and sure"]
    expected = -dirichlet_multinomial.logpmf([7, 3, 0], [70, 30, 1], 10)
    assert loss["right and sure"] == pytest.approx(expected, abs=1e-3)
    assert table.loc["vague", "expected fractions"] == [0.33, 0.33, 0.33]
    with pytest.raises(ValueError, match="2 concentrations for 3"):
        toy_loss_table([7, 3, 0], {"bad": [1, 2]})
    fig = plot_toy_loss([7, 3])
    assert len(fig.axes[0].lines) == 5
    with pytest.raises(ValueError, match="two-answer"):
        plot_toy_loss([7, 3, 1])

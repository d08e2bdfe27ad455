"""The Dirichlet-Multinomial loss on raw Galaxy Zoo vote counts (Walmsley et al. 2022).

Per question the network predicts Dirichlet concentrations ``a_1..a_m``; the probability of
the counts ``k_1..k_m`` (``N = sum k``, ``A = sum a``) is::

    log p(k | a) = lgamma(N+1) + lgamma(A) - lgamma(N+A)
                   - sum_i [ lgamma(k_i+1) + lgamma(a_i) - lgamma(k_i+a_i) ]

The loss is ``-log p`` summed over questions, averaged over the batch; an unasked question
(``N = 0``) contributes exactly 0, so the data needs no masking.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import schema as schema_mod

__all__ = [
    "question_matrix",
    "dirichlet_multinomial_log_prob",
    "dirichlet_multinomial_loss",
    "numpy_log_prob",
    "toy_loss_table",
    "plot_toy_loss",
]


def _answer_slices(schema_or_slices) -> list[tuple[int, int]]:
    """Accept a Schema (anything with ``answer_slices``) or a list of (start, stop) pairs."""
    slices = getattr(schema_or_slices, "answer_slices", schema_or_slices)
    slices = [(int(a), int(b)) for a, b in slices]
    if not slices:
        raise ValueError("the schema has no questions: nothing to compute a loss over")
    for (a, b), (c, _) in zip(slices, slices[1:], strict=False):
        if not (a < b <= c):
            raise ValueError(f"answer slices must be increasing and non-empty, got {slices}")
    return slices


def question_matrix(schema_or_slices, dtype=torch.float64, device=None) -> torch.Tensor:
    """One-hot matrix ``(n_answers, n_questions)`` mapping each answer to its question.

    Parameters
    ----------
    schema_or_slices : a Schema (its ``answer_slices``) or a list of (start, stop).
    dtype, device : torch dtype and device of the result.

    Returns
    -------
    torch.Tensor ``M`` such that ``counts @ M`` gives the total votes of each question.
    """
    slices = _answer_slices(schema_or_slices)
    n_answers = slices[-1][1]
    m = torch.zeros(n_answers, len(slices), dtype=dtype, device=device)
    for q, (start, stop) in enumerate(slices):
        m[start:stop, q] = 1
    return m


def dirichlet_multinomial_log_prob(
    counts: torch.Tensor, concentrations: torch.Tensor, schema_or_slices
) -> torch.Tensor:
    """Log-probability of the vote counts of every question, ``(B, n_questions)``.

    Parameters
    ----------
    counts : tensor or array (B, n_answers) of vote counts, in ``schema.answer_columns`` order.
    concentrations : tensor (B, n_answers) of positive Dirichlet concentrations.
    schema_or_slices : Schema or list of (start, stop): which columns form each question.

    Returns
    -------
    torch.Tensor (B, n_questions), 0 where a question has no votes; float64 (float32 on MPS).
    """
    concentrations = torch.as_tensor(concentrations)
    # float64 keeps lgamma differences exact for counts in the thousands, at negligible cost
    # next to the CNN (batch x answers numbers); MPS has no float64.
    dtype = torch.float32 if concentrations.device.type == "mps" else torch.float64
    a = concentrations.to(dtype)
    k = torch.as_tensor(counts, device=a.device).to(dtype)
    if k.shape != a.shape:
        raise ValueError(
            f"counts have shape {tuple(k.shape)} but concentrations {tuple(a.shape)}: "
            "both must be (batch, n_answers) in the schema's answer order"
        )
    m = question_matrix(schema_or_slices, dtype=dtype, device=a.device)
    if m.shape[0] != a.shape[1]:
        raise ValueError(
            f"the schema has {m.shape[0]} answers but the model gives {a.shape[1]} "
            "concentrations: use the same schema for the model and the loss"
        )
    n_votes = k @ m  # (B, Q)
    total_conc = a @ m
    per_answer = torch.lgamma(k + 1) + torch.lgamma(a) - torch.lgamma(k + a)
    log_prob = (
        torch.lgamma(n_votes + 1)
        + torch.lgamma(total_conc)
        - torch.lgamma(n_votes + total_conc)
        - per_answer @ m
    )
    # Unasked questions: the formula is 0 mathematically; make it exactly 0 (and its gradient).
    return torch.where(n_votes > 0, log_prob, torch.zeros_like(log_prob))


def dirichlet_multinomial_loss(
    counts: torch.Tensor,
    concentrations: torch.Tensor,
    schema_or_slices,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative log-likelihood summed over questions, averaged over the batch.

    Parameters
    ----------
    counts, concentrations, schema_or_slices : see :func:`dirichlet_multinomial_log_prob`.
    reduction : ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (per-galaxy, ``(B,)``).

    Returns
    -------
    torch.Tensor: scalar (or ``(B,)``) loss in float32.

    Examples
    --------
    >>> from galaxy_helpers.schema import DECALS_DR5
    >>> loss = dirichlet_multinomial_loss(counts, model(images), DECALS_DR5)  # doctest: +SKIP
    """
    reduce = {"mean": torch.mean, "sum": torch.sum, "none": torch.as_tensor}
    if reduction not in reduce:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    per_galaxy = -dirichlet_multinomial_log_prob(counts, concentrations, schema_or_slices).sum(1)
    return reduce[reduction](per_galaxy).float()


def numpy_log_prob(counts: np.ndarray, concentrations: np.ndarray, schema_or_slices) -> np.ndarray:
    """Numpy convenience for notebooks: ``(B, n_questions)`` log-probabilities."""
    with torch.no_grad():
        out = dirichlet_multinomial_log_prob(
            torch.as_tensor(np.asarray(counts, dtype=np.float64)),
            torch.as_tensor(np.asarray(concentrations, dtype=np.float64)),
            schema_or_slices,
        )
    return out.numpy()


def toy_loss_table(votes, predictions: dict):
    """The loss of a few candidate predictions for one question's votes (for teaching).

    Parameters
    ----------
    votes : vote counts of one question, e.g. ``[7, 3, 0]``.
    predictions : ``{label: concentrations}``, each as long as ``votes``.

    Returns
    -------
    DataFrame, one row per prediction: concentrations, fractions, total and ``-log p``.
    """
    votes = np.asarray(votes, dtype=np.float64)
    rows = []
    for label, conc in predictions.items():
        conc = np.asarray(conc, dtype=np.float64)
        if conc.shape != votes.shape:
            raise ValueError(f"{label!r}: {len(conc)} concentrations for {len(votes)} answers")
        lp = numpy_log_prob(votes[None], conc[None], [(0, len(votes))])[0, 0]
        rows.append(
            {
                "prediction": label,
                "concentrations": np.round(conc, 2).tolist(),
                "expected fractions": np.round(conc / conc.sum(), 2).tolist(),
                "total concentration": round(float(conc.sum()), 1),
                "loss (-log p)": round(float(-lp), 3),
            }
        )
    return pd.DataFrame(rows).set_index("prediction")


def loss_by_question(catalogue, concentrations=None, schema=None, labels=None):
    """Each galaxy's loss, question by question (0 where a question was not asked).

    Parameters
    ----------
    catalogue : DataFrame with one vote-count column per answer of ``schema``.
    concentrations : ``(N, n_answers)``; default all 2.0 (an untrained, undecided model).
    schema : the decision tree (default DECaLS DR5).
    labels : one row label per galaxy (default ``id_str``).

    Returns
    -------
    DataFrame: one column per question (``-log p``), ``questions asked`` and ``total``.
    """
    tree = schema_mod.get_schema(schema or schema_mod.DECALS_DR5)
    counts = schema_mod.vote_counts(catalogue, tree)
    conc = np.full(counts.shape, 2.0) if concentrations is None else np.asarray(concentrations)
    loss = -numpy_log_prob(counts, conc, tree.answer_slices)
    loss[np.abs(loss) < 1e-12] = 0.0
    names = [q.name.removesuffix(tree.suffix) for q in tree.questions]
    table = pd.DataFrame(np.round(loss, 2), columns=names)
    table.insert(0, "questions asked", (schema_mod.total_votes(counts, tree) > 0).sum(axis=1))
    table["total"] = np.round(loss.sum(axis=1), 2)
    index = labels if labels is not None else catalogue["id_str"].astype(str).to_numpy()
    table.index = pd.Index(index, name="galaxy")
    return table


def plot_toy_loss(votes, totals=(3.0, 10.0, 30.0, 100.0), ax=None):
    """Loss of a two-answer question against its predicted first fraction; returns a Figure."""
    import matplotlib.pyplot as plt

    votes = np.asarray(votes, dtype=np.float64)
    if votes.shape != (2,):
        raise ValueError("plot_toy_loss shows a two-answer question: pass votes like [7, 3]")
    fig, ax = plt.subplots(figsize=(6, 3.5)) if ax is None else (ax.figure, ax)
    p = np.linspace(0.01, 0.99, 197)
    for total in totals:
        conc = np.column_stack([p * total, (1 - p) * total])
        loss = -numpy_log_prob(np.tile(votes, (len(p), 1)), conc, [(0, 2)])[:, 0]
        ax.plot(p, loss, label=f"total concentration {total:g}")
    ax.axvline(votes[0] / votes.sum(), color="k", ls=":", lw=1, label="volunteer fraction")
    ax.set_xlabel("predicted fraction of the first answer")
    ax.set_ylabel("loss  (-log p)")
    ax.set_ylim(0, None)
    ax.set_title(f"votes {int(votes[0])} : {int(votes[1])}", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig

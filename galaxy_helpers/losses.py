"""The Dirichlet-Multinomial loss: learning from raw Galaxy Zoo vote counts.

Galaxy Zoo does not give one label per galaxy: it gives, for every question of a decision
tree, how many volunteers chose each answer. Walmsley et al. (2022) train on those counts
directly. For each question the network predicts Dirichlet concentrations ``a_1..a_m``; the
probability of the observed counts ``k_1..k_m`` (``N = sum k``, ``A = sum a``) is the
Dirichlet-Multinomial::

    log p(k | a) = lgamma(N+1) + lgamma(A) - lgamma(N+A)
                   - sum_i [ lgamma(k_i+1) + lgamma(a_i) - lgamma(k_i+a_i) ]

The loss is ``-log p`` summed over the questions of the schema and averaged over the batch.
A question nobody was asked (``N = 0``) contributes exactly 0, which is how the tree's
unasked questions are handled without any masking in the data.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "question_matrix",
    "dirichlet_multinomial_log_prob",
    "dirichlet_multinomial_loss",
    "DirichletMultinomialLoss",
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
    schema_or_slices : Schema or list of (start, stop)
        The schema (its ``answer_slices`` are used) or the slices themselves.
    dtype, device : torch dtype and device of the result.

    Returns
    -------
    torch.Tensor
        ``M`` such that ``counts @ M`` gives the total votes of each question.
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
    counts : tensor or array (B, n_answers)
        Vote counts (non-negative integers; floats are accepted), columns in the order of
        ``schema.answer_columns``.
    concentrations : tensor (B, n_answers)
        Positive Dirichlet concentrations (the model output).
    schema_or_slices : Schema or list of (start, stop)
        Which columns belong to which question.

    Returns
    -------
    torch.Tensor
        ``(B, n_questions)`` log-probabilities, exactly 0 for questions with no votes.
        Computed in float64 (float32 on MPS) for stability with large counts.
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
    reduction : {"mean", "sum", "none"}
        ``"mean"`` (default) averages the per-galaxy loss over the batch, ``"sum"`` adds it,
        ``"none"`` returns the ``(B,)`` per-galaxy losses.

    Returns
    -------
    torch.Tensor
        Scalar (or ``(B,)``) loss in float32.

    Examples
    --------
    >>> from galaxy_helpers.schema import DECALS_DR5
    >>> loss = dirichlet_multinomial_loss(counts, model(images), DECALS_DR5)  # doctest: +SKIP
    """
    per_galaxy = -dirichlet_multinomial_log_prob(counts, concentrations, schema_or_slices).sum(1)
    if reduction == "mean":
        out = per_galaxy.mean()
    elif reduction == "sum":
        out = per_galaxy.sum()
    elif reduction == "none":
        out = per_galaxy
    else:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return out.float()


class DirichletMultinomialLoss(torch.nn.Module):
    """``nn.Module`` wrapper: ``loss_fn(concentrations, counts)`` like other torch losses.

    Parameters
    ----------
    schema : Schema
        Decision tree whose ``answer_slices`` group the columns into questions.
    reduction : {"mean", "sum", "none"}
    """

    def __init__(self, schema, reduction: str = "mean"):
        super().__init__()
        self.slices = _answer_slices(schema)
        self.reduction = reduction

    def forward(self, concentrations: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return dirichlet_multinomial_loss(counts, concentrations, self.slices, self.reduction)


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
    votes : sequence of int
        Vote counts of one question, e.g. ``[7, 3, 0]`` (7 smooth, 3 featured, 0 artifact).
    predictions : dict
        ``{label: concentrations}``, each a sequence as long as ``votes``.

    Returns
    -------
    pandas.DataFrame
        One row per prediction: its concentrations, the implied vote fractions
        (``a_i / sum a``), the total concentration (confidence) and the loss ``-log p``.
    """
    import pandas as pd

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
    """Each galaxy's loss, question by question: where the votes of a mixed catalogue count.

    A galaxy contributes to a question's loss only when volunteers answered it (N > 0); an
    unasked question adds exactly 0. So a real Galaxy Zoo 2 galaxy with votes on three
    questions and a synthetic galaxy with votes on the whole tree train one network together,
    the way Zoobot mixes catalogues of several surveys.

    Parameters
    ----------
    catalogue : pandas.DataFrame with one vote-count column per answer of ``schema``.
    concentrations : ``(N, n_answers)`` predicted concentrations; default all 2.0 (an
        untrained, undecided model), enough to see which questions count.
    schema : the decision tree (default DECaLS DR5).
    labels : one row label per galaxy (default ``id_str``).

    Returns
    -------
    pandas.DataFrame: one row per galaxy, one column per question (``-log p``; 0 where
    unasked), plus ``questions asked`` and ``total``.
    """
    import pandas as pd

    from . import schema as schema_mod

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
    """Loss of a two-answer question against the predicted fraction of the first answer,
    for several total concentrations (how sure the model is).

    The minimum sits at the volunteers' fraction; a confident model (large total) is
    rewarded near it and punished hard away from it. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    votes = np.asarray(votes, dtype=np.float64)
    if votes.shape != (2,):
        raise ValueError("plot_toy_loss shows a two-answer question: pass votes like [7, 3]")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
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

"""How good is a model trained on votes: per-question error against a mean-fraction baseline,
accuracy on confident galaxies, calibration, and the galaxies it gets most wrong.

>>> result = evaluate(model, sky[sky.split == "test"], baseline_catalogue=sky[sky.split == "train"])
>>> result.per_question            # one row per question
>>> result.summary()               # the numbers notebook 02 records
>>> plot_predicted_vs_volunteer(result); plot_calibration(result); show_most_wrong(result)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import schema as schema_mod
from .models import predict_concentrations, predict_fractions

__all__ = [
    "EvaluationResult",
    "evaluate",
    "evaluate_concentrations",
    "calibration_table",
    "mean_fraction_baseline",
    "plot_predicted_vs_volunteer",
    "plot_calibration",
    "predictive_coverage",
    "most_wrong",
    "show_most_wrong",
    "plot_history",
]


def mean_fraction_baseline(counts: np.ndarray, schema) -> np.ndarray:
    """Mean vote fraction of every answer over the galaxies asked each question, ``(n_answers,)``
    (the simplest "model": predict these fractions for every galaxy)."""
    schema = schema_mod.get_schema(schema)
    fractions = schema_mod.vote_fractions(counts, schema)
    asked = schema_mod.was_asked(counts, schema)
    out = np.zeros(schema.n_answers)
    for q, (start, stop) in enumerate(schema.answer_slices):
        rows = asked[:, q]
        if rows.any():
            out[start:stop] = fractions[rows, start:stop].mean(axis=0)
        else:
            out[start:stop] = 1.0 / (stop - start)
    return out


@dataclasses.dataclass
class EvaluationResult:
    """Predictions and volunteer answers for one evaluation set.

    Attributes
    ----------
    schema, catalogue : the decision tree and the evaluated rows (canonical columns).
    counts, fractions : volunteer vote counts and fractions ``(N, n_answers)``.
    predicted, predicted_std : Dirichlet mean and standard deviation ``(N, n_answers)``.
    baseline : mean training-set fractions ``(n_answers,)``.
    asked : ``(N, n_questions)``, question answered by at least ``min_votes`` volunteers.
    per_question : DataFrame, one row per question (see :func:`evaluate`).
    """

    schema: schema_mod.Schema
    catalogue: pd.DataFrame
    counts: np.ndarray
    fractions: np.ndarray
    predicted: np.ndarray
    predicted_std: np.ndarray
    baseline: np.ndarray
    asked: np.ndarray
    per_question: pd.DataFrame
    min_votes: int = 3
    baseline_source: str = "baseline catalogue"
    concentrations: np.ndarray | None = None  # the model's Dirichlet concentrations

    def errors(self) -> np.ndarray:
        """``(N, n_questions)`` mean |predicted - volunteer| per question (NaN where unasked)."""
        return self._errors(self.predicted)

    def baseline_errors(self) -> np.ndarray:
        return self._errors(np.broadcast_to(self.baseline, self.fractions.shape))

    def _errors(self, pred: np.ndarray) -> np.ndarray:
        out = np.full(self.asked.shape, np.nan)
        for q, (start, stop) in enumerate(self.schema.answer_slices):
            err = np.abs(pred[:, start:stop] - self.fractions[:, start:stop]).mean(axis=1)
            out[:, q] = np.where(self.asked[:, q], err, np.nan)
        return out

    def summary(self) -> dict:
        """The headline numbers: MAE of model and baseline over asked galaxy-question pairs,
        ``mae_reduction`` and ``accuracy_confident`` (questions with confident galaxies)."""
        mae = float(np.nanmean(self.errors()))
        base = float(np.nanmean(self.baseline_errors()))
        pq = self.per_question
        acc = {
            row.question: round(float(row.accuracy_confident), 4)
            for row in pq.itertuples()
            if row.n_confident > 0
        }
        n_conf = {row.question: int(row.n_confident) for row in pq.itertuples()}
        return {
            "vote_fraction_mae": round(mae, 5),
            "vote_fraction_mae_mean_baseline": round(base, 5),
            "mae_reduction": round(1 - mae / base, 4) if base > 0 else None,
            "accuracy_confident": acc,
            "n_confident": n_conf,
            "n_galaxies": int(len(self.counts)),
            "min_votes": self.min_votes,
        }


def evaluate(
    model,
    catalogue: pd.DataFrame,
    baseline_catalogue: pd.DataFrame | None = None,
    schema=None,
    images: np.ndarray | None = None,
    min_votes: int = 3,
    confident_min_votes: int = 10,
    confident_min_fraction: float = 0.8,
    batch_size: int = 64,
    progress: bool = True,
    tta: bool = False,
) -> EvaluationResult:
    """Predict vote fractions for a catalogue and compare them with the volunteers'.

    Parameters
    ----------
    model : trained GalaxyModel (its ``metadata`` gives image size and normalisation).
    catalogue : galaxies to evaluate (usually the test split).
    baseline_catalogue : whose mean fractions form the baseline (usually the training split;
        default the evaluated galaxies, flattering the baseline).
    schema : decision tree (default: the model's).
    images : uint8 ``(N, S, S, 3)`` for ``catalogue`` (default: read at the model's framing).
    min_votes : votes a question needs to count towards a galaxy's fraction error.
    confident_min_votes, confident_min_fraction : see ``schema.confident_answer``.
    tta : average over the 8 flips and quarter turns (8x the prediction time).

    Returns
    -------
    EvaluationResult (``per_question``: ``question``, ``n_asked``, ``mae``, ``baseline_mae``,
    ``n_confident``, ``accuracy_confident``).
    """
    from .images import catalogue_crops, load_images

    schema = schema_mod.get_schema(schema if schema is not None else model.schema)
    df = schema_mod.canonical_columns(catalogue, schema).reset_index(drop=True)
    schema_mod.vote_counts(df, schema)  # fail on bad counts before the slow prediction
    if images is None:
        meta = getattr(model, "metadata", {}) or {}
        size = meta.get("image_size")
        if size is None:
            raise ValueError(
                "the model's metadata has no image_size: pass images= (uint8 N x S x S x 3)"
            )
        crops = catalogue_crops(df, meta)
        images = load_images(df["file_loc"].tolist(), size, progress=progress, crop=crops)
    if len(images) != len(df):
        raise ValueError(f"got {len(images)} images for {len(df)} catalogue rows")
    conc = predict_concentrations(model, images, batch_size=batch_size, progress=progress, tta=tta)
    return evaluate_concentrations(
        conc,
        df,
        baseline_catalogue,
        schema,
        min_votes=min_votes,
        confident_min_votes=confident_min_votes,
        confident_min_fraction=confident_min_fraction,
    )


def evaluate_concentrations(
    concentrations: np.ndarray,
    catalogue: pd.DataFrame,
    baseline_catalogue: pd.DataFrame | None = None,
    schema=schema_mod.DECALS_DR5,
    min_votes: int = 3,
    confident_min_votes: int = 10,
    confident_min_fraction: float = 0.8,
) -> EvaluationResult:
    """:func:`evaluate` for ``concentrations`` ``(N, n_answers)`` already predicted for the rows
    of ``catalogue``; parameters as in :func:`evaluate`."""
    schema = schema_mod.get_schema(schema)
    df = schema_mod.canonical_columns(catalogue, schema).reset_index(drop=True)
    counts = schema_mod.vote_counts(df, schema)
    if len(concentrations) != len(df):
        raise ValueError(f"got {len(concentrations)} predictions for {len(df)} catalogue rows")
    predicted, predicted_std = predict_fractions(concentrations, schema)
    fractions = schema_mod.vote_fractions(counts, schema)
    own = baseline_catalogue is None
    baseline_counts = counts if own else schema_mod.vote_counts(baseline_catalogue, schema)
    baseline = mean_fraction_baseline(baseline_counts, schema)
    source = "evaluated galaxies (optimistic for the baseline)" if own else "baseline catalogue"
    asked = schema_mod.was_asked(counts, schema, min_votes=min_votes)
    rows = []
    for q, question in enumerate(schema.questions):
        start, stop = schema.answer_slices[q]
        m = asked[:, q]
        err = np.abs(predicted[m, start:stop] - fractions[m, start:stop]).mean(axis=1)
        berr = np.abs(baseline[start:stop] - fractions[m, start:stop]).mean(axis=1)
        confident = schema_mod.confident_answer(
            counts, schema, question.name, confident_min_votes, confident_min_fraction
        )
        has = confident != ""
        guess = np.asarray(question.answers)[predicted[:, start:stop].argmax(axis=1)]
        rows.append(
            {
                "question": question.name,
                "n_asked": int(m.sum()),
                "mae": float(err.mean()) if m.any() else np.nan,
                "baseline_mae": float(berr.mean()) if m.any() else np.nan,
                "n_confident": int(has.sum()),
                "accuracy_confident": float((guess[has] == confident[has]).mean())
                if has.any()
                else np.nan,
            }
        )
    return EvaluationResult(
        schema=schema,
        catalogue=df,
        counts=counts,
        fractions=fractions,
        predicted=predicted,
        predicted_std=predicted_std,
        baseline=baseline,
        asked=asked,
        per_question=pd.DataFrame(rows),
        min_votes=min_votes,
        baseline_source=source,
        concentrations=np.asarray(concentrations, dtype=np.float64),
    )


def predictive_coverage(result: EvaluationResult, seed: int = 0) -> pd.DataFrame:
    """Are the predicted uncertainties honest *for the votes we can see*? Per question, the share
    of volunteers' counts inside the central 68% and 95% of the model's predictive distribution.

    For a galaxy with ``N`` votes on a question, the model's Dirichlet(alpha) predicts the count
    ``k`` of each answer as Beta-Binomial(``N``, alpha_a, alpha_0 - alpha_a): the Dirichlet-
    Multinomial the loss is built on, seen one answer at a time. That predictive includes the luck
    of which few volunteers came, so a calibrated model scores 68% and 95% at any ``N`` (the true
    fraction's Dirichlet spread alone would be too narrow for 5 votes). Counts are whole numbers,
    so each is placed by its randomised PIT, ``F(k - 1) + U P(k)`` (uniform for a calibrated
    model; ``U`` drawn with ``seed``). Rows: ``question``, ``n`` (answer counts), ``within_68``,
    ``within_95``.
    """
    from scipy.stats import betabinom

    if result.concentrations is None:
        raise ValueError("this result has no concentrations: evaluate the model again")
    rng = np.random.default_rng(seed)
    rows = []
    for q, question in enumerate(result.schema.questions):
        start, stop = result.schema.answer_slices[q]
        m = result.asked[:, q]
        if not m.any():
            continue
        alpha = result.concentrations[m, start:stop]
        k = result.counts[m, start:stop]
        n = np.broadcast_to(k.sum(axis=1, keepdims=True), k.shape)
        a, b = alpha, alpha.sum(axis=1, keepdims=True) - alpha
        below = np.where(k > 0, betabinom.cdf(k - 1, n, a, b), 0.0)
        pit = below + rng.random(k.shape) * betabinom.pmf(k, n, a, b)
        rows.append(
            {
                "question": question.name,
                "n": int(k.size),
                "within_68": float(((pit >= 0.16) & (pit <= 0.84)).mean()),
                "within_95": float(((pit >= 0.025) & (pit <= 0.975)).mean()),
            }
        )
    return pd.DataFrame(rows)


# --- figures ---------------------------------------------------------------------------------
def _short(name: str) -> str:
    return name.removesuffix("-dr5").removesuffix("-gz2")


def plot_predicted_vs_volunteer(result: EvaluationResult, ncols: int = 5, size: float = 2.4):
    """One panel per question: predicted vs volunteer fraction of each answer, titled with the
    model's and the baseline's mean absolute error; returns the Figure."""
    import matplotlib.pyplot as plt

    schema = result.schema
    nrows = int(np.ceil(schema.n_questions / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * size, nrows * size * 1.05), squeeze=False
    )
    pq = result.per_question.set_index("question")
    for q, question in enumerate(schema.questions):
        ax = axes.flat[q]
        start, stop = schema.answer_slices[q]
        m = result.asked[:, q]
        for j, answer in enumerate(question.answers):
            ax.scatter(
                result.fractions[m, start + j],
                result.predicted[m, start + j],
                s=4,
                alpha=0.35,
                color=f"C{j}",
                label=answer,
                rasterized=True,
            )
        ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        row = pq.loc[question.name]
        ax.set_title(
            f"{_short(question.name)}\nMAE {row.mae:.3f} (baseline {row.baseline_mae:.3f})",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=5.5, markerscale=2, frameon=False, loc="upper left")
    for ax in axes.flat[schema.n_questions :]:
        ax.axis("off")
    fig.supxlabel("volunteer vote fraction", fontsize=9)
    fig.supylabel("predicted vote fraction", fontsize=9)
    fig.tight_layout()
    return fig


def calibration_table(result: EvaluationResult, n_bins: int = 10) -> pd.DataFrame:
    """Per bin of predicted fraction (asked answers pooled): mean predicted, volunteer, and n."""
    pred, vol = [], []
    for q, (start, stop) in enumerate(result.schema.answer_slices):
        m = result.asked[:, q]
        pred.append(result.predicted[m, start:stop].ravel())
        vol.append(result.fractions[m, start:stop].ravel())
    pred, vol = np.concatenate(pred), np.concatenate(vol)
    bins = np.minimum((pred * n_bins).astype(int), n_bins - 1)
    rows = [
        {
            "bin": b,
            "predicted": float(pred[bins == b].mean()),
            "volunteer": float(vol[bins == b].mean()),
            "n": int((bins == b).sum()),
        }
        for b in range(n_bins)
        if (bins == b).any()
    ]
    return pd.DataFrame(rows)


def plot_calibration(result: EvaluationResult, n_bins: int = 10):
    """Reliability (binned, answers pooled) and, per question, the share of vote counts inside
    the central 68% and 95% of the predictive (:func:`predictive_coverage`); returns the Figure."""
    import matplotlib.pyplot as plt

    table = calibration_table(result, n_bins)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax1.plot(table.predicted, table.volunteer, "o-", label="model")
    for row in table.itertuples():
        ax1.annotate(str(row.n), (row.predicted, row.volunteer), fontsize=6,
                     textcoords="offset points", xytext=(3, -8))  # fmt: skip
    ax1.set(xlabel="predicted vote fraction (binned)", ylabel="mean volunteer vote fraction")
    ax1.set_title("Reliability, all answers pooled", fontsize=9)
    ax1.legend(frameon=False, fontsize=8)
    coverage = predictive_coverage(result)
    names = [_short(name) for name in coverage["question"]]
    y = np.arange(len(names))
    ax2.barh(y - 0.2, coverage["within_68"], height=0.4, label="inside the central 68%")
    ax2.barh(y + 0.2, coverage["within_95"], height=0.4, label="inside the central 95%")
    ax2.axvline(0.68, color="C0", ls=":", lw=1)
    ax2.axvline(0.95, color="C1", ls=":", lw=1)
    ax2.set_yticks(y, names, fontsize=7)
    ax2.set(xlim=(0, 1), xlabel="share of vote counts inside the predicted range")
    ax2.set_title("Are the predicted uncertainties honest?", fontsize=9)
    ax2.legend(frameon=False, fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def most_wrong(result: EvaluationResult, n: int = 16, question: str | None = None) -> pd.DataFrame:
    """The ``n`` galaxies with the largest vote-fraction error.

    Parameters
    ----------
    question : rank by this question's error only (default: mean over asked questions).

    Returns
    -------
    DataFrame: ``id_str``, ``file_loc``, ``error``, leading answers of ``question`` (or the first).
    """
    errors = result.errors()
    q = 0 if question is None else result.schema.question_index(question)
    score = np.nanmean(errors, axis=1) if question is None else errors[:, q]
    score = np.where(np.isnan(score), -np.inf, score)
    order = np.argsort(-score)[:n]
    order = order[np.isfinite(score[order])]
    qobj = result.schema.questions[q]
    start, stop = result.schema.answer_slices[q]
    vol_idx = result.fractions[order, start:stop].argmax(axis=1)
    pred_idx = result.predicted[order, start:stop].argmax(axis=1)
    return pd.DataFrame(
        {
            "id_str": result.catalogue["id_str"].to_numpy()[order]
            if "id_str" in result.catalogue
            else order.astype(str),
            "file_loc": result.catalogue["file_loc"].to_numpy()[order],
            "row": order,
            "error": score[order],
            "question": qobj.name,
            "volunteer_answer": np.asarray(qobj.answers)[vol_idx],
            "volunteer_fraction": result.fractions[order, start + vol_idx],
            "predicted_answer": np.asarray(qobj.answers)[pred_idx],
            "predicted_fraction": result.predicted[order, start + pred_idx],
        }
    )


def show_most_wrong(
    result: EvaluationResult, n: int = 16, question: str | None = None, ncols: int = 8
):
    """The galaxies the model gets most wrong, as an image grid (volunteers' and model's answer)."""
    from .plotting import galaxy_grid

    table = most_wrong(result, n, question)
    titles = [
        f"vol {r.volunteer_answer[:8]} {r.volunteer_fraction:.2f}\n"
        f"cnn {r.predicted_answer[:8]} {r.predicted_fraction:.2f}"
        for r in table.itertuples()
    ]
    q = table["question"].iloc[0] if len(table) else ""
    return galaxy_grid(
        list(table["file_loc"]),
        titles=titles,
        ncols=ncols,
        ax_titles_fontsize=6,
        suptitle=f"Most wrong galaxies ({'all questions' if question is None else q}; "
        f"titles: {_short(q)})",
    )


def plot_history(history, ax=None):
    """Training and validation loss per epoch (plus per-step training loss, faint).

    Parameters
    ----------
    history : ``training.History`` of a run.
    ax : matplotlib Axes to draw in (default: a new figure).
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5)) if ax is None else (ax.figure, ax)
    if history.step_loss and history.epoch:
        steps = np.arange(1, len(history.step_loss) + 1) / (
            len(history.step_loss) / len(history.epoch)
        )
        ax.plot(steps, history.step_loss, color="C0", alpha=0.25, lw=0.8, label="train (per step)")
    ax.plot(history.epoch, history.train_loss, "o-", color="C0", label="train (epoch mean)")
    ax.plot(history.epoch, history.val_loss, "s-", color="C1", label="validation")
    if history.best_epoch:
        ax.axvline(history.best_epoch, color="grey", ls=":", lw=1, label="best epoch")
    ax.set(xlabel="epoch", ylabel="Dirichlet-Multinomial loss\n(summed over questions)")
    ax.legend(frameon=False, fontsize=8)
    if history.step_loss:
        lo = min(min(history.val_loss), min(history.step_loss))
        hi = np.percentile(history.step_loss, 98)
        ax.set_ylim(lo * 0.95, max(hi, max(history.val_loss)) * 1.05)
    fig.tight_layout()
    return fig

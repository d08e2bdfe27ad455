"""Behind notebook 01 (meet the galaxies): the decision tree as a picture, and what votes look like.

Every function takes a ``catalogue`` in the course's contract (vote counts in either spelling;
synthetic skies add ``truth_*``, which the truth figures need, and ``tag_*``) and its ``schema``
(the decision tree, a Schema or its name), and returns a table, a number or a figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import data
from .images import read_image
from .plotting import galaxy_grid
from .schema import (
    DECALS_DR5,
    DECALS_DR5_SHORT_NAMES,
    Schema,
    confident_answer,
    get_schema,
    select_questions,
    total_votes,
    vote_counts,
    vote_fractions,
)
from .synthetic import truth_matches_answer

__all__ = ["tree_table", "draw_decision_tree", "question_summary", "galaxy_votes"]
__all__ += ["unasked_example", "plot_vote_distribution", "plot_fractions_by_truth"]
__all__ += ["plot_faint_drift", "confident_vs_truth", "tag_counts", "load_real_examples"]
__all__ += ["real_beside_synthetic", "sky_metrics"]

# Questions whose answers the simulated truth fixes directly, for the vote-vs-truth figures.
DEFAULT_TRUTH_QUESTIONS = ("smooth-or-featured-dr5", "disk-edge-on-dr5", "bar-dr5")


def _bare(name: str, schema: Schema) -> str:
    return name.removesuffix(schema.suffix)


def _volunteers(catalogue: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Volunteers per galaxy: the votes on the first question, which a Schema always asks."""
    return total_votes(vote_counts(catalogue, schema), schema)[:, 0]


def _require_truth(catalogue: pd.DataFrame, what: str) -> None:
    if "truth_type" not in catalogue.columns:
        raise ValueError(
            f"{what} needs a synthetic catalogue with truth_* columns (synthetic.make_sky()); "
            "real catalogues have no known truth"
        )


def _wrap_answers(answers: Sequence[str], width: int) -> list[str]:
    lines = [answers[0]]
    for answer in answers[1:]:
        if len(f"{lines[-1]}, {answer}") > width:
            lines[-1] += ","
            lines.append(answer)
        else:
            lines[-1] += f", {answer}"
    return lines


def _tree_depths(schema: Schema) -> dict[str, int]:
    """``{question: depth}``: 0 when always asked, else 1 + its deepest parent's depth."""
    depth: dict[str, int] = {}
    for q in schema.questions:  # parents come first in a Schema
        depth[q.name] = 1 + max((depth[p] for p, _ in q.requires), default=-1)
    return depth


def tree_table(schema: str | Schema = DECALS_DR5) -> pd.DataFrame:
    """The decision tree (a Schema or its name) as a table, one row per question.

    Returns
    -------
    DataFrame indexed by question: ``answers``, ``n_answers``, ``asked_when`` (the answers
    leading to it, or "always") and ``depth``.
    """
    schema = get_schema(schema)
    depth = _tree_depths(schema)
    rows = [
        {
            "question": q.name,
            "answers": ", ".join(q.answers),
            "n_answers": len(q.answers),
            "asked_when": " or ".join(f"{_bare(p, schema)} = {a}" for p, a in q.requires)
            or "always",
            "depth": depth[q.name],
        }
        for q in schema.questions
    ]
    return pd.DataFrame(rows).set_index("question")


def draw_decision_tree(
    schema: str | Schema = DECALS_DR5,
    catalogue: pd.DataFrame | None = None,
    figsize: tuple[float, float] = (15, 7.5),
):
    """Draw the tree: one box per question (its answers inside), one arrow per leading answer.

    Parameters
    ----------
    catalogue : optional; each box then says for what share of galaxies its question was asked.
    figsize : (width, height) in inches.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    schema = get_schema(schema)
    asked_share = None
    if catalogue is not None:
        asked_share = (total_votes(vote_counts(catalogue, schema), schema) > 0).mean(axis=0)
    levels: dict[int, list[str]] = {}
    for name, d in _tree_depths(schema).items():
        levels.setdefault(d, []).append(name)
    n_levels = max(levels) + 1
    # Boxes in columns by depth, spread evenly top to bottom.
    box_w, box_h = 0.155, 0.62 / max(max(len(v) for v in levels.values()), 1)
    pos: dict[str, tuple[float, float]] = {}
    for d, names in levels.items():
        x = 0.02 + d * (0.96 - box_w) / max(n_levels - 1, 1)
        for i, name in enumerate(names):
            pos[name] = (x, 1 - (i + 1) / (len(names) + 1))
    fig, ax = plt.subplots(figsize=figsize)
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.axis("off")
    colours = plt.get_cmap("tab10")
    note_style = dict(fontsize=7.5, ha="right", va="bottom", color="0.25", style="italic")
    for qi, q in enumerate(schema.questions):
        x, y = pos[q.name]
        colour = colours(qi % 10)
        box = FancyBboxPatch((x, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.006")
        box.set(facecolor=(*colour[:3], 0.12), edgecolor=colour, linewidth=1.6)
        ax.add_patch(box)
        top, bottom = y + box_h / 2, y - box_h / 2
        ax.text(x + 0.006, top - 0.012, _bare(q.name, schema), fontsize=9, weight="bold", va="top")
        answers = "\n".join(_wrap_answers(q.answers, width=30))
        ax.text(x + 0.006, top - 0.045, answers, fontsize=8, va="top", family="monospace")
        note = "" if q.requires else "always asked"
        if asked_share is not None:
            note = f"asked for {asked_share[qi]:.0%} of galaxies"
        if note:
            ax.text(x + box_w - 0.004, bottom + 0.008, note, **note_style)
    arrow = {"arrowstyle": "-|>", "color": "0.35", "lw": 1.2, "shrinkA": 2, "shrinkB": 2}
    label_style = {"fontsize": 7.5, "ha": "center", "va": "center", "color": "0.15"}
    label_style["bbox"] = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "0.7"}
    for q in schema.questions:
        by_parent: dict[str, list[str]] = {}
        for parent, answer in q.requires:  # one arrow per parent, naming every answer
            by_parent.setdefault(parent, []).append(answer)
        for parent, answers in by_parent.items():
            (sx, sy), (ex, ey) = (pos[parent][0] + box_w, pos[parent][1]), pos[q.name]
            ax.annotate("", xy=(ex, ey), xytext=(sx, sy), arrowprops=arrow)
            label = " or ".join(answers)
            ax.text(sx + 0.55 * (ex - sx), sy + 0.55 * (ey - sy), label, **label_style)
    ax.set_title(
        f"The {schema.name} decision tree: {schema.n_questions} questions, {schema.n_answers} "
        "answers. Arrows: the answer that leads to the next question.",
        fontsize=11,
    )
    fig.tight_layout()
    return fig


def question_summary(
    catalogue: pd.DataFrame, schema: str | Schema = DECALS_DR5, min_votes: int = 1
) -> pd.DataFrame:
    """One row per question: how often it was asked and how many votes it got.

    Parameters
    ----------
    min_votes : a question counts as asked for a galaxy with at least this many votes.

    Returns
    -------
    DataFrame indexed by question: ``asked_of``, ``share_asked``, ``mean_votes``,
    ``mean_votes_when_asked`` and ``share_of_volunteers`` (how far down the tree they get).
    """
    schema = get_schema(schema)
    totals = total_votes(vote_counts(catalogue, schema), schema).astype(float)
    rows = []
    for t, q in zip(totals.T, schema.questions, strict=True):
        asked = t >= min_votes
        rows.append(
            {
                "question": q.name,
                "asked_of": " or ".join(f"{_bare(p, schema)}={a}" for p, a in q.requires)
                or "everyone",
                "share_asked": asked.mean(),
                "mean_votes": t.mean(),
                "mean_votes_when_asked": t[asked].mean() if asked.any() else 0.0,
                "share_of_volunteers": t.sum() / max(totals[:, 0].sum(), 1.0),
            }
        )
    return pd.DataFrame(rows).set_index("question")


def galaxy_votes(
    catalogue: pd.DataFrame, index: int, schema: str | Schema = DECALS_DR5
) -> pd.DataFrame:
    """The votes of one galaxy (row position ``index``), one row per answer.

    Returns
    -------
    DataFrame with ``question``, ``answer``, ``votes``, ``fraction``, ``asked``.
    """
    schema = get_schema(schema)
    if not 0 <= index < len(catalogue):
        raise IndexError(f"row {index} is outside the catalogue (0 to {len(catalogue) - 1})")
    counts = vote_counts(catalogue.iloc[[index]], schema)
    fractions = vote_fractions(counts, schema)[0]
    totals = total_votes(counts, schema)[0]
    rows = [
        {
            "question": _bare(q.name, schema),
            "answer": answer,
            "votes": int(counts[0, a + j]),
            "fraction": round(float(fractions[a + j]), 2),
            "asked": bool(totals[qi] > 0),
        }
        for qi, (q, (a, _)) in enumerate(zip(schema.questions, schema.answer_slices, strict=True))
        for j, answer in enumerate(q.answers)
    ]
    return pd.DataFrame(rows)


def unasked_example(
    catalogue: pd.DataFrame,
    question: str = "has-spiral-arms-dr5",
    min_volunteers: int = 5,
    schema: str | Schema = DECALS_DR5,
) -> int:
    """Row of a clear galaxy that many volunteers saw but nobody was asked ``question`` about.

    Parameters
    ----------
    question : question name (either spelling).
    min_volunteers : the galaxy was classified by at least this many volunteers.

    Returns
    -------
    int, a row position (unanimous on question 1 first, then most volunteers, brightest).
    """
    schema = get_schema(schema)
    qi = schema.question_index(schema.question(question).name)
    counts = vote_counts(catalogue, schema)
    totals = total_votes(counts, schema)
    volunteers = totals[:, 0]
    rows = np.flatnonzero((totals[:, qi] == 0) & (volunteers >= min_volunteers))
    if len(rows) == 0:
        raise ValueError(
            f"every galaxy with >= {min_volunteers} volunteers was asked {question!r}; "
            "try a deeper question or a smaller min_volunteers"
        )
    a, b = schema.answer_slices[0]
    unanimous = counts[rows, a:b].max(axis=1) == volunteers[rows]
    magnitude = catalogue.get("truth_magnitude", pd.Series(0.0, index=catalogue.index))
    brightness = -magnitude.to_numpy(float)[rows]
    # lexsort: the last key is the primary one; -arange prefers the first row on ties
    order = np.lexsort((-np.arange(len(rows)), brightness, volunteers[rows], unanimous))
    return int(rows[order[-1]])


def plot_vote_distribution(catalogue: pd.DataFrame, schema: str | Schema = DECALS_DR5):
    """Volunteers per galaxy (histogram) and, per question, the share of galaxies asked it.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    schema = get_schema(schema)
    volunteers = _volunteers(catalogue, schema)
    summary = question_summary(catalogue, schema)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), width_ratios=(1, 1.3))
    bins = np.arange(0, volunteers.max() + 2) - 0.5
    left.hist(volunteers, bins=bins, color="tab:blue", alpha=0.8)
    left.axvline(30, color="tab:red", ls="--", lw=1)
    share30 = f"{(volunteers >= 30).mean():.0%} have >= 30"
    left.text(30.5, left.get_ylim()[1] * 0.9, share30, color="tab:red", fontsize=9)
    left.set(xlabel="volunteers who classified the galaxy", ylabel="galaxies")
    left.set_title(f"Volunteers per galaxy (median {np.median(volunteers):.0f})")
    y = np.arange(len(summary))
    right.barh(y, summary["share_asked"], color="tab:green", alpha=0.8, label="asked (>= 1 vote)")
    clicks = {"color": "tab:orange", "alpha": 0.8, "height": 0.4}
    right.barh(y, summary["share_of_volunteers"], **clicks, label="share of all volunteers' clicks")
    right.set_yticks(y, [_bare(q, schema) for q in summary.index], fontsize=8)
    right.invert_yaxis()
    right.set(xlim=(0, 1.05), xlabel="share of galaxies / volunteers")
    right.set_title("Deeper questions are asked less often")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def _fractions_by_truth(catalogue: pd.DataFrame, question: str, schema: Schema) -> pd.DataFrame:
    """Mean vote fraction per answer (columns) of the galaxies asked, by true answer (rows)."""
    _require_truth(catalogue, "plot_fractions_by_truth")
    q = schema.question(question)
    counts = vote_counts(catalogue, schema)
    qi = schema.question_index(q.name)
    a, b = schema.answer_slices[qi]
    fractions = vote_fractions(counts, schema)[:, a:b]
    asked = total_votes(counts, schema)[:, qi] > 0
    rows = {}
    for answer in q.answers:
        mask = truth_matches_answer(catalogue, q.name, answer) & asked
        mean = fractions[mask].mean(axis=0) if mask.any() else np.full(b - a, np.nan)
        rows[answer] = [*mean, int(mask.sum())]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*q.answers, "n_galaxies"])
    table.index.name = f"true {_bare(q.name, schema)}"
    table["n_galaxies"] = table["n_galaxies"].astype(int)
    return table


def plot_fractions_by_truth(
    catalogue: pd.DataFrame,
    questions: Sequence[str] = DEFAULT_TRUTH_QUESTIONS,
    schema: str | Schema = DECALS_DR5,
):
    """Heat maps, one per question name: the mean vote fraction of each answer, by true answer.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    schema = get_schema(schema)
    if len(questions) == 0:
        raise ValueError("plot_fractions_by_truth needs at least one question")
    tables = [_fractions_by_truth(catalogue, q, schema) for q in questions]
    widths = [max(len(t.columns) - 1, 2) for t in tables]
    size = (sum(widths) * 1.25 + 1.5, 3.6)
    fig, axes = plt.subplots(1, len(tables), figsize=size, width_ratios=widths, squeeze=False)
    for ax, table, question in zip(axes[0], tables, questions, strict=True):
        values = table.drop(columns="n_galaxies").to_numpy(float)
        ax.imshow(values, vmin=0, vmax=1, cmap="Blues")
        answers = list(table.columns[:-1])
        ax.set_xticks(range(len(answers)), answers, rotation=30, ha="right", fontsize=8)
        ticks = [f"{a} (n={n})" for a, n in zip(table.index, table["n_galaxies"], strict=True)]
        ax.set_yticks(range(len(table)), ticks, fontsize=8)
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                colour = "white" if value > 0.55 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
        ax.set(xlabel="volunteers' mean vote fraction", ylabel="true answer")
        ax.set_title(_bare(schema.question(question).name, schema), fontsize=10)
    fig.suptitle("What volunteers vote, by the galaxy's true morphology", fontsize=11)
    fig.tight_layout()
    return fig


def plot_faint_drift(catalogue: pd.DataFrame, n_bins: int = 8, schema: str | Schema = DECALS_DR5):
    """Mean "smooth" vote fraction against magnitude: faint disks drift towards "smooth".

    Parameters
    ----------
    n_bins : magnitude bins (equal numbers of galaxies).

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    schema = get_schema(schema)
    _require_truth(catalogue, "plot_faint_drift")
    if n_bins < 2:
        raise ValueError(f"n_bins must be at least 2; got {n_bins}")
    fractions = vote_fractions(catalogue, schema)
    col = schema.answer_columns.index("smooth-or-featured-dr5_smooth")
    mag = catalogue["truth_magnitude"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for answer, label, colour in (
        ("featured-or-disk", "truly featured or disk", "tab:blue"),
        ("smooth", "truly smooth", "0.5"),
    ):
        mask = truth_matches_answer(catalogue, "smooth-or-featured-dr5", answer)
        edges = np.quantile(mag[mask], np.linspace(0, 1, n_bins + 1))
        which = np.clip(np.searchsorted(edges, mag[mask], side="right") - 1, 0, n_bins - 1)
        centres = [mag[mask][which == k].mean() for k in range(n_bins)]
        means = [fractions[mask, col][which == k].mean() for k in range(n_bins)]
        ax.plot(centres, means, "o-", color=colour, label=label)
    ax.set(xlabel="true magnitude (fainter to the right)", ylabel='mean "smooth" vote fraction')
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Faint disks look smooth to volunteers", fontsize=10)
    fig.tight_layout()
    return fig


def confident_vs_truth(
    catalogue: pd.DataFrame,
    question: str = "smooth-or-featured-dr5",
    min_votes: int = 10,
    min_fraction: float = 0.8,
    schema: str | Schema = DECALS_DR5,
) -> dict:
    """How often the volunteers' confident answer (``schema.confident_answer``) is the true one.

    Parameters
    ----------
    min_votes, min_fraction : as in :func:`galaxy_helpers.schema.confident_answer`.

    Returns
    -------
    dict: ``share_confident`` (of all galaxies), ``n_confident`` and ``accuracy`` (NaN if none).
    """
    schema = get_schema(schema)
    _require_truth(catalogue, "confident_vs_truth")
    q = schema.question(question)
    answers = confident_answer(catalogue, schema, q.name, min_votes, min_fraction)
    confident = answers != ""
    correct = np.zeros(len(catalogue), bool)
    for answer in q.answers:
        correct |= (answers == answer) & truth_matches_answer(catalogue, q.name, answer)
    n = int(confident.sum())
    return {
        "share_confident": float(confident.mean()) if len(catalogue) else 0.0,
        "n_confident": n,
        "accuracy": float(correct[confident].mean()) if n else float("nan"),
    }


def load_real_examples(name: str = "gz_decals_examples") -> pd.DataFrame | None:
    """A real Galaxy Zoo dataset from the cache or mirror (never downloads), else None and how.

    Returns
    -------
    DataFrame or None.
    """
    if data.dataset_available(name):
        return data.load_dataset(name, progress=False)
    print(
        f"The real dataset {name!r} is not on this machine, so this section is skipped.\n"
        "To get it (about 20 MB for the examples), on a machine with internet run once:\n"
        f'    python -c "from galaxy_helpers import data; data.load_dataset({name!r})"\n'
        "which downloads the files from their pinned sources and checks their checksums; or\n"
        f"set GALAXY_DATA_MIRROR to a folder holding a copy in <mirror>/{name}/.\n"
        "Then rerun this cell."
    )
    return None


def _real_examples_for(examples: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows of the real ``gz_decals_examples`` catalogue that illustrate one DR5 answer."""
    if "dr5_answers" not in examples.columns:
        raise ValueError(
            "the examples catalogue has no 'dr5_answers' column; load it with "
            "data.load_dataset('gz_decals_examples')"
        )
    answers = examples["dr5_answers"].fillna("").str.split(";")
    return examples[answers.apply(lambda items: column in items)]


def _side(images, titles, files, names, per_side, image_size, missing):
    """Append the pictures of ``files`` titled ``names``, padded with blanks to ``per_side``."""
    blank = np.full((image_size, image_size, 3), 255, np.uint8)
    images += [read_image(f, image_size) for f in files] + [blank] * (per_side - len(files))
    titles += list(names[: len(files)]) + [missing] * (per_side - len(files))


def real_beside_synthetic(
    catalogue: pd.DataFrame,
    examples: pd.DataFrame,
    columns: Sequence[str] | None = None,
    per_side: int = 2,
    image_size: int = 96,
    seed: int = 0,
    questions=None,
):
    """One row per answer: real Galaxy Zoo DECaLS examples beside synthetic galaxies of that truth.

    Parameters
    ----------
    examples : ``data.load_dataset("gz_decals_examples")``.
    columns : canonical DR5 answer columns; default every answer with a real example (of
        ``questions``, names of DR5 questions, when given: ``schema.DECALS_DR5_PARTS`` splits
        the tree into three figures a notebook page can hold).
    per_side : galaxies on each side.
    image_size : display size in pixels.
    seed : which synthetic and real galaxies are picked.

    Returns
    -------
    matplotlib Figure.
    """
    schema = DECALS_DR5
    _require_truth(catalogue, "real_beside_synthetic")
    if per_side < 1:
        raise ValueError(f"per_side must be at least 1; got {per_side}")
    if columns is None:
        columns = [c for c in schema.answer_columns if len(_real_examples_for(examples, c))]
        if questions is not None:
            names = {q.name for q in select_questions(schema, questions)}
            columns = [c for c in columns if c.rsplit("_", 1)[0] in names]
    if unknown := [c for c in columns if c not in schema.answer_columns]:
        raise ValueError(f"unknown DR5 answer column(s) {unknown}; see schema.DECALS_DR5")
    rng = np.random.default_rng(seed)
    fractions = vote_fractions(catalogue, schema)
    images, titles = [], []
    for column in columns:
        question, answer = column.rsplit("_", 1)
        real = _real_examples_for(examples, column)["file_loc"]
        real = real.iloc[rng.permutation(len(real))[:per_side]].tolist()
        short = DECALS_DR5_SHORT_NAMES.get(question, _bare(question, schema))
        names = [f"real: {short}: {answer}"] + ["real"] * (len(real) - 1)
        _side(images, titles, real, names, per_side, image_size, "(no real example)")
        col = schema.answer_columns.index(column)
        picks = np.flatnonzero(truth_matches_answer(catalogue, question, answer))
        if len(picks):  # clear examples first: where the volunteers agreed with the truth
            shortlist = rng.permutation(picks)[: per_side * 5]
            picks = shortlist[np.argsort(-fractions[shortlist, col], kind="stable")]
        picks = picks[:per_side]
        names = [f"synthetic, {fractions[i, col]:.2f}" for i in picks]
        files = catalogue["file_loc"].to_numpy()[picks]
        _side(images, titles, files, names, per_side, image_size, "(no synthetic example)")
    suptitle = "Real DECaLS examples (left), synthetic (right)\n"
    suptitle += "synthetic titles: the volunteers' vote fraction"
    grid = {"ncols": 2 * per_side, "size": 1.25, "ax_titles_fontsize": 7}
    return galaxy_grid(np.stack(images), titles=titles, suptitle=suptitle, **grid)


def tag_counts(catalogue: pd.DataFrame) -> dict[str, int]:
    """Galaxies carrying each ``tag_<name>`` column.

    Returns
    -------
    dict ``{tag: count}`` in column order (empty without tag columns).
    """
    tags = [c for c in catalogue.columns if c.startswith("tag_")]
    return {c.removeprefix("tag_"): int(catalogue[c].astype(bool).sum()) for c in tags}


def sky_metrics(catalogue: pd.DataFrame, schema: str | Schema = DECALS_DR5) -> dict:
    """The numbers notebook 01 records: size, tags and how many volunteers there were.

    Returns
    -------
    dict: ``n_galaxies``, ``tag_counts``, ``mean_votes_per_galaxy``, ``median_votes_per_galaxy``,
    ``fraction_ge_30_votes``, ``mean_total_votes_per_galaxy`` (clicks) and ``share_asked``.
    """
    schema = get_schema(schema)
    volunteers = _volunteers(catalogue, schema)
    summary = question_summary(catalogue, schema)
    return {
        "n_galaxies": len(catalogue),
        "tag_counts": tag_counts(catalogue),
        "mean_votes_per_galaxy": float(volunteers.mean()),
        "median_votes_per_galaxy": float(np.median(volunteers)),
        "fraction_ge_30_votes": float((volunteers >= 30).mean()),
        "mean_total_votes_per_galaxy": float(vote_counts(catalogue, schema).sum(axis=1).mean()),
        "share_asked": {q: float(v) for q, v in summary["share_asked"].items()},
    }

"""Figures of the synthetic sky: example galaxies for each true answer and each rare tag."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..plotting import galaxy_grid
from ..schema import (
    DECALS_DR5,
    DECALS_DR5_SHORT_NAMES,
    canonical_columns,
    select_questions,
    vote_fractions,
)
from .render import render_galaxy
from .truth import TAGS, check_size, truth_matches_answer


def _choose(mask: np.ndarray, k: int, rng: np.random.Generator, score: np.ndarray | None = None):
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return idx
    if score is not None:  # clearest examples: highest score among a random shortlist
        short = rng.permutation(idx)[: k * 4]
        return short[np.argsort(-score[short], kind="stable")[:k]]
    return rng.permutation(idx)[:k]


def _galaxy_image(catalogue: pd.DataFrame, row: int, render_size: int | None):
    """File path of a catalogue galaxy, or the same galaxy re-rendered at ``render_size``."""
    if render_size is not None:
        parts = str(catalogue["id_str"].iloc[row]).split("-")
        if len(parts) == 3 and parts[0] == "synth" and parts[1].isdigit() and parts[2].isdigit():
            rng = np.random.default_rng([int(parts[1]), int(parts[2]), 1])
            return render_galaxy(catalogue.iloc[row], render_size, rng)
    return catalogue["file_loc"].iloc[row]


def _montage(catalogue, rows, per, render_size, suptitle, **grid):
    """A grid with one row of ``per`` cells for each ``(picked rows, their titles)`` in ``rows``."""
    images, titles = [], []
    for pick, names in rows:
        images += [_galaxy_image(catalogue, row, render_size) for row in pick]
        images += [np.zeros((8, 8, 3), np.uint8) for _ in range(per - len(pick))]
        titles += list(names) + ["(none)"] * (per - len(pick))
    return galaxy_grid(images, titles=titles, suptitle=suptitle, **grid)  # it keeps title room


def _check(per: int, name: str, render_size: int | None) -> None:
    if per < 1:
        raise ValueError(f"{name} must be >= 1; got {per}.")
    if render_size is not None:
        check_size(render_size, "render_size")


def montage_by_answer(
    catalogue: pd.DataFrame,
    per_answer: int = 6,
    seed: int = 0,
    answers_per_row: int = 2,
    render_size: int | None = None,
    questions=None,
):
    """Figure: ``per_answer`` galaxies whose truth is each answer of the DECaLS DR5 tree.

    Parameters
    ----------
    catalogue : a synthetic catalogue (needs ``truth_*`` columns and vote counts).
    per_answer : galaxies per answer (of a random shortlist, those with the highest fraction).
    seed : which examples are drawn.
    answers_per_row : answers side by side in one row of the figure.
    render_size : re-render the chosen galaxies at this size instead of reading their files.
    questions : names of the questions to show (default all; ``schema.DECALS_DR5_PARTS`` splits
        the tree into three figures a notebook page can hold).

    Returns
    -------
    matplotlib Figure (titles: question, answer, and the volunteers' fraction for it).
    """
    catalogue = canonical_columns(catalogue, DECALS_DR5)
    _check(per_answer, "per_answer", render_size)
    chosen = select_questions(DECALS_DR5, questions)
    rng = np.random.default_rng(seed)
    fractions = vote_fractions(catalogue, DECALS_DR5)
    rows = []
    for q in chosen:
        for ans in q.answers:
            col = DECALS_DR5.answer_columns.index(f"{q.name}_{ans}")
            mask = truth_matches_answer(catalogue, q.name, ans)
            pick = _choose(mask, per_answer, rng, fractions[:, col])
            names = [f"{fractions[row, col]:.2f}" for row in pick]
            if names:
                names[0] = f"{DECALS_DR5_SHORT_NAMES[q.name]}: {ans} {names[0]}"
            rows.append((pick, names))
    suptitle = "Synthetic galaxies by true answer (title: answer, volunteers' vote fraction)"
    if questions is not None:
        suptitle += "\n" + ", ".join(DECALS_DR5_SHORT_NAMES[q.name] for q in chosen)
    grid = {"ncols": per_answer * answers_per_row, "size": 1.3, "ax_titles_fontsize": 7}
    return _montage(catalogue, rows, per_answer, render_size, suptitle, **grid)


def montage_by_tag(
    catalogue: pd.DataFrame,
    per_tag: int = 6,
    tags: Sequence[str] | None = None,
    seed: int = 0,
    render_size: int | None = None,
):
    """Figure: ``per_tag`` random galaxies carrying each rare-feature tag, one row per tag.

    Parameters
    ----------
    catalogue : a catalogue with ``tag_<name>`` columns.
    per_tag : galaxies per tag.
    tags : which tags (default: all of :data:`TAGS`); unknown names raise ValueError.
    seed : which examples are drawn.
    render_size : re-render the chosen galaxies at this size instead of reading their files.

    Returns
    -------
    matplotlib Figure.
    """
    tags = list(TAGS if tags is None else tags)
    if unknown := [t for t in tags if t not in TAGS]:
        raise ValueError(f"Unknown tag(s) {unknown}; known tags: {TAGS}.")
    if missing := [f"tag_{t}" for t in tags if f"tag_{t}" not in catalogue.columns]:
        raise ValueError(f"Catalogue has no column(s) {missing}; use a synthetic catalogue.")
    _check(per_tag, "per_tag", render_size)
    rng = np.random.default_rng(seed)
    rows = []
    for tag in tags:
        pick = _choose(catalogue[f"tag_{tag}"].to_numpy(bool), per_tag, rng)
        rows.append((pick, [tag if j == 0 else "" for j in range(len(pick))]))
    suptitle = "Synthetic galaxies by rare-feature tag"
    grid = {"ncols": per_tag, "size": 1.3, "ax_titles_fontsize": 8}
    return _montage(catalogue, rows, per_tag, render_size, suptitle, **grid)

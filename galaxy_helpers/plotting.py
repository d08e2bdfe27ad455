"""Figures shared by every notebook: galaxies are shown as pictures, not numbers."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

__all__ = ["galaxy_grid", "ranked_grid"]


def galaxy_grid(
    images: np.ndarray | Sequence[str | os.PathLike] | Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.6,
    ax_titles_fontsize: int = 8,
    highlight: Sequence[bool] | None = None,
    suptitle: str | None = None,
    image_size: int | None = None,
):
    """Show galaxies as a grid of images.

    Parameters
    ----------
    images : uint8 array ``(N, H, W, 3)``, a list of such images, or file paths.
    titles : one short title per image.
    ncols : images per row.
    size : inches per image.
    highlight : per image, draw a coloured frame where True (e.g. "has the tag").
    suptitle : figure title.
    image_size : resize file images to this many pixels (default: as stored).

    Returns
    -------
    matplotlib Figure.

    Examples
    --------
    >>> fig = galaxy_grid(catalogue["file_loc"][:16], titles=catalogue["id_str"][:16])
    """
    import matplotlib.pyplot as plt

    from .images import read_image

    items = [
        read_image(x, image_size) if isinstance(x, (str, os.PathLike)) else np.asarray(x)
        for x in images
    ]
    n = len(items)
    if n == 0:
        raise ValueError("galaxy_grid needs at least one image.")
    if titles is not None and len(titles) != n:
        raise ValueError(f"Got {n} images but {len(titles)} titles.")
    if highlight is not None and len(highlight) != n:
        raise ValueError(f"Got {n} images but {len(highlight)} highlight flags.")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    # Every cell is placed in inches: a square image and, above it, a band for its title, so a
    # row's titles never sit under the row above (tight_layout cannot promise that for images of
    # fixed aspect); the figure title gets a band of its own.
    title_inches = 0.3 * (suptitle.count("\n") + 1) + 0.1 if suptitle else 0.0
    lines = max((str(t).count("\n") + 1 for t in titles), default=1) if titles is not None else 0
    band = (0.017 * ax_titles_fontsize * lines + 0.08) if lines else 0.0
    pad = 0.06 * size
    width, height = ncols * size, nrows * (size + band) + title_inches
    fig = plt.figure(figsize=(width, height))
    axes = []
    for i in range(nrows * ncols):
        row, col = divmod(i, ncols)
        top = height - title_inches - row * (size + band) - band
        box = (col * size + pad, top - size + pad, size - 2 * pad, size - 2 * pad)
        axes.append(
            fig.add_axes((box[0] / width, box[1] / height, box[2] / width, box[3] / height))
        )
    for i, ax in enumerate(axes):
        ax.set(xticks=[], yticks=[])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(items[i], interpolation="nearest" if items[i].shape[0] < 96 else "antialiased")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=ax_titles_fontsize)
        flagged = highlight is not None and bool(highlight[i])
        ax.spines[:].set_visible(flagged)
        if flagged:
            ax.spines[:].set(edgecolor="tab:orange", linewidth=3)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10, y=1 - 0.05 / height, va="top")
    return fig


def ranked_grid(
    images: pd.DataFrame | Sequence[str | os.PathLike] | np.ndarray,
    scores: Sequence[float] | np.ndarray | str | None,
    k: int = 24,
    *,
    pick: str = "top",
    order: Sequence[int] | None = None,
    titles: str | Sequence[str] | None = None,
    highlight: str | Sequence[bool] | None = None,
    exclude_ids: Collection[str] = (),
    kind: str | None = None,
    ncols: int = 8,
    suptitle: str | None = None,
    **grid_options,
):
    """Show ``k`` galaxies picked by a score (the top ``k``, or a spread) as a grid.

    Parameters
    ----------
    images : catalogue (``file_loc``; ``id_str`` for ``exclude_ids``), paths or uint8 array.
    scores : one score per galaxy or a catalogue column (None with ``order``); NaN never shown.
    k : how many galaxies to show.
    pick : ``"top"``, ``"bottom"`` or ``"spread"`` (``k`` evenly spaced, lowest first).
    order : positions best first (e.g. ``anomaly.ranking``); ``"bottom"`` reads it backwards.
    titles : format string (``score``, ``rank``, columns; default ``"{score:.2f}"``) or a list.
    highlight : framed galaxies: a catalogue column or one flag per galaxy.
    exclude_ids : ``id_str`` values not to show (e.g. the galaxies a model was trained on).
    kind : ``np.argsort``'s sort kind for tied scores (``"stable"``: catalogue order).
    ncols : images per row.
    suptitle : figure title, formatted with ``n`` (shown) and ``framed`` (share highlighted).
    **grid_options : passed to :func:`galaxy_grid` (``size``, ``image_size``, ...).

    Returns
    -------
    (figure, shown): ``shown`` holds the positions of the shown galaxies, in grid order.

    Examples
    --------
    >>> fig, shown = ranked_grid(candidates, probabilities, k=24, highlight="tag_ring",
    ...                          suptitle="Most ring-like ({framed:.0%} tagged)")
    """
    table = images if isinstance(images, pd.DataFrame) else None
    if isinstance(scores, str):
        if table is None or scores not in table.columns:
            raise ValueError(f"scores={scores!r} names no column of the catalogue.")
        scores = table[scores].to_numpy()
    n = len(images)
    if pick not in ("top", "bottom", "spread"):
        raise ValueError(f"pick={pick!r}; use 'top', 'bottom' or 'spread'.")
    if scores is None and order is None:
        raise ValueError("ranked_grid needs scores or an order.")
    if scores is not None:
        scores = np.asarray(scores)
        if scores.dtype.kind in "ub":  # negating unsigned or bool scores would wrap around
            scores = scores.astype(np.int64)
        if scores.shape != (n,):
            raise ValueError(f"Got {n} galaxies but scores of shape {scores.shape}; pass one each.")
    if order is None:
        order = np.argsort(-scores if pick == "top" else scores, kind=kind)
    else:
        order = np.asarray(order, dtype=int)[:: -1 if pick == "bottom" else 1]
    keep = ~pd.isna(scores[order]) if scores is not None else np.ones(len(order), bool)
    if len(exclude_ids):
        if table is None or "id_str" not in table.columns:
            raise ValueError("exclude_ids needs a catalogue with an id_str column.")
        excluded = table["id_str"].astype(str).isin(set(map(str, exclude_ids))).to_numpy()
        keep &= ~excluded[order]
    order = order[keep]
    if len(order) == 0:
        raise ValueError("No galaxy to show: every score is NaN or excluded.")
    if pick == "spread":
        shown = order[np.linspace(0, len(order) - 1, min(k, len(order))).astype(int)]
    else:
        shown = order[:k]
    if titles is None and scores is not None:
        titles = "{score:.2f}"
    labels = None
    if isinstance(titles, str):
        rows = table.iloc[shown].to_dict("records") if table is not None else [{}] * len(shown)
        labels = [
            titles.format_map(
                {**row, "score": None if scores is None else scores[i], "rank": r + 1}
            )
            for r, (i, row) in enumerate(zip(shown, rows, strict=True))
        ]
    elif titles is not None:
        if len(titles) != n:
            raise ValueError(f"Got {n} galaxies but {len(titles)} titles; pass one each.")
        labels = [str(titles[i]) for i in shown]
    flags = None
    if highlight is not None:
        flags = table[highlight] if isinstance(highlight, str) else pd.Series(list(highlight))
        if len(flags) != n:
            raise ValueError(f"Got {n} galaxies but {len(flags)} highlight flags.")
        flags = flags.fillna(0).astype(bool).to_numpy()[shown].tolist()
    framed = float(np.mean(flags)) if flags else float("nan")
    pictures = table["file_loc"].to_numpy() if table is not None else images
    picked = pictures[shown] if isinstance(pictures, np.ndarray) else [pictures[i] for i in shown]
    title = suptitle.format(n=len(shown), framed=framed) if suptitle else None
    fig = galaxy_grid(
        picked, titles=labels, ncols=ncols, highlight=flags, suptitle=title, **grid_options
    )
    return fig, shown

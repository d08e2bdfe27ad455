"""Figures shared by every notebook: galaxies are shown as pictures, not numbers."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["galaxy_grid"]


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
    images : uint8 array ``(N, H, W, 3)``, a list of such images, or a list of file paths.
    titles : one short title per image (optional).
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

    if isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    else:
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
    extra = 0.25 if titles is not None else 0.0
    # Inches kept free for the title (one line each), so it never overlaps the first row.
    title_inches = 0.3 * (suptitle.count("\n") + 1) + 0.1 if suptitle else 0.0
    height = nrows * (size + extra) + title_inches
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(items[i], interpolation="nearest" if items[i].shape[0] < 96 else "antialiased")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=ax_titles_fontsize)
        flagged = highlight is not None and bool(highlight[i])
        for spine in ax.spines.values():
            spine.set_visible(flagged)
            if flagged:
                spine.set_edgecolor("tab:orange")
                spine.set_linewidth(3)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - title_inches / height))
    return fig

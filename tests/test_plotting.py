"""Tests for galaxy_helpers.plotting (figures every notebook shares)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from galaxy_helpers.plotting import galaxy_grid, ranked_grid

matplotlib.use("Agg")  # tests only; never set globally
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def catalogue(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        path = tmp_path / f"g{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return pd.DataFrame(
        {
            "id_str": [f"g{i}" for i in range(12)],
            "file_loc": paths,
            "p": [0.1, 0.9, 0.5, 0.9, np.nan, 0.3, 0.8, 0.2, 0.7, 0.6, 0.4, 0.05],
            "ring": [False, True, False, True, None, False, True, False, False, True, 0, 0],
        }
    )


def test_ranked_grid_matches_nlargest_and_excludes(catalogue):
    fig, shown = ranked_grid(
        catalogue,
        "p",
        k=4,
        kind="stable",
        highlight="ring",
        exclude_ids=["g6"],
        titles="{id_str} p={score:.2f} #{rank}",
        suptitle="Top {n} ({framed:.0%} rings)",
    )
    expected = catalogue[catalogue["id_str"] != "g6"].nlargest(4, "p").index.to_numpy()
    assert shown.tolist() == expected.tolist() == [1, 3, 8, 9]
    assert [ax.get_title() for ax in fig.axes[:2]] == ["g1 p=0.90 #1", "g3 p=0.90 #2"]
    assert fig._suptitle.get_text() == "Top 4 (75% rings)"
    plt.close(fig)


def test_ranked_grid_spread_is_the_notebook_02_pick(catalogue):
    scores = catalogue["p"].fillna(0).to_numpy()
    order = np.argsort(scores)
    by_hand = order[np.linspace(0, len(order) - 1, 5).astype(int)]
    titles = [f"galaxy {i}" for i in range(12)]
    fig, shown = ranked_grid(
        catalogue["file_loc"].tolist(), scores, 5, pick="spread", titles=titles
    )
    assert shown.tolist() == by_hand.tolist()
    assert fig.axes[0].get_title() == f"galaxy {by_hand[0]}"
    plt.close(fig)
    pixels = np.zeros((12, 8, 8, 3), np.uint8)
    fig, shown = ranked_grid(pixels, -scores, 3, pick="bottom")
    assert shown.tolist() == np.argsort(-scores)[:3].tolist()
    plt.close(fig)


def test_ranked_grid_says_what_is_wrong(catalogue):
    with pytest.raises(ValueError, match="no column"):
        ranked_grid(catalogue, "probability_2")
    with pytest.raises(ValueError, match="12 galaxies but scores"):
        ranked_grid(catalogue, [0.5, 0.4])
    with pytest.raises(ValueError, match="id_str"):
        ranked_grid(catalogue["file_loc"].tolist(), catalogue["p"], exclude_ids=["g1"])
    with pytest.raises(ValueError, match="No galaxy"):
        ranked_grid(catalogue, np.full(12, np.nan))


def test_galaxy_grid_checks_lengths():
    pixels = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="3 images but 2 titles"):
        galaxy_grid(pixels, titles=["a", "b"])
    fig = galaxy_grid(pixels, highlight=[True, False, True], suptitle="three")
    assert len(fig.axes) == 3
    plt.close(fig)


def test_ranked_grid_follows_a_given_order_like_notebook_05(catalogue):
    order = [4, 11, 0, 7, 2, 9]  # e.g. anomaly.ranking: best first, no scores needed
    flags = catalogue["ring"].fillna(0).astype(bool).to_numpy()
    fig, shown = ranked_grid(catalogue, None, 4, order=order, highlight=flags, exclude_ids=["g0"])
    assert shown.tolist() == [4, 11, 7, 2]
    assert [ax.get_title() for ax in fig.axes[:4]] == ["", "", "", ""]
    plt.close(fig)
    fig, shown = ranked_grid(catalogue, "p", 2, order=order, pick="bottom", titles="{id_str}")
    assert shown.tolist() == [9, 2] and fig.axes[0].get_title() == "g9"
    plt.close(fig)
    with pytest.raises(ValueError, match="scores or an order"):
        ranked_grid(catalogue, None)


@pytest.mark.parametrize("titles", [["score 5"] * 12, ["vol featured 0.80\ncnn smooth 0.62"] * 12])
def test_no_title_sits_on_an_image_of_the_row_above(titles):
    imgs = np.zeros((12, 16, 16, 3), dtype=np.uint8)
    fig = galaxy_grid(imgs, titles=titles, ncols=6, suptitle="a title")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    images = [ax.get_window_extent(renderer) for ax in fig.axes]
    for ax in fig.axes:
        title = ax.title.get_window_extent(renderer)
        assert not any(title.overlaps(box) for box in images), ax.title.get_text()
    suptitle = fig._suptitle.get_window_extent(renderer)
    assert not any(suptitle.overlaps(box) for box in images)
    assert not any(suptitle.overlaps(ax.title.get_window_extent(renderer)) for ax in fig.axes)

"""The search widget driven headless: set values, click buttons, read the state."""

import datetime

import numpy as np
import pandas as pd
import pytest

from galaxy_helpers.images import save_image
from galaxy_helpers.search_widget import NEIGHBOUR_BUTTON_CLASS, SearchWidget
from galaxy_helpers.similarity import SimilarityIndex


@pytest.fixture()
def setup(tmp_path):
    rng = np.random.default_rng(0)
    n = 30
    x = rng.standard_normal((n, 3))
    x[:10] += 20  # the ten "ring" galaxies sit together
    rows = []
    for i in range(n):
        img = np.full((16, 16, 3), 8 * i, dtype=np.uint8)
        rows.append(
            {
                "id_str": f"g{i}",
                "file_loc": str(save_image(img, tmp_path / f"g{i}.png")),
                "tag_ring": i < 10,
                "tag_lens": i == 15,
            }
        )
    cat = pd.DataFrame(rows)
    index = SimilarityIndex(metric="euclidean").fit(x, ids=cat["id_str"])
    return index, cat, x


def test_pick_a_tag_searches_from_a_tagged_galaxy(setup):
    index, cat, _ = setup
    w = SearchWidget(index, cat, k=5, seed=0)
    assert ("#ring (10)", "ring") in w.tag.options
    w.tag.value = "ring"
    assert w.query_id in {f"g{i}" for i in range(10)}
    assert len(w.results) == 5 and w.query_id not in w.results["id_str"].tolist()
    assert set(w.results["id_str"]) <= {f"g{i}" for i in range(10)}
    assert "5 of 5 share #ring" in w.status.value
    assert len(w.grid.children) == 5 and len(w.neighbour_buttons) == 5
    first = w.query_id
    w.another_button.click()
    assert len(w.history) == 2 and w.history[0] == first


def test_type_an_id_then_click_a_neighbour(setup):
    index, cat, _ = setup
    w = SearchWidget(index, cat, k=4)
    w.id_box.value = "g20"
    w.search_button.click()
    assert w.query_id == "g20"
    expected = index.query("g20", k=4)["id_str"].tolist()
    assert w.results["id_str"].tolist() == expected
    w.neighbour_buttons[2].click()
    assert w.query_id == expected[2] and w.id_box.value == expected[2]
    assert w.history == ["g20", expected[2]]
    w.k_slider.value = 7
    assert len(w.results) == 7 and w.query_id == expected[2]


def test_page_classes_and_tooltips_name_each_neighbour(setup):
    """What the browser test (tests/test_browser.py) finds in the page."""
    index, cat, _ = setup
    w = SearchWidget(index, cat, k=4)
    w.search_id("g20")
    assert "galaxy-search" in w.widget._dom_classes
    assert "galaxy-search-status" in w.status._dom_classes
    assert "galaxy-search-query" in w.query_box._dom_classes
    ids = w.results["id_str"].tolist()
    assert [b.tooltip for b in w.neighbour_buttons] == [f"search from {g}" for g in ids]
    assert all(NEIGHBOUR_BUTTON_CLASS in b._dom_classes for b in w.neighbour_buttons)
    w.neighbour_buttons[1].click()  # the new neighbours' buttons name the new neighbours
    assert "Query <b>" + ids[1] + "</b>" in w.status.value
    new_ids = w.results["id_str"].tolist()
    assert [b.tooltip for b in w.neighbour_buttons] == [f"search from {g}" for g in new_ids]


def test_unknown_or_empty_id_shows_a_message(setup):
    index, cat, _ = setup
    w = SearchWidget(index, cat)
    w.id_box.value = "nope"
    w.search_button.click()
    assert "unknown galaxy id" in w.status.value and w.results is None
    w.id_box.value = "  "
    w.search_button.click()
    assert "type a galaxy id" in w.status.value


def test_upload_needs_a_model_and_then_searches(setup, tmp_path):
    index, cat, _ = setup
    w = SearchWidget(index, cat)
    assert w.upload.disabled
    assert w.search_image(b"123") is None and "needs the model" in w.status.value

    class TinyModel:
        """Maps an image to its mean brightness in 3 dims: enough to check the wiring."""

        metadata = {"image_size": 16, "channels": 3, "mean": None, "std": None}

        def eval(self):
            return self

        @property
        def training(self):
            return False

        def train(self, mode=True):
            return self

        def parameters(self):
            return iter(())

        def encode(self, x):
            return x.mean(dim=(1, 2, 3)).reshape(-1, 1).repeat(1, 3) * 0 + 20

    w = SearchWidget(index, cat, model=TinyModel(), k=3)
    assert not w.upload.disabled
    png = (tmp_path / "g3.png").read_bytes()
    w.upload.value = (
        {
            "name": "mine.png",
            "type": "image/png",
            "size": len(png),
            "content": memoryview(png),
            "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        },
    )
    assert w.query_id == "mine.png"
    # the tiny model puts every image at (20, 20, 20): the neighbours are ring galaxies
    assert set(w.results["id_str"]) <= {f"g{i}" for i in range(10)}
    assert w.results["query"].unique().tolist() == ["mine.png"]
    assert w.search_image(b"not an image", name="bad.png") is None
    assert "cannot search from bad.png" in w.status.value

"""An interactive similarity search: pick a tag, type an id or upload an image (notebook 04).
The controls only call :class:`SearchWidget`'s methods, so it is tested headless::

    w = SearchWidget(index, catalogue, model=model, metadata=metadata, pca=pca)
    w.tag.value = "ring"                 # a random #ring galaxy becomes the query
    w.neighbour_buttons[0].click()       # search again from its nearest neighbour
    w.results                            # the current neighbours (query, rank, id_str, distance)

In the page, the widget carries stable CSS classes for browser tests and styling:
``galaxy-search`` (the whole widget), ``galaxy-search-status`` (the "Query <id>" line),
``galaxy-search-query`` (the query's tile) and ``galaxy-neighbour-button`` on every "search
from here" button, whose tooltip names its galaxy: ``"search from <id_str>"``.
"""

from __future__ import annotations

import io
import os
import tempfile
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_helpers.images import read_image
from galaxy_helpers.similarity import SimilarityIndex, tag_members

__all__ = ["NEIGHBOUR_BUTTON_CLASS", "SearchWidget", "png_bytes"]

NEIGHBOUR_BUTTON_CLASS = "galaxy-neighbour-button"  # every "search from here" button


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 (H, W, 3) image as PNG bytes (what ``ipywidgets.Image`` shows)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class SearchWidget:
    """Similarity search you can click through.

    Parameters
    ----------
    index : SimilarityIndex fitted on ``catalogue`` (``id_str``, ``file_loc``, optional ``tag_``)
    model, metadata, pca : the encoder, its metadata and the index's PCA (only for uploads)
    k, seed, thumb_px, image_size : neighbours, seed of a tag's random galaxy, thumb width, size

    Attributes
    ----------
    query_id, results, history : the query (id or uploaded file name), its neighbours, all so far
    tag, id_box, search_button, another_button, upload, k_slider, status, neighbour_buttons
        The ipywidgets controls (one "search from here" button per neighbour).
    """

    def __init__(
        self,
        index: SimilarityIndex,
        catalogue: pd.DataFrame,
        model=None,
        metadata: dict | None = None,
        pca=None,
        k: int = 8,
        seed: int = 0,
        thumb_px: int = 96,
        image_size: int | None = None,
    ):
        import ipywidgets as widgets

        index._check_fitted()
        missing = [c for c in ("id_str", "file_loc") if c not in catalogue.columns]
        if missing:
            raise ValueError(f"catalogue is missing columns {missing} (need id_str and file_loc)")
        self.index = index
        self.catalogue = catalogue.set_index(catalogue["id_str"].astype(str), drop=False)
        self.model, self.metadata, self.pca = model, metadata, pca
        self.thumb_px, self.image_size = int(thumb_px), image_size
        self._rng = np.random.default_rng(seed)
        self._thumbs: dict[str, bytes] = {}
        self.query_id = self.query_tag = self.results = None
        self.history: list[str] = []
        self.neighbour_buttons: list = []

        has_tags = any(str(c).startswith("tag_") for c in catalogue.columns)
        self._tag_members = tag_members(index, catalogue) if has_tags else {}
        options = [("(choose a tag)", "")] + [
            (f"#{name} ({len(m)})", name) for name, m in self._tag_members.items() if m
        ]
        self.tag = widgets.Dropdown(options=options, value="", description="Tag")
        # width "auto": the default button width cuts these two labels short
        self.another_button = widgets.Button(
            description="Another of this tag", icon="random", layout=widgets.Layout(width="auto")
        )
        self.id_box = widgets.Text(placeholder="a galaxy id", description="Galaxy id")
        self.search_button = widgets.Button(description="Search", button_style="primary")
        self.upload = widgets.FileUpload(
            accept="image/*", description="Upload image", layout=widgets.Layout(width="auto")
        )
        self.upload.disabled = model is None
        self.k_slider = widgets.IntSlider(value=int(k), min=1, max=32, description="Neighbours")
        self.status = widgets.HTML().add_class("galaxy-search-status")
        self.query_box = widgets.Box().add_class("galaxy-search-query")
        columns = f"repeat(auto-fill, {self.thumb_px + 40}px)"  # room for "search from here"
        self.grid = widgets.GridBox(layout=widgets.Layout(grid_template_columns=columns))

        self.tag.observe(lambda c: self.search_tag(c["new"]), names="value")
        self.another_button.on_click(lambda _: self.search_tag(self.tag.value))
        self.search_button.on_click(lambda _: self.search_id(self.id_box.value))
        self.upload.observe(self._on_upload, names="value")
        self.k_slider.observe(self._on_k, names="value")

        self.widget = widgets.VBox(
            [
                widgets.HBox([self.tag, self.another_button]),
                widgets.HBox([self.id_box, self.search_button]),
                widgets.HBox([self.upload, self.k_slider]),
                self.status,
                widgets.HTML("<b>Query</b>"),
                self.query_box,
                widgets.HTML("<b>Nearest neighbours</b> (click one to search from it)"),
                self.grid,
            ]
        ).add_class("galaxy-search")

    @property
    def k(self) -> int:
        """Neighbours shown (the slider's value)."""
        return int(self.k_slider.value)

    def search_tag(self, tag: str) -> pd.DataFrame | None:
        """Search from a random galaxy carrying ``tag``."""
        if not tag:
            return None
        members = self._tag_members.get(tag)
        if not members:
            return self._error(f"no galaxy of the index carries the tag #{tag}")
        gid = str(self._rng.choice(np.asarray(members)))
        return self.search_id(gid, tag=tag)

    def search_id(self, galaxy_id: str, tag: str | None = None) -> pd.DataFrame | None:
        """Search from a galaxy of the catalogue; a clear message for an unknown id."""
        galaxy_id = str(galaxy_id).strip()
        if not galaxy_id:
            return self._error("type a galaxy id first")
        try:
            found = self.index.query(galaxy_id, k=self.k)
        except KeyError as err:
            return self._error(str(err.args[0]) if err.args else str(err))
        self.query_tag = tag
        self._show(galaxy_id, found, self._thumb(galaxy_id))
        return found

    def search_image(self, content: bytes, name: str = "uploaded image") -> pd.DataFrame | None:
        """Embed an image (file bytes) with the model and search from it."""
        if self.model is None:
            return self._error(
                "searching from an image needs the model: SearchWidget(..., model=...)"
            )
        suffix = Path(name).suffix or ".png"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(bytes(content))
            try:
                meta = self.metadata or getattr(self.model, "metadata", {})
                found = self.index.query_image(path, self.model, meta, pca=self.pca, k=self.k)
                thumb = png_bytes(read_image(path, self.image_size))
            except (OSError, ValueError) as err:
                return self._error(f"cannot search from {name}: {err}")
        found["query"] = name
        self.query_tag = None
        self._show(name, found, thumb)
        return found

    def _on_upload(self, change):
        files = change["new"]
        if not files:
            return
        item = files[0] if isinstance(files, list | tuple) else next(iter(files.values()))
        self.search_image(item["content"], name=item.get("name", "uploaded image"))

    def _on_k(self, change):
        if self.query_id is not None and self.query_id in self.index:
            self.search_id(self.query_id, tag=self.query_tag)

    def _thumb(self, galaxy_id: str) -> bytes:
        if galaxy_id not in self._thumbs:
            path = self.catalogue["file_loc"].get(galaxy_id)
            if path is None or not os.path.exists(str(path)):
                img = np.zeros((8, 8, 3), dtype=np.uint8)
            else:
                img = read_image(path, self.image_size)
            self._thumbs[galaxy_id] = png_bytes(img)
        return self._thumbs[galaxy_id]

    def _tags_of(self, galaxy_id: str) -> list[str]:
        return [t for t, m in self._tag_members.items() if galaxy_id in set(m)]

    def _tile(self, galaxy_id: str, caption: str, thumb: bytes, good: bool, button=None):
        import ipywidgets as widgets

        image = widgets.Image(value=thumb, format="png", width=self.thumb_px, height=self.thumb_px)
        border = "3px solid #2ca02c" if good else "3px solid transparent"
        text = widgets.HTML(f"<small>{caption}</small>")
        parts = [image, text] if button is None else [image, text, button]
        return widgets.VBox(parts, layout=widgets.Layout(border=border, padding="2px"))

    def _show(self, query_name: str, found: pd.DataFrame, thumb: bytes):
        import ipywidgets as widgets

        self.query_id = query_name
        self.results = found.reset_index(drop=True)
        self.history.append(query_name)
        tag = self.query_tag
        members = set(self._tag_members.get(tag, [])) if tag else set()
        tags = " ".join(f"#{t}" for t in self._tags_of(query_name))
        self.query_box.children = [self._tile(query_name, f"{query_name} {tags}", thumb, True)]
        tiles, buttons = [], []
        for gid, dist in zip(found["id_str"], found["distance"], strict=True):
            width = widgets.Layout(width=f"{self.thumb_px + 30}px", padding="0px 4px")
            button = widgets.Button(
                description="search from here", tooltip=f"search from {gid}", layout=width
            ).add_class(NEIGHBOUR_BUTTON_CLASS)
            button.on_click(lambda _, g=gid: self._from_neighbour(g))
            buttons.append(button)
            caption = f"{gid}<br>d={dist:.3f}{f' #{tag}' if gid in members else ''}"
            tiles.append(self._tile(gid, caption, self._thumb(gid), gid in members, button))
        self.neighbour_buttons = buttons
        self.grid.children = tiles
        n_hits = sum(g in members for g in found["id_str"])
        hits = f"; {n_hits} of {len(found)} share #{tag}" if tag else ""
        self.status.value = f"Query <b>{query_name}</b>{hits}."

    def _from_neighbour(self, galaxy_id: str):
        self.id_box.value = galaxy_id
        self.search_id(galaxy_id, tag=self.query_tag)

    def _error(self, message: str) -> None:
        self.status.value = f"<span style='color:#b00'>{escape(message)}</span>"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

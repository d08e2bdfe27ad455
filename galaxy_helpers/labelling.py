"""Score galaxies 0 to 5 in a notebook without ever losing a label (notebook 05).

:class:`LabelSession` keeps the labels in an append-only JSON-lines file (a header, then one
``label``, ``undo`` or ``catalogue`` record per line), fsynced before ``label()`` returns and
appended under ``fcntl.flock`` after replaying other tabs' records (README "Reliability");
:class:`LabellingWidget` is an ipywidgets layer over a session and ``anomaly.ActiveLearner``.

>>> session = LabelSession("labels.jsonl", user="ada", catalogue=catalogue)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .core import write_text
from .images import read_image

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one session per file
    fcntl = None

FORMAT = "galaxy_helpers.labels"
VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: undo records name only a line number
SCORES = (0, 1, 2, 3, 4, 5)
SCORE_BUTTON_CLASS = "galaxy-score-button"  # every 0..5 button; plus "galaxy-score-<n>"
_SHOW = 10  # ids listed in a message before "and N more"


class LabelFileError(ValueError):
    """A label file that cannot be trusted: corrupt, truncated, foreign or inconsistent."""


class CatalogueChangedError(LabelFileError):
    """The catalogue lost galaxies that the label file labels (see ``on_catalogue_change``)."""


class LabelFileWarning(UserWarning):
    """The label file was repaired (a crash-cut line set aside) or its catalogue changed."""


def _check_score(score) -> int:
    """``score`` as an int; ValueError unless a whole number 0..5 (bools and NaN refused)."""
    if isinstance(score, bool | np.bool_) or not isinstance(score, int | np.integer):
        raise ValueError(
            f"a score must be a whole number 0 to 5; got {score!r} ({type(score).__name__})"
        )
    if int(score) not in SCORES:
        raise ValueError(f"a score must be 0 to 5; got {int(score)}")
    return int(score)


@dataclass(frozen=True)
class LabelRecord:
    """One line of the label file (``line`` counts from 1, the header being line 1)."""

    line: int
    action: str
    time: str
    user: str
    id_str: str
    score: int | None = None
    undoes_line: int | None = None
    rid: str | None = None
    undoes: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ids_digest(ids) -> str:
    # Part of the file format (header "sha256"), so not a core.content_key cache key.
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()


def _listing(ids) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return ", ".join(repr(i) for i in ids[:_SHOW]) + more


def _write_all(fd: int, data: bytes):
    """Write ``data`` to ``fd`` completely and sync it (one place, so tests can cut it short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


class LabelSession:
    """The labels one researcher has given, backed by an append-only file.

    Parameters
    ----------
    label_file : path; created (with its folder) if missing, resumed if it exists.
    user : who is labelling, written with every record.
    catalogue : DataFrame with ``id_str``, optional; only its galaxies can be labelled.
    on_catalogue_change : ``"error"`` (default) raises :class:`CatalogueChangedError` when
        labelled galaxies left ``catalogue``; ``"keep"`` keeps them aside in ``missing_ids``.
    allow_other_users : let ``user`` add to a file another user started.

    Attributes
    ----------
    labels : dict id_str -> score, the current labels in the order first given.
    records : list of LabelRecord, the whole history (undos included).
    """

    def __init__(
        self,
        label_file,
        user: str,
        catalogue: pd.DataFrame | None = None,
        on_catalogue_change: str = "error",
        allow_other_users: bool = False,
    ):
        if not isinstance(user, str) or not user.strip():
            raise ValueError("user must be a non-empty name, e.g. user='ada'")
        if on_catalogue_change not in ("error", "keep"):
            raise ValueError(
                f"on_catalogue_change must be 'error' or 'keep'; got {on_catalogue_change!r}"
            )
        self.path = Path(label_file)
        self._ids_file = self.path.with_name(self.path.name + ".ids")  # the catalogue's ids
        self.user = user.strip()
        self.allow_other_users = bool(allow_other_users)
        self.known_ids = None
        if catalogue is not None:
            if "id_str" not in catalogue.columns:
                raise ValueError("the catalogue needs an id_str column (the catalogue contract)")
            self.known_ids = set(catalogue["id_str"].astype(str))
        self.records: list[LabelRecord] = []
        self.labels: dict[str, int] = {}
        self.missing_ids: list[str] = []
        self._standing: dict[str, list[tuple[str, int]]] = {}  # id -> [(rid, score)] in order
        self._by_rid: dict[str, LabelRecord] = {}
        self._undone: set[str] = set()
        self._stack: list[str] = []  # rids this session may undo (its own and those it resumed)
        self._first_line: dict[str, int] = {}  # id -> first line labelling it
        self._catalogue_sha: str | None = None
        self._n_lines = self._offset = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as fd:
            self._sync(fd, resuming=True)
            if self._n_lines == 0:
                header = {"format": FORMAT, "version": VERSION, "created": _now()}
                if self.known_ids is not None:
                    header["catalogue"] = self._remember_catalogue()
                self._write(fd, {**header, "user": self.user})
            self._check_catalogue(fd, on_catalogue_change)

    @contextlib.contextmanager
    def _locked(self):
        """The label file opened for appending, under an exclusive lock (released on close)."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _remember_catalogue(self) -> dict:
        """Keep the catalogue's ids beside the file (atomically) and return its summary."""
        write_text(self._ids_file, "".join(i + "\n" for i in sorted(self.known_ids)))
        self._catalogue_sha = _ids_digest(self.known_ids)
        return {"n": len(self.known_ids), "sha256": self._catalogue_sha}

    def _write(self, fd: int, obj: dict) -> int:
        """Append one record (the lock is held and the file synced); return its line number."""
        line = (json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        _write_all(fd, line)
        self._offset += len(line)
        self._n_lines += 1
        return self._n_lines

    def _fail(self, line_no: int, why: str):
        raise LabelFileError(
            f"{self.path}, line {line_no}: {why}. Nothing was changed. Fix or remove that line by "
            "hand (the lines before it are intact), or pass another label_file to start afresh."
        )

    def _sync(self, fd: int, resuming: bool = False):
        """Replay what was appended since we last looked (by us at open, or by other sessions)."""
        size = os.fstat(fd).st_size
        if size <= self._offset:
            return
        raw = os.pread(fd, size - self._offset, self._offset)
        end = raw.rfind(b"\n") + 1
        complete, fragment = raw[:end], raw[end:]
        try:
            lines = complete.decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError as err:
            line_no = self._n_lines + complete[: err.start].count(b"\n") + 1
            self._fail(line_no, "is not UTF-8 text, so this is not a label file")
        if self._n_lines == 0 and not lines:
            self._fail(1, "is incomplete (no line end), so it is not a usable label file header")
        for line in lines:
            self._n_lines += 1
            self._offset += len(line.encode("utf-8")) + 1
            self._replay_line(self._n_lines, line, resuming)
        if fragment:
            self._recover_fragment(fd, fragment, resuming)

    def _recover_fragment(self, fd: int, fragment: bytes, resuming: bool):
        """A last line without a line end: a write that a crash cut short (never acknowledged)."""
        line_no = self._n_lines + 1
        try:
            obj = json.loads(fragment.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            obj = None
        if isinstance(obj, dict) and obj.get("action") in ("label", "undo"):
            _write_all(fd, b"\n")  # the whole record made it; only its line end is missing
            self._n_lines += 1
            self._offset += len(fragment) + 1
            self._replay_line(line_no, fragment.decode("utf-8"), resuming)
            what = "was complete but lacked its line end; the line end was added"
        else:
            aside = self.path.with_name(self.path.name + ".crash-cut")
            with open(aside, "ab") as f:  # appended and synced before the label file is cut
                f.write(fragment + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.ftruncate(fd, self._offset)
            os.fsync(fd)
            what = (
                f"was cut off by a crash mid-write ({len(fragment)} bytes, never acknowledged); "
                f"it was moved to {aside}"
            )
        warnings.warn(
            f"{self.path}, line {line_no} {what}. Every earlier label is intact.",
            LabelFileWarning,
            stacklevel=4,
        )

    def _replay_line(self, line_no: int, line: str, resuming: bool):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if line_no == 1:
                self._fail(1, f"is not a galaxy_helpers label file header ({err.msg})")
            self._fail(line_no, f"is not valid JSON ({err.msg}): {line[:80]!r}")
        if not isinstance(obj, dict):
            self._fail(line_no, f"should hold a JSON object, found {line[:80]!r}")
        if line_no == 1:
            self._check_header(obj, line)
        elif obj.get("action") == "catalogue":  # a change accepted with "keep"
            self._catalogue_sha = obj.get("sha256")
        else:
            self._apply(line_no, obj, resuming)

    def _check_header(self, obj: dict, line: str):
        if obj.get("format") != FORMAT:
            self._fail(1, f"is not a galaxy_helpers label file header: {line[:80]!r}")
        if (version := obj.get("version")) not in READABLE_VERSIONS:
            self._fail(1, f"has label-file version {version!r}; expected {READABLE_VERSIONS}")
        owner = str(obj.get("user", "")).strip()
        if owner and owner != self.user and not self.allow_other_users:
            raise LabelFileError(
                f"{self.path} holds the labels of user {owner!r}, not {self.user!r}. Nothing was "
                f"changed. Pass user={owner!r} to continue their labels, another label_file for "
                "your own, or allow_other_users=True to add yours to the same file on purpose."
            )
        if isinstance(obj.get("catalogue"), dict):
            self._catalogue_sha = obj["catalogue"].get("sha256")

    def _apply(self, line_no: int, obj: dict, resuming: bool) -> LabelRecord:
        action = obj.get("action")
        missing = [k for k in ("time", "user", "id_str") if k not in obj]
        if action not in ("label", "undo") or missing:
            self._fail(line_no, f"is not a label or undo record (missing {missing or 'action'})")
        id_str = str(obj["id_str"])
        rid = str(obj.get("rid") or f"line{line_no}")
        if rid in self._by_rid:
            self._fail(line_no, f"repeats record id {rid!r}")
        if action == "label":
            try:
                score = _check_score(obj.get("score"))
            except ValueError as err:
                self._fail(line_no, str(err))
            rec = LabelRecord(line_no, "label", obj["time"], obj["user"], id_str, score, rid=rid)
            self._stand(rec)
            if resuming:
                self._stack.append(rid)
        else:
            target_line = obj.get("undoes_line")
            target = obj.get("undoes") or f"line{target_line}"  # version 1 names only the line
            label = self._by_rid.get(str(target))
            if (
                label is None
                or label.action != "label"
                or label.id_str != id_str
                or (target_line is not None and label.line != target_line)
                or label.rid in self._undone
            ):
                self._fail(
                    line_no,
                    f"undoes line {target_line!r} (record {target!r}), which is not a standing "
                    f"label of {id_str!r}",
                )
            rec = self._take_back(label, line_no, obj["time"], obj["user"], rid)
        self.records.append(rec)
        return rec

    def _append(self, fd: int, obj: dict) -> LabelRecord:
        """Write a new record of this session (the lock is held) and apply it."""
        obj = {"rid": os.urandom(8).hex(), "time": _now(), "user": self.user, **obj}
        return self._apply(self._write(fd, obj), obj, resuming=True)

    def _stand(self, rec: LabelRecord):
        self._by_rid[rec.rid] = rec
        self._first_line.setdefault(rec.id_str, rec.line)
        self._standing.setdefault(rec.id_str, []).append((rec.rid, rec.score))
        self.labels[rec.id_str] = rec.score

    def _take_back(self, label: LabelRecord, line: int, time: str, user: str, rid: str):
        """Apply the undo of ``label`` written on ``line``; return the undo's record."""
        self._undone.add(label.rid)
        left = [(r, s) for r, s in self._standing[label.id_str] if r != label.rid]
        self._standing[label.id_str] = left
        if left:
            self.labels[label.id_str] = left[-1][1]  # a relabel taken back: the key keeps its place
        else:
            del self.labels[label.id_str]
        rec = LabelRecord(line, "undo", time, user, label.id_str, None, label.line, rid, label.rid)
        self._by_rid[rid] = rec
        return rec

    def _check_catalogue(self, fd: int, on_change: str):
        if self.known_ids is None:
            return
        labelled = set(self._first_line)
        gone = labelled - self.known_ids
        if gone and not labelled & self.known_ids:
            first = min(gone, key=self._first_line.get)
            self._fail(
                self._first_line[first],
                f"labels galaxy {first!r}, which is not in this catalogue: the file belongs to "
                "another catalogue",
            )
        sha = _ids_digest(self.known_ids)
        if sha != self._catalogue_sha and (self._catalogue_sha is not None or gone):
            self._catalogue_changed(fd, gone, on_change)
        for id_str in gone:
            self.labels.pop(id_str, None)
        self.missing_ids = sorted(gone)

    def _catalogue_changed(self, fd: int, gone: set[str], on_change: str):
        before = None
        if self._ids_file.exists():
            old = set(self._ids_file.read_text(encoding="utf-8").split())
            if _ids_digest(old) == self._catalogue_sha:
                before = old
        change = (
            f"new in the catalogue: {_listing(self.known_ids - before) or 'none'}; "
            f"gone from it: {_listing(before - self.known_ids) or 'none'}"
            if before is not None
            else f"the catalogue now has {len(self.known_ids)} galaxies"
        )
        if gone and on_change == "error":
            raise CatalogueChangedError(
                f"{self.path}: the catalogue changed since these labels were given ({change}). "
                f"{len(gone)} labelled galaxies are no longer in it: {_listing(gone)}. Nothing was "
                "changed. Pass on_catalogue_change='keep' to continue with the labels of the "
                "galaxies still in the catalogue (the others stay in the file), or the catalogue "
                "the labels were given on."
            )
        summary = self._remember_catalogue()
        self._write(fd, {"action": "catalogue", "time": _now(), "user": self.user, **summary})
        kept = f"; the labels of {len(gone)} galaxies no longer in it are set aside" if gone else ""
        warnings.warn(
            f"{self.path}: the catalogue changed since these labels were started ({change}){kept}.",
            LabelFileWarning,
            stacklevel=4,
        )

    def label(self, id_str, score) -> LabelRecord:
        """Give ``id_str`` a score 0..5 (replacing an earlier one), on disk before this returns.

        Parameters
        ----------
        score : whole number 0 to 5.

        Returns
        -------
        LabelRecord
        """
        score = _check_score(score)
        id_str = str(id_str)
        if self.known_ids is not None and id_str not in self.known_ids:
            raise KeyError(f"galaxy {id_str!r} is not in this session's catalogue")
        with self._locked() as fd:
            self._sync(fd)
            return self._append(fd, {"action": "label", "id_str": id_str, "score": score})

    def undo(self) -> LabelRecord | None:
        """Take back this session's latest label still standing (never another tab's).

        Returns
        -------
        LabelRecord of the undo, or None when there is nothing to undo.
        """
        with self._locked() as fd:
            self._sync(fd)
            while self._stack and self._stack[-1] in self._undone:
                self._stack.pop()  # already taken back by another session
            if not self._stack:
                return None
            label = self._by_rid[self._stack.pop()]
            obj = {"action": "undo", "id_str": label.id_str, "undoes": label.rid}
            return self._append(fd, {**obj, "undoes_line": label.line})

    @property
    def n_labels(self) -> int:
        """Number of galaxies with a current label."""
        return len(self.labels)

    def scores_for(self, ids) -> np.ndarray:
        """Float scores aligned to ``ids`` (e.g. the catalogue's ``id_str``), NaN if unlabelled."""
        return np.array([self.labels.get(str(i), np.nan) for i in ids], dtype=float)

    def history(self) -> pd.DataFrame:
        """Every record (labels and undos) as a table, in file order."""
        return pd.DataFrame([r.__dict__ for r in self.records])

    def __repr__(self):
        return f"LabelSession({str(self.path)!r}, user={self.user!r}, n_labels={self.n_labels})"


class LabellingWidget:
    """Score galaxies with buttons while a Gaussian process learns what interests you.

    Buttons 0..5 per galaxy, "Retrain and show next batch", "Undo last"; keys in the shortcut
    box: ``0``-``5`` score the framed galaxy, ``u`` undoes, ``n`` retrains. CSS classes for
    browser tests: ``galaxy-`` + ``score-<n>``, ``card``, ``retrain``, ``undo`` or ``keys``.

    Parameters
    ----------
    catalogue : DataFrame with ``id_str`` and ``file_loc``, in the row order of ``features``.
    features : ``(N, D)`` representation of every catalogue galaxy.
    learner : ``fit`` / ``update`` / ``predict`` / ``next_batch``; default ``ActiveLearner()``.
    batch_size : galaxies per batch (10 in the paper).
    image_size : pixels per thumbnail.
    top_n : galaxies in the "current top" gallery.

    Attributes
    ----------
    batch : catalogue rows now shown.
    buttons : dict id_str -> its six Buttons.
    widget : the ipywidgets container (``display(w)`` or the cell's value shows it).
    """

    def __init__(
        self,
        session: LabelSession,
        catalogue: pd.DataFrame,
        features,
        learner=None,
        batch_size: int = 10,
        image_size: int = 96,
        top_n: int = 12,
    ):
        import ipywidgets as W

        from .anomaly import ActiveLearner

        self.W = W
        self.session = session
        self.catalogue = catalogue.reset_index(drop=True)
        if missing := [c for c in ("id_str", "file_loc") if c not in self.catalogue.columns]:
            raise ValueError(f"the catalogue lacks column(s) {missing} (the catalogue contract)")
        self.ids = self.catalogue["id_str"].astype(str).to_numpy()
        self._row = {i: r for r, i in enumerate(self.ids)}
        self.features = np.asarray(features)
        if len(self.features) != len(self.ids):
            raise ValueError(
                f"features has {len(self.features)} rows but the catalogue {len(self.ids)}; "
                "they must describe the same galaxies in the same order"
            )
        self.learner = ActiveLearner() if learner is None else learner
        self.batch_size, self.image_size, self.top_n = int(batch_size), int(image_size), int(top_n)
        self._png: dict[str, bytes] = {}
        self.batch: list[int] = []
        self.buttons: dict[str, list] = {}
        self.cursor = self.n_retrains = 0
        self.progress = W.HTML()
        columns = f"repeat(5, {self.image_size + 40}px)"
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=columns))
        self.retrain_button = W.Button(
            description="Retrain and show next batch", button_style="primary", icon="refresh"
        ).add_class("galaxy-retrain")
        self.retrain_button.layout.width = "260px"
        self.undo_button = W.Button(description="Undo last", icon="undo").add_class("galaxy-undo")
        self.keys = W.Text(
            placeholder="click here, then 0-5 to score, u to undo, n for next batch",
            continuous_update=True,
            layout=W.Layout(width="420px"),
        ).add_class("galaxy-keys")
        self.top_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.retrain_button.on_click(lambda _: self.retrain())
        self.undo_button.on_click(lambda _: self.undo())
        self.keys.observe(self._on_keys, names="value")
        controls = W.HBox([self.retrain_button, self.undo_button, self.keys])
        top_title = W.HTML("<b>Current top galaxies</b> (predicted score)")
        parts = [self.progress, self.grid, controls, top_title, self.top_box]
        self.widget = W.VBox(parts).add_class("galaxy-labelling")
        self.retrain()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def scores(self) -> np.ndarray:
        """Current labels aligned to the catalogue, NaN where unlabelled."""
        return self.session.scores_for(self.ids)

    def _image(self, row: int, width: int):
        id_str = self.ids[row]
        if id_str not in self._png:
            from .search_widget import png_bytes

            pixels = read_image(self.catalogue.at[row, "file_loc"], self.image_size)
            self._png[id_str] = png_bytes(pixels)
        return self.W.Image(
            value=self._png[id_str], format="png", layout=self.W.Layout(width=f"{width}px")
        )

    def _card(self, row: int):
        W, id_str = self.W, self.ids[row]
        buttons = []
        for s in SCORES:
            b = W.Button(description=str(s), tooltip=f"score {s} for {id_str}")
            b.layout = W.Layout(width="30px", padding="0px")
            b.add_class(SCORE_BUTTON_CLASS).add_class(f"galaxy-score-{s}")
            b.on_click(lambda _, i=id_str, s=s: self.score(i, s))
            buttons.append(b)
        self.buttons[id_str] = buttons
        name = W.HTML(f"<small>{id_str}</small>")
        card = W.VBox([self._image(row, self.image_size), name, W.HBox(buttons)])
        return card.add_class("galaxy-card")

    def _refresh(self):
        current = self.session.labels
        for id_str, buttons in self.buttons.items():
            for s, b in zip(SCORES, buttons, strict=True):
                b.button_style = "success" if current.get(id_str) == s else ""
        unlabelled = [k for k, r in enumerate(self.batch) if self.ids[r] not in current]
        self.cursor = unlabelled[0] if unlabelled else len(self.batch)
        for k, child in enumerate(self.grid.children):
            child.layout.border = "3px solid orange" if k == self.cursor else "1px solid #ddd"
        keen = sum(1 for v in current.values() if v >= 4)
        done = len(self.batch) - len(unlabelled)
        self.progress.value = (
            f"<b>{self.session.n_labels} labels so far</b> ({keen} scored 4 or 5) &middot; this "
            f"batch: {done}/{len(self.batch)} scored &middot; retrained {self.n_retrains} times"
            f" &middot; saved to <code>{self.session.path}</code>"
        )

    def _show_top(self):
        W = self.W
        if self.session.n_labels == 0:
            self.top_box.children = [W.HTML("<i>no labels yet: score the batch above</i>")]
            return
        pred = self.learner.predict()
        cards = []
        for r in np.argsort(-pred, kind="stable")[: self.top_n]:
            label = self.session.labels.get(self.ids[r])
            caption = f"<small>{pred[r]:.1f}{f' ({label})' if label is not None else ''}</small>"
            image = self._image(r, max(self.image_size // 2, 32))
            cards.append(W.VBox([image, W.HTML(caption)]))
        self.top_box.children = cards

    def score(self, id_str: str, score: int):
        """Label one galaxy (what its button does); written to disk at once."""
        self.session.label(id_str, score)
        self._refresh()

    def undo(self):
        """Take back the last label (what "Undo last" does)."""
        self.session.undo()
        self._refresh()

    def retrain(self, show: bool = True):
        """Refit on every label so far, show the next batch and the current top galaxies
        (``show=False``: only choose the next batch, as a simulated run between batches)."""
        y = self.scores()
        if not hasattr(self.learner, "embedding_") and not hasattr(self.learner, "X_"):
            self.learner.fit(self.features, y)
        else:
            self.learner.update(y)
        self.n_retrains += 1
        labelled = [self._row[i] for i in self.session.labels if i in self._row]
        batch = self.learner.next_batch(self.batch_size, exclude=np.array(labelled, dtype=int))
        self.batch = [int(r) for r in batch]
        if not show:
            return
        self.buttons = {}
        self.grid.children = [self._card(r) for r in self.batch]
        self._show_top()
        self._refresh()

    def _on_keys(self, change):
        for ch in change["new"]:
            if ch.isdigit() and int(ch) in SCORES and self.cursor < len(self.batch):
                self.buttons[self.ids[self.batch[self.cursor]]][int(ch)].click()
            elif ch.lower() == "u":
                self.undo_button.click()
            elif ch.lower() == "n":
                self.retrain_button.click()
        if change["new"]:
            self.keys.value = ""

    def run_simulated(self, researcher_scores, n_labels: int = 200, progress: bool = True):
        """Score for a simulated researcher until ``n_labels`` labels exist (resumes).

        Every galaxy of each batch is scored as its button does (the label file is written at
        once), then the learner retrains; the cards are drawn for the last batch only: nobody
        looks at the batches in between, and drawing them was half the run's time.

        Parameters
        ----------
        researcher_scores : ``(N,)`` ints aligned to the catalogue.
        n_labels : labels to reach.
        progress : show a progress bar.

        Returns
        -------
        self
        """
        from tqdm.auto import tqdm

        start = min(self.session.n_labels, n_labels)
        bar = tqdm(total=n_labels, initial=start, desc="simulated labels", disable=not progress)
        while self.session.n_labels < n_labels:
            before = self.session.n_labels
            for r in self.batch:  # click every unscored galaxy, as a person would
                if self.session.n_labels >= n_labels:
                    break
                if self.ids[r] not in self.session.labels:
                    self.session.label(self.ids[r], int(researcher_scores[r]))
            bar.update(self.session.n_labels - before)
            if self.session.n_labels >= n_labels:
                break
            self.retrain(show=False)
            if not self.batch:
                break
        bar.close()
        self.retrain()
        return self

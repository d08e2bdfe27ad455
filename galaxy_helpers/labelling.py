"""Score galaxies 0 to 5 in a notebook without ever losing a label (notebook 05).

Two layers, as in Astronomaly's front end:

- :class:`LabelSession` is the state: every label is appended to a JSON-lines file and synced to
  disk the moment it is given; "undo" appends an undo record (history is never rewritten);
  re-creating the session on the same file (after a kernel restart) replays it and resumes
  exactly. A corrupt or foreign file raises :class:`LabelFileError` naming the file and line.
- :class:`LabellingWidget` is a thin ipywidgets layer over a session and an active learner
  (``anomaly.ActiveLearner``): a grid of galaxies with 0..5 buttons, "retrain and show next
  batch", "undo last", keyboard shortcuts, a progress line and the current top-N gallery.

The label file, one JSON object per line::

    {"format": "galaxy_helpers.labels", "version": 2, "created": "...", "user": "ada",
     "catalogue": {"n": 60, "sha256": "..."}}
    {"action": "label", "rid": "3f9a...", "time": "2026-...Z", "user": "ada", "id_str": "J1234",
     "score": 4}
    {"action": "undo", "rid": "...", "time": "...", "user": "ada", "id_str": "J1234",
     "undoes": "3f9a...", "undoes_line": 2}

Guarantees (see README "Reliability"):

- a label is on disk (written and fsynced) before ``label()`` returns;
- every append holds an exclusive lock on the file (``fcntl.flock``; POSIX only), and first reads
  what other sessions appended, so two notebook tabs on one file interleave whole records;
- an undo names the record it takes back (``undoes``, a random record id), never only a line
  number, so one tab's undo cannot take back another tab's label;
- a last line cut off by a crash (never acknowledged: it has no line end) is set aside into
  ``<file>.crash-cut`` with a warning, and the session resumes;
- the file belongs to one user (its header's); another user is refused unless
  ``allow_other_users=True``;
- when the catalogue changed since the file was started (the header keeps its size and a hash of
  its ids; ``<file>.ids`` keeps the ids), labelled galaxies that left it stop the session with a
  message listing them; ``on_catalogue_change="keep"`` continues with the others.

Example
-------
>>> session = LabelSession("labels.jsonl", user="ada", catalogue=catalogue)
>>> session.label("J1234", 4)
>>> session.undo()
>>> LabelSession("labels.jsonl", user="ada", catalogue=catalogue).labels   # resumed
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

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


def check_score(score) -> int:
    """Return ``score`` as an int if it is a whole number 0..5, else raise ``ValueError``.

    Booleans, fractions, strings and NaN are refused: a score is a deliberate 0, 1, 2, 3, 4 or 5.
    """
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


def _new_rid() -> str:
    return os.urandom(8).hex()


def _ids_digest(ids) -> str:
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
    label_file : path
        JSON-lines file; created (with its folder) if missing, resumed if it exists.
    user : str
        Who is labelling; written with every record. A file started by another user is refused
        unless ``allow_other_users=True`` (then each record keeps its own user).
    catalogue : DataFrame or None
        With ``id_str``; when given, only its galaxies can be labelled, and a file holding only
        other ids is refused as foreign (it belongs to another catalogue).
    on_catalogue_change : "error" or "keep"
        What to do when labelled galaxies are missing from ``catalogue`` (but some are in it):
        ``"error"`` (default) raises :class:`CatalogueChangedError` listing them; ``"keep"``
        continues with the labels of the galaxies still there (the others stay in the file and are
        listed in ``missing_ids``) and records the new catalogue.
    allow_other_users : bool
        Let ``user`` add to a file another user started.

    Attributes
    ----------
    labels : dict id_str -> score (the current labels, in the order first given)
    records : list of LabelRecord (the whole history, undos included)
    missing_ids : list of labelled ids not in ``catalogue`` (only with ``"keep"``)

    Raises
    ------
    LabelFileError
        When the file exists but is not a label file, is corrupt, belongs to another user, or
        labels galaxies that are not in ``catalogue``; the message names the file and line.
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
        self._n_lines = 0
        self._offset = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as fd:
            self._sync(fd, resuming=True)
            if self._n_lines == 0:
                self._create(fd)
            self._check_catalogue(fd, on_catalogue_change)

    # ------------------------------------------------------------------ file handling
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

    def _create(self, fd: int):
        header = {"format": FORMAT, "version": VERSION, "created": _now(), "user": self.user}
        if self.known_ids is not None:
            header["catalogue"] = self._remember_catalogue()
        self._write(fd, header)

    def _remember_catalogue(self) -> dict:
        """Keep the catalogue's ids beside the file (atomically) and return its summary."""
        ids_file = self.path.with_name(self.path.name + ".ids")
        tmp = ids_file.with_name(ids_file.name + f".{os.getpid()}.tmp")
        tmp.write_text("".join(i + "\n" for i in sorted(self.known_ids)), encoding="utf-8")
        os.replace(tmp, ids_file)
        self._catalogue_sha = _ids_digest(self.known_ids)
        return {"n": len(self.known_ids), "sha256": self._catalogue_sha}

    def _write(self, fd: int, obj: dict) -> int:
        """Append one record (the lock is held and the file synced); return its line number."""
        line = json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"
        _write_all(fd, line.encode("utf-8"))
        self._offset += len(line.encode("utf-8"))
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
            text = complete.decode("utf-8")
        except UnicodeDecodeError as err:
            line_no = self._n_lines + complete[: err.start].count(b"\n") + 1
            self._fail(line_no, "is not UTF-8 text, so this is not a label file")
        lines = text.split("\n")[:-1]
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
            with open(aside, "ab") as f:
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
        else:
            self._apply(line_no, obj, resuming)

    def _check_header(self, obj: dict, line: str):
        if obj.get("format") != FORMAT:
            self._fail(1, f"is not a galaxy_helpers label file header: {line[:80]!r}")
        if obj.get("version") not in READABLE_VERSIONS:
            self._fail(
                1, f"has label-file version {obj.get('version')!r}; expected {READABLE_VERSIONS}"
            )
        owner = str(obj.get("user", "")).strip()
        if owner and owner != self.user and not self.allow_other_users:
            raise LabelFileError(
                f"{self.path} holds the labels of user {owner!r}, not {self.user!r}. Nothing was "
                f"changed. Pass user={owner!r} to continue their labels, another label_file for "
                "your own, or allow_other_users=True to add yours to the same file on purpose."
            )
        catalogue = obj.get("catalogue")
        if isinstance(catalogue, dict):
            self._catalogue_sha = catalogue.get("sha256")

    def _apply(self, line_no: int, obj: dict, resuming: bool):
        action = obj.get("action")
        if action == "catalogue":  # the catalogue was changed on purpose (on_catalogue_change)
            self._catalogue_sha = obj.get("sha256")
            return
        missing = [k for k in ("time", "user", "id_str") if k not in obj]
        if action not in ("label", "undo") or missing:
            self._fail(line_no, f"is not a label or undo record (missing {missing or 'action'})")
        id_str = str(obj["id_str"])
        rid = str(obj.get("rid") or f"line{line_no}")
        if rid in self._by_rid:
            self._fail(line_no, f"repeats record id {rid!r}")
        if action == "label":
            try:
                score = check_score(obj.get("score"))
            except ValueError as err:
                self._fail(line_no, str(err))
            rec = LabelRecord(line_no, "label", obj["time"], obj["user"], id_str, score, rid=rid)
            self._stand(rec)
            if resuming:
                self._stack.append(rid)
        else:
            target_line = obj.get("undoes_line")
            target = obj.get("undoes")
            if target is None:  # version 1: the line number is all we have
                target = f"line{target_line}"
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
            self._take_back(label)
            rec = LabelRecord(
                line_no, "undo", obj["time"], obj["user"], id_str, None, label.line, rid, label.rid
            )
        self._by_rid[rid] = rec
        self.records.append(rec)

    def _stand(self, rec: LabelRecord):
        self._by_rid[rec.rid] = rec
        self._first_line.setdefault(rec.id_str, rec.line)
        self._standing.setdefault(rec.id_str, []).append((rec.rid, rec.score))
        self.labels[rec.id_str] = rec.score

    def _take_back(self, label: LabelRecord):
        self._undone.add(label.rid)
        left = [(r, s) for r, s in self._standing[label.id_str] if r != label.rid]
        self._standing[label.id_str] = left
        if left:
            self.labels[label.id_str] = left[-1][1]  # a relabel taken back: the key keeps its place
        else:
            del self.labels[label.id_str]

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
        if sha == self._catalogue_sha or (self._catalogue_sha is None and not gone):
            for id_str in gone:  # a change accepted before (on_catalogue_change="keep")
                self.labels.pop(id_str, None)
            self.missing_ids = sorted(gone)
            return
        before = None
        ids_file = self.path.with_name(self.path.name + ".ids")
        if ids_file.exists():
            old = set(ids_file.read_text(encoding="utf-8").split())
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
        for id_str in gone:
            self.labels.pop(id_str, None)
        self.missing_ids = sorted(gone)
        summary = self._remember_catalogue()
        self._write(fd, {"action": "catalogue", "time": _now(), "user": self.user, **summary})
        kept = f"; the labels of {len(gone)} galaxies no longer in it are set aside" if gone else ""
        warnings.warn(
            f"{self.path}: the catalogue changed since these labels were started ({change}){kept}.",
            LabelFileWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ public API
    def label(self, id_str, score) -> LabelRecord:
        """Give ``id_str`` a score 0..5; written to disk before this returns.

        Giving a galaxy a new score replaces the old one (undo brings it back).

        Returns
        -------
        LabelRecord
        """
        score = check_score(score)
        id_str = str(id_str)
        if self.known_ids is not None and id_str not in self.known_ids:
            raise KeyError(f"galaxy {id_str!r} is not in this session's catalogue")
        rid = _new_rid()
        obj = {"action": "label", "rid": rid, "time": _now(), "user": self.user}
        obj.update(id_str=id_str, score=score)
        with self._locked() as fd:
            self._sync(fd)
            line = self._write(fd, obj)
        rec = LabelRecord(line, "label", obj["time"], self.user, id_str, score, rid=rid)
        self._stand(rec)
        self._stack.append(rid)
        self.records.append(rec)
        return rec

    def undo(self) -> LabelRecord | None:
        """Take back this session's most recent label still standing (appends an undo record).

        A resumed session can undo the labels it resumed; labels another session (another tab)
        gives meanwhile are that session's to undo.

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
            rid = _new_rid()
            obj = {"action": "undo", "rid": rid, "time": _now(), "user": self.user}
            obj.update(id_str=label.id_str, undoes=label.rid, undoes_line=label.line)
            line = self._write(fd, obj)
        self._take_back(label)
        rec = LabelRecord(
            line, "undo", obj["time"], self.user, label.id_str, None, label.line, rid, label.rid
        )
        self._by_rid[rid] = rec
        self.records.append(rec)
        return rec

    @property
    def n_labels(self) -> int:
        """Number of galaxies with a current label."""
        return len(self.labels)

    def scores_for(self, ids) -> np.ndarray:
        """Scores aligned to ``ids`` (e.g. the catalogue's id_str), NaN where unlabelled.

        Returns
        -------
        np.ndarray of float
        """
        return np.array([self.labels.get(str(i), np.nan) for i in ids], dtype=float)

    def history(self) -> pd.DataFrame:
        """Every record (labels and undos) as a table, in file order."""
        return pd.DataFrame([r.__dict__ for r in self.records])

    def __repr__(self):
        return f"LabelSession({str(self.path)!r}, user={self.user!r}, n_labels={self.n_labels})"


# ---------------------------------------------------------------------- widget
def _png_bytes(path, size: int) -> bytes:
    from PIL import Image

    from .images import read_image

    buf = io.BytesIO()
    Image.fromarray(read_image(path, size)).save(buf, format="PNG")
    return buf.getvalue()


class LabellingWidget:
    """Score galaxies with buttons while a Gaussian process learns what interests you.

    Shows the current batch (the learner's suggestions) as a grid: each galaxy with six buttons
    0..5. "Retrain and show next batch" refits the learner on every label so far and shows the
    next batch; "Undo last" takes back the last label. Keyboard: click the shortcut box, then
    ``0``-``5`` scores the highlighted galaxy (and moves on), ``u`` undoes, ``n`` retrains.

    Every button has the CSS class ``galaxy-score-button`` and ``galaxy-score-<n>``, its card
    ``galaxy-card``; the retrain and undo buttons ``galaxy-retrain`` and ``galaxy-undo``; the
    shortcut box ``galaxy-keys`` (for browser tests).

    Parameters
    ----------
    session : LabelSession
    catalogue : DataFrame
        ``id_str`` and ``file_loc``, in the same row order as ``features``.
    features : (N, D) array
        Representation of every catalogue galaxy.
    learner : estimator or None
        ``fit`` / ``update`` / ``predict`` / ``next_batch``; default ``anomaly.ActiveLearner()``.
    batch_size : int
        Galaxies per batch (10 in the paper).
    image_size : int
        Pixels per thumbnail.
    top_n : int
        Galaxies in the "current top" gallery.

    Attributes
    ----------
    batch : list of row indices now shown
    buttons : dict id_str -> list of six Buttons
    widget : the ipywidgets container (displayed by ``display(w)`` or as the cell's value)
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
        missing = [c for c in ("id_str", "file_loc") if c not in self.catalogue.columns]
        if missing:
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
        self.batch_size = int(batch_size)
        self.image_size = int(image_size)
        self.top_n = int(top_n)
        self._png: dict[str, bytes] = {}
        self.batch: list[int] = []
        self.buttons: dict[str, list] = {}
        self.cursor = 0
        self.n_retrains = 0

        self.progress = W.HTML()
        self.grid = W.GridBox(
            layout=W.Layout(grid_template_columns=f"repeat(5, {self.image_size + 40}px)")
        )
        self.retrain_button = W.Button(
            description="Retrain and show next batch", button_style="primary", icon="refresh"
        )
        self.retrain_button.add_class("galaxy-retrain")
        self.retrain_button.layout.width = "260px"
        self.undo_button = W.Button(description="Undo last", icon="undo")
        self.undo_button.add_class("galaxy-undo")
        self.keys = W.Text(
            placeholder="click here, then 0-5 to score, u to undo, n for next batch",
            continuous_update=True,
            layout=W.Layout(width="420px"),
        )
        self.keys.add_class("galaxy-keys")
        self.top_box = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.retrain_button.on_click(lambda _: self.retrain())
        self.undo_button.on_click(lambda _: self.undo())
        self.keys.observe(self._on_keys, names="value")
        self.widget = W.VBox(
            [
                self.progress,
                self.grid,
                W.HBox([self.retrain_button, self.undo_button, self.keys]),
                W.HTML("<b>Current top galaxies</b> (predicted score)"),
                self.top_box,
            ]
        )
        self.widget.add_class("galaxy-labelling")
        self.retrain()

    # ------------------------------------------------------------------ state -> view
    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def labelled_rows(self) -> np.ndarray:
        """Catalogue rows with a current label."""
        return np.array([self._row[i] for i in self.session.labels if i in self._row], dtype=int)

    def scores(self) -> np.ndarray:
        """Current labels aligned to the catalogue, NaN where unlabelled."""
        return self.session.scores_for(self.ids)

    def _thumb(self, id_str: str) -> bytes:
        if id_str not in self._png:
            self._png[id_str] = _png_bytes(
                self.catalogue.at[self._row[id_str], "file_loc"], self.image_size
            )
        return self._png[id_str]

    def _card(self, row: int):
        W = self.W
        id_str = self.ids[row]
        image = W.Image(
            value=self._thumb(id_str), format="png", layout=W.Layout(width=f"{self.image_size}px")
        )
        buttons = []
        for s in SCORES:
            b = W.Button(
                description=str(s),
                tooltip=f"score {s} for {id_str}",
                layout=W.Layout(width="30px", padding="0px"),
            )
            b.add_class(SCORE_BUTTON_CLASS)
            b.add_class(f"galaxy-score-{s}")
            b.on_click(lambda _, i=id_str, s=s: self.score(i, s))
            buttons.append(b)
        self.buttons[id_str] = buttons
        card = W.VBox([image, W.HTML(f"<small>{id_str}</small>"), W.HBox(buttons)])
        card.add_class("galaxy-card")
        return card

    def _refresh(self):
        current = self.session.labels
        for id_str, buttons in self.buttons.items():
            for s, b in zip(SCORES, buttons, strict=True):
                b.button_style = "success" if current.get(id_str) == s else ""
        unlabelled = [k for k, r in enumerate(self.batch) if self.ids[r] not in current]
        self.cursor = unlabelled[0] if unlabelled else len(self.batch)
        for k, child in enumerate(self.grid.children):
            child.layout.border = "3px solid orange" if k == self.cursor else "1px solid #ddd"
        n = self.session.n_labels
        keen = sum(1 for v in current.values() if v >= 4)
        done = len(self.batch) - len(unlabelled)
        self.progress.value = (
            f"<b>{n} labels so far</b> ({keen} scored 4 or 5) &middot; this batch: "
            f"{done}/{len(self.batch)} scored &middot; retrained {self.n_retrains} times"
            f" &middot; saved to <code>{self.session.path}</code>"
        )

    def _show_top(self):
        W = self.W
        if self.session.n_labels == 0:
            self.top_box.children = [W.HTML("<i>no labels yet: score the batch above</i>")]
            return
        pred = self.learner.predict()
        order = np.argsort(-pred, kind="stable")[: self.top_n]
        cards = []
        for r in order:
            img = W.Image(
                value=self._thumb(self.ids[r]),
                format="png",
                layout=W.Layout(width=f"{max(self.image_size // 2, 32)}px"),
            )
            label = self.session.labels.get(self.ids[r])
            mark = f" ({label})" if label is not None else ""
            cards.append(W.VBox([img, W.HTML(f"<small>{pred[r]:.1f}{mark}</small>")]))
        self.top_box.children = cards

    # ------------------------------------------------------------------ actions
    def score(self, id_str: str, score: int):
        """Label one galaxy (what its button does); written to disk at once."""
        self.session.label(id_str, score)
        self._refresh()

    def undo(self):
        """Take back the last label (what "Undo last" does)."""
        self.session.undo()
        self._refresh()

    def retrain(self):
        """Refit on every label so far, show the next batch and the current top galaxies."""
        y = self.scores()
        if not hasattr(self.learner, "embedding_") and not hasattr(self.learner, "X_"):
            self.learner.fit(self.features, y)
        else:
            self.learner.update(y)
        self.n_retrains += 1
        self.batch = [
            int(r) for r in self.learner.next_batch(self.batch_size, exclude=self.labelled_rows())
        ]
        self.buttons = {}
        self.grid.children = [self._card(r) for r in self.batch]
        self._show_top()
        self._refresh()

    def _on_keys(self, change):
        text = change["new"]
        if not text:
            return
        for ch in text:
            if ch.isdigit() and int(ch) in SCORES and self.cursor < len(self.batch):
                self.buttons[self.ids[self.batch[self.cursor]]][int(ch)].click()
            elif ch.lower() == "u":
                self.undo_button.click()
            elif ch.lower() == "n":
                self.retrain_button.click()
        self.keys.value = ""

    def answer_with(self, researcher_scores, limit: int | None = None) -> int:
        """Let a simulated researcher click a button for every unscored galaxy of the batch.

        Parameters
        ----------
        researcher_scores : (N,) ints aligned to the catalogue
        limit : int or None
            Score at most this many.

        Returns
        -------
        int, the number of galaxies scored
        """
        n = 0
        for r in self.batch:
            id_str = self.ids[r]
            if limit is not None and n >= limit:
                break
            if id_str not in self.session.labels:
                self.buttons[id_str][int(researcher_scores[r])].click()
                n += 1
        return n

    def run_simulated(self, researcher_scores, n_labels: int = 200, progress: bool = True):
        """Answer batch after batch with a simulated researcher until ``n_labels`` labels exist.

        Resumes: labels already in the session count. Uses the buttons, so the label file is
        written exactly as when a person clicks.

        Returns
        -------
        self
        """
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n_labels,
            initial=min(self.session.n_labels, n_labels),
            desc="simulated labels",
            disable=not progress,
        )
        while self.session.n_labels < n_labels:
            before = self.session.n_labels
            self.answer_with(researcher_scores, limit=n_labels - before)
            bar.update(self.session.n_labels - before)
            if self.session.n_labels >= n_labels:
                break
            self.retrain()
            if not self.batch:
                break
        bar.close()
        self.retrain()
        return self

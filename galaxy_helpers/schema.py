"""Galaxy Zoo decision trees as data, and what to do with vote counts.

A *schema* lists a tree's questions, their answers, and which answer leads to which question.
Catalogues hold one vote-count column per answer, ``<question>_<answer>``; unasked questions
hold 0 votes, never NaN, so they contribute nothing to the loss.

>>> from galaxy_helpers.schema import DECALS_DR5
>>> DECALS_DR5.n_questions, DECALS_DR5.n_answers
(10, 34)
>>> [q.name for q in DECALS_DR5.children("smooth-or-featured-dr5", "smooth")]
['how-rounded-dr5', 'merging-dr5']
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = [
    "Question", "UnknownQuestionError", "Schema", "DECALS_DR5", "GZ2", "SCHEMAS", "get_schema",
    "canonical_columns", "vote_counts", "vote_fractions", "total_votes", "parent_child_problems",
    "MAX_VOTES", "was_asked", "confident_answer", "DECALS_DR5_PARTS",
    "select_questions", "DECALS_DR5_SHORT_NAMES",
]  # fmt: skip


class UnknownQuestionError(KeyError, ValueError):
    """A question name that the schema does not have (the message suggests close names)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Question:
    """One question of a decision tree: ``name`` and ``answers`` as in column names
    (``"bar-dr5"``, ``("strong", ...)``); asked when *any* of the ``requires`` (question, answer)
    pairs was answered so (empty: always asked)."""

    name: str
    answers: tuple[str, ...]
    requires: tuple[tuple[str, str], ...] = ()

    @property
    def columns(self) -> list[str]:
        """Vote-count column names, ``<question>_<answer>``, in answer order."""
        return [f"{self.name}_{a}" for a in self.answers]


@dataclass(frozen=True)
class Schema:
    """A decision tree: a short ``name`` (``"decals_dr5"``), its ``questions`` (parents first) and
    the release ``suffix`` of their names (``"-dr5"``; column names without it are aliases)."""

    name: str
    questions: tuple[Question, ...]
    suffix: str = ""
    _by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        by_name = {}
        for q in self.questions:
            if q.name in by_name:
                raise ValueError(f"Schema {self.name!r}: question {q.name!r} appears twice.")
            for parent, answer in q.requires:
                if parent not in by_name:
                    raise ValueError(
                        f"Schema {self.name!r}: question {q.name!r} requires {parent!r}, which "
                        "must come earlier in the list of questions."
                    )
                if answer not in by_name[parent].answers:
                    raise ValueError(
                        f"Schema {self.name!r}: {parent!r} has no answer {answer!r} "
                        f"(answers: {by_name[parent].answers})."
                    )
            by_name[q.name] = q
        object.__setattr__(self, "_by_name", by_name)

    @property
    def question_names(self) -> list[str]:
        return [q.name for q in self.questions]

    @property
    def answer_columns(self) -> list[str]:
        """All vote-count columns, question by question (the model's output order)."""
        return [c for q in self.questions for c in q.columns]

    @property
    def n_questions(self) -> int:
        return len(self.questions)

    @property
    def n_answers(self) -> int:
        return sum(len(q.answers) for q in self.questions)

    @property
    def answer_slices(self) -> list[tuple[int, int]]:
        """(start, stop) of each question's answers within :attr:`answer_columns`."""
        bounds = np.cumsum([0, *(len(q.answers) for q in self.questions)]).tolist()
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def question(self, name: str) -> Question:
        """The question called ``name`` (either spelling). Unknown names get suggestions."""
        for key in (name, name + self.suffix):
            if key in self._by_name:
                return self._by_name[key]
        close = difflib.get_close_matches(name, self.question_names, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise UnknownQuestionError(
            f"Unknown question {name!r} for schema {self.name!r}.{hint} "
            f"Questions: {self.question_names}."
        )

    def question_index(self, name: str) -> int:
        return self.question_names.index(self.question(name).name)

    def children(self, question: str, answer: str) -> list[Question]:
        """Questions that answering ``question`` with ``answer`` leads to."""
        q = self.question(question)
        if answer not in q.answers:
            raise ValueError(
                f"Question {q.name!r} has no answer {answer!r}; its answers are {list(q.answers)}."
            )
        return [c for c in self.questions if (q.name, answer) in c.requires]


def _q(name, answers, *requires):
    return Question(name, tuple(answers), tuple(requires))


# Galaxy Zoo DECaLS DR5 (Walmsley et al. 2022, MNRAS 509, 3966); order as in Zoobot.
# fmt: off
DECALS_DR5 = Schema("decals_dr5", (
    _q("smooth-or-featured-dr5", ["smooth", "featured-or-disk", "artifact"]),
    _q("disk-edge-on-dr5", ["yes", "no"], ("smooth-or-featured-dr5", "featured-or-disk")),
    _q("has-spiral-arms-dr5", ["yes", "no"], ("disk-edge-on-dr5", "no")),
    _q("bar-dr5", ["strong", "weak", "no"], ("disk-edge-on-dr5", "no")),
    _q("bulge-size-dr5", ["dominant", "large", "moderate", "small", "none"], ("disk-edge-on-dr5", "no")),
    _q("how-rounded-dr5", ["round", "in-between", "cigar-shaped"], ("smooth-or-featured-dr5", "smooth")),
    _q("edge-on-bulge-dr5", ["boxy", "none", "rounded"], ("disk-edge-on-dr5", "yes")),
    _q("spiral-winding-dr5", ["tight", "medium", "loose"], ("has-spiral-arms-dr5", "yes")),
    _q("spiral-arm-count-dr5", ["1", "2", "3", "4", "more-than-4", "cant-tell"], ("has-spiral-arms-dr5", "yes")),
    _q("merging-dr5", ["none", "minor-disturbance", "major-disturbance", "merger"],
       ("smooth-or-featured-dr5", "smooth"), ("smooth-or-featured-dr5", "featured-or-disk")),
), suffix="-dr5")

#: The DR5 tree in three parts of 10 to 13 answers, for figures of one row per answer that would
#: be too tall in one piece: what every galaxy is asked first (and smooth or edge-on galaxies
#: next), the face-on disk's questions, and the details below them.
DECALS_DR5_PARTS = (
    ("smooth-or-featured-dr5", "disk-edge-on-dr5", "how-rounded-dr5", "edge-on-bulge-dr5"),
    ("has-spiral-arms-dr5", "bar-dr5", "bulge-size-dr5"),
    ("spiral-winding-dr5", "spiral-arm-count-dr5", "merging-dr5"),
)

#: Short names of the DR5 questions for figure titles.
DECALS_DR5_SHORT_NAMES = {
    "smooth-or-featured-dr5": "smooth/feat", "disk-edge-on-dr5": "edge-on",
    "has-spiral-arms-dr5": "spiral", "bar-dr5": "bar", "bulge-size-dr5": "bulge",
    "how-rounded-dr5": "rounded", "edge-on-bulge-dr5": "edge bulge",
    "spiral-winding-dr5": "winding", "spiral-arm-count-dr5": "arms", "merging-dr5": "merging",
}  # fmt: skip

# Galaxy Zoo 2 (Willett et al. 2013), for loading GZ2 catalogues.
GZ2 = Schema("gz2", (
    _q("smooth-or-featured-gz2", ["smooth", "featured-or-disk", "artifact"]),
    _q("disk-edge-on-gz2", ["yes", "no"], ("smooth-or-featured-gz2", "featured-or-disk")),
    _q("has-spiral-arms-gz2", ["yes", "no"], ("disk-edge-on-gz2", "no")),
    _q("bar-gz2", ["yes", "no"], ("disk-edge-on-gz2", "no")),
    _q("bulge-size-gz2", ["dominant", "obvious", "just-noticeable", "no"], ("disk-edge-on-gz2", "no")),
    _q("something-odd-gz2", ["yes", "no"],
       ("smooth-or-featured-gz2", "smooth"), ("smooth-or-featured-gz2", "featured-or-disk")),
    _q("how-rounded-gz2", ["round", "in-between", "cigar"], ("smooth-or-featured-gz2", "smooth")),
    _q("bulge-shape-gz2", ["round", "boxy", "no-bulge"], ("disk-edge-on-gz2", "yes")),
    _q("spiral-winding-gz2", ["tight", "medium", "loose"], ("has-spiral-arms-gz2", "yes")),
    _q("spiral-arm-count-gz2", ["1", "2", "3", "4", "more-than-4", "cant-tell"], ("has-spiral-arms-gz2", "yes")),
), suffix="-gz2")
# fmt: on

SCHEMAS = {"decals_dr5": DECALS_DR5, "gz2": GZ2}


def select_questions(schema: str | Schema, names=None) -> list[Question]:
    """The questions of ``schema`` named in ``names`` (one name or several; all when None), in
    the tree's order; a name the tree lacks is an error that lists the tree's questions."""
    schema = get_schema(schema)
    if names is None:
        return list(schema.questions)
    names = [names] if isinstance(names, str) else list(names)
    known = [q.name for q in schema.questions]
    if unknown := [n for n in names if n not in known]:
        raise ValueError(f"unknown {schema.name} question(s) {unknown}; the tree's: {known}")
    return [q for q in schema.questions if q.name in names]


def get_schema(schema: str | Schema) -> Schema:
    """A schema by name (``"decals_dr5"``, ``"gz2"``) or the schema itself."""
    if isinstance(schema, Schema):
        return schema
    key = str(schema).lower().replace("-", "_")
    if key in ("dr5", "decals", "gz_decals", "gz_decals_dr5"):
        key = "decals_dr5"
    if key not in SCHEMAS:
        raise KeyError(f"Unknown schema {schema!r}. Known schemas: {sorted(SCHEMAS)}.")
    return SCHEMAS[key]


def canonical_columns(df: pd.DataFrame, schema: str | Schema = DECALS_DR5) -> pd.DataFrame:
    """A new frame with the volunteer-release spelling of vote columns
    (``smooth-or-featured_smooth``) renamed to the schema's (``smooth-or-featured-dr5_smooth``).

    Raises ValueError if both spellings of one column are present with different values.
    """
    schema = get_schema(schema)
    aliases = {
        f"{q.name.removesuffix(schema.suffix)}_{a}": f"{q.name}_{a}"
        for q in schema.questions
        for a in q.answers
    }
    rename = {}
    for col in df.columns:
        target = aliases.get(col, col)
        if target not in df.columns:
            rename[col] = target
        elif target != col and not df[col].equals(df[target]):
            raise ValueError(
                f"Catalogue has both {col!r} and {target!r} with different values; "
                "keep one spelling of each vote column."
            )
    out = df.rename(columns=rename)
    return out.loc[:, ~out.columns.duplicated()]


#: No galaxy has this many votes for one answer (Galaxy Zoo: about 40): a unit or parsing error.
MAX_VOTES = 1_000_000


def vote_counts(data: pd.DataFrame | np.ndarray, schema: str | Schema = DECALS_DR5) -> np.ndarray:
    """Vote counts as an int64 array ``(N, n_answers)`` in :attr:`Schema.answer_columns` order.

    Parameters
    ----------
    data : pandas.DataFrame or numpy.ndarray
        Vote-count columns (either spelling), or an array already in answer order.
    schema : str or Schema

    Raises
    ------
    ValueError
        Naming the missing columns, or the rows and columns of NaN, negative or fractional counts.
    """
    schema = get_schema(schema)
    cols, row_ids = schema.answer_columns, None
    if isinstance(data, pd.DataFrame):
        df = canonical_columns(data, schema)
        missing = [c for c in schema.answer_columns if c not in df.columns]
        if missing:
            raise ValueError(
                f"Catalogue is missing {len(missing)} vote-count column(s) of schema "
                f"{schema.name!r}: {missing[:6]}{' ...' if len(missing) > 6 else ''}. "
                "Add them (0 votes where the question was not asked)."
            )
        values = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        if "id_str" in df.columns:
            row_ids = df["id_str"].astype(str).to_numpy()
    else:
        values = np.asarray(data, dtype=float)
        if values.ndim != 2 or values.shape[1] != schema.n_answers:
            raise ValueError(
                f"Vote counts must have shape (N, {schema.n_answers}) for schema "
                f"{schema.name!r}; got {values.shape}."
            )
    with np.errstate(invalid="ignore"):
        checks = (
            ("NaN (use 0 for unasked questions)", np.isnan(values)),
            ("infinite", np.isinf(values)),
            (f"larger than {MAX_VOTES:,} (not a vote count)", np.abs(values) > MAX_VOTES),
            ("negative", values < 0),
            ("not whole numbers", np.abs(values - np.round(values)) > 1e-6),
        )
    for problem, mask in checks:
        if mask.any():
            rows, colidx = np.nonzero(mask)
            where = [
                f"row {r}{'' if row_ids is None else f' (id_str {row_ids[r]})'} column {cols[c]!r}"
                for r, c in zip(rows[:5], colidx[:5], strict=False)
            ]
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            raise ValueError(f"Vote counts are {problem}: {'; '.join(where)}{more}.")
    return np.round(values).astype(np.int64)


def parent_child_problems(
    counts: np.ndarray, schema: str | Schema = DECALS_DR5, limit: int | None = None
) -> list[tuple[int, str, int, int]]:
    """Rows where a question got more votes than the answers that lead to it (impossible).

    Returns
    -------
    list of tuple
        ``(row, question, its votes, votes of the answers leading to it)``, at most ``limit``.
    """
    schema = get_schema(schema)
    counts = np.asarray(counts)
    index = {c: i for i, c in enumerate(schema.answer_columns)}
    out = []
    for (a, b), q in zip(schema.answer_slices, schema.questions, strict=True):
        if not q.requires:
            continue
        parents = sum(counts[:, index[f"{p}_{ans}"]] for p, ans in q.requires)
        child = counts[:, a:b].sum(axis=1)
        for row in np.flatnonzero(child > parents):
            out.append((int(row), q.name, int(child[row]), int(parents[row])))
    return sorted(out)[:limit]


def total_votes(counts: np.ndarray, schema: str | Schema = DECALS_DR5) -> np.ndarray:
    """Total votes per question, ``(N, n_questions)``."""
    schema = get_schema(schema)
    counts = np.asarray(counts)
    return np.stack([counts[:, a:b].sum(axis=1) for a, b in schema.answer_slices], axis=1)


def vote_fractions(
    counts: np.ndarray | pd.DataFrame, schema: str | Schema = DECALS_DR5
) -> np.ndarray:
    """Fraction of each question's votes that went to each answer, ``(N, n_answers)``.

    A question nobody was asked gets fractions of 0 (not NaN).
    """
    schema = get_schema(schema)
    counts = vote_counts(counts, schema) if isinstance(counts, pd.DataFrame) else counts
    counts = np.asarray(counts, dtype=float)
    out = np.zeros_like(counts)
    for a, b in schema.answer_slices:
        total = counts[:, a:b].sum(axis=1, keepdims=True)
        np.divide(counts[:, a:b], total, out=out[:, a:b], where=total > 0)
    return out


def was_asked(
    counts: np.ndarray, schema: str | Schema = DECALS_DR5, min_votes: int = 1
) -> np.ndarray:
    """Boolean ``(N, n_questions)``: did at least ``min_votes`` volunteers answer each question."""
    return total_votes(counts, schema) >= min_votes


def confident_answer(
    counts: np.ndarray | pd.DataFrame,
    schema: str | Schema = DECALS_DR5,
    question: str = "smooth-or-featured-dr5",
    min_votes: int = 10,
    min_fraction: float = 0.8,
) -> np.ndarray:
    """The volunteers' answer where they agree, ``""`` where they do not.

    Parameters
    ----------
    counts : numpy.ndarray or pandas.DataFrame
        Vote counts (array in answer order, or a catalogue).
    schema, question : Schema or str, str
        The tree and the question (either spelling).
    min_votes, min_fraction : int, float
        At least this many votes on the question, and this fraction for the leading answer.

    Returns
    -------
    numpy.ndarray
        Answer names (object dtype), ``""`` where not confident.
    """
    schema = get_schema(schema)
    counts = vote_counts(counts, schema) if isinstance(counts, pd.DataFrame) else counts
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1]; got {min_fraction}.")
    q = schema.question(question)
    a, b = schema.answer_slices[schema.question_index(q.name)]
    sub = np.asarray(counts, dtype=float)[:, a:b]
    total = sub.sum(axis=1)
    best = sub.argmax(axis=1)
    frac = np.divide(sub.max(axis=1), total, out=np.zeros_like(total), where=total > 0)
    ok = (total >= min_votes) & (frac >= min_fraction)
    answers = np.asarray(q.answers, dtype=object)[best]
    return np.where(ok, answers, "").astype(object)

"""Bring your own catalogue (CSV, parquet or DataFrame; ``DEVELOPERS.md``): :func:`load_catalogue`
resolves image paths and :func:`validate_catalogue` names every problem with its row, id, column
or file, and what to do.

>>> from galaxy_helpers.catalogue import load_catalogue
>>> cat = load_catalogue("my_galaxies.csv", label_columns=["ring"])   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import data
from .images import FITS_SUFFIXES, SIXTEEN_BIT_FULL_SCALE, bomb_problem, size_problem
from .schema import MAX_VOTES, canonical_columns, get_schema, parent_child_problems, vote_counts

__all__ = [
    "CatalogueError", "CatalogueReport", "load_catalogue", "validate_catalogue", "open_catalogue"
]  # fmt: skip

_PROBLEM_COLUMNS = ["row", "id_str", "column", "file", "problem", "action", "severity"]
_ID_GUESSES = ("id_str", "iauname", "id", "objid", "dr8_id", "name", "galaxy_id")
_FILE_GUESSES = ("file_loc", "local_png_loc", "filename", "file", "path", "image", "png_loc")
_NAN_ACTION = "use 0 for questions nobody was asked, never NaN"
_VOTE_ACTION = "vote counts are whole numbers >= 0; fix the value or drop the row"


class CatalogueError(ValueError):
    """A catalogue with errors; ``.report`` is the :class:`CatalogueReport`."""

    def __init__(self, report: CatalogueReport):
        self.report = report
        super().__init__(str(report))


@dataclass
class CatalogueReport:
    """Everything :func:`validate_catalogue` found in ``n_rows`` rows of ``source`` (a file name
    or ``"DataFrame"``): ``problems`` has one row per problem, with ``row`` (0-based; -1 for the
    whole catalogue), ``id_str``, ``column``, ``file``, ``problem``, ``action``, ``severity``."""

    problems: pd.DataFrame
    n_rows: int
    source: str = "DataFrame"

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not (self.problems["severity"] == "error").any()

    @property
    def errors(self) -> pd.DataFrame:
        return self.problems[self.problems["severity"] == "error"]

    @property
    def warnings(self) -> pd.DataFrame:
        return self.problems[self.problems["severity"] == "warning"]

    def raise_if_errors(self) -> None:
        if not self.ok:
            raise CatalogueError(self)

    def __str__(self) -> str:
        lines = [
            f"Catalogue check of {self.source}: {self.n_rows} rows, {len(self.errors)} errors, "
            f"{len(self.warnings)} warnings (rows are 0-based positions"
            + ("; CSV line = row + 2)." if self.source.lower().endswith(".csv") else ").")
        ]
        for title, part in (
            ("Errors (fix these, or drop the rows, before using the catalogue):", self.errors),
            ("Warnings (handled automatically):", self.warnings),
        ):
            if part.empty:
                continue
            lines.append(title)
            for problem, group in part.groupby("problem", sort=False):
                action = group["action"].iloc[0]
                lines.append(f"  - {problem} ({len(group)}): {action}")
                for rec in group.head(10).itertuples():
                    where = [f"row {rec.row}" if rec.row >= 0 else "catalogue"]
                    where += [f"id_str {rec.id_str!r}"] if rec.id_str else []
                    where += [f"column {rec.column!r}"] if rec.column else []
                    where += [f"file {rec.file}"] if rec.file else []
                    lines.append("      " + ", ".join(where))
                if len(group) > 10:
                    lines.append(f"      ... and {len(group) - 10} more (see report.problems)")
        if self.problems.empty:
            lines.append("No problems found.")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle):  # IPython shows the readable text
        printer.text(str(self))


def _bad_values(values: pd.Series) -> dict[str, np.ndarray]:
    """Positions of NaN, non-numeric, negative and non-integer entries of a vote column."""
    numeric = pd.to_numeric(values, errors="coerce")
    missing = values.isna().to_numpy()
    not_number = (numeric.isna() & ~values.isna()).to_numpy()
    number = numeric.to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(number)
    with np.errstate(invalid="ignore"):
        negative = finite & (number < 0)
        fractional = finite & (number != np.round(number))
        huge = finite & (np.abs(number) > MAX_VOTES)
    return {
        "missing vote count (NaN)": np.flatnonzero(missing),
        "vote count is not a number": np.flatnonzero(not_number),
        "vote count is infinite": np.flatnonzero(~finite & ~missing & ~not_number),
        f"vote count larger than {MAX_VOTES:,}": np.flatnonzero(huge),
        "negative vote count": np.flatnonzero(negative),
        "vote count is not a whole number": np.flatnonzero(fractional & ~negative & ~huge),
    }


def _check_image(path: Path, full: bool) -> list[tuple[str, str, str]]:
    """``(severity, problem, action)`` for one existing image file."""
    from PIL import Image, UnidentifiedImageError

    if path.name.lower().endswith(FITS_SUFFIXES):
        try:
            import astropy.io.fits as fits
        except ImportError:
            action = "pip install astropy, or convert the images to PNG/JPEG"
            return [("error", "FITS image but astropy is not installed", action)]
        try:
            with fits.open(path) as hdul:
                shapes = [h.data.shape for h in hdul if getattr(h, "data", None) is not None]
        except (OSError, ValueError) as err:
            return [("error", f"unreadable FITS file ({err})", "re-download or remove the row")]
        if not shapes:
            return [("error", "FITS file without image data", "check the file or drop the row")]
        found = [("warning", "FITS image", "scaled (arcsinh) to 8-bit RGB by images.read_image")]
        shape = shapes[0][-2:] if len(shapes[0]) == 3 and shapes[0][0] in (1, 3) else shapes[0][:2]
        if len(shape) == 2 and (bad := size_problem(shape[1], shape[0])) is not None:
            return [("error", *bad)]
        if shape[0] != shape[1]:
            found.append(("warning", "non-square image", "centre-cropped to a square"))
        return found
    try:
        with Image.open(path) as img:
            mode, (width, height) = img.mode, img.size
            if (bad := size_problem(width, height)) is not None:
                return [("error", *bad)]  # read_image refuses it: never decode a bomb
            if full:
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return [("error", *bomb_problem(err))]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        message = str(err).replace(str(path), "<file>").lower()
        truncated = not isinstance(err, UnidentifiedImageError) and "truncated" in message
        action = f"re-download the file or drop the row ({type(err).__name__}: {err})"
        return [("error", "truncated image" if truncated else "unreadable image", action)]
    found = []
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        scale = "[0, 1]" if mode == "F" else f"0 to {SIXTEEN_BIT_FULL_SCALE}"
        action = (
            f"scaled linearly from {scale} to 8-bit (the same scale for every image, values "
            "beyond it clipped) and copied to 3 channels"
        )
        found.append(("warning", f"16-bit or float greyscale image (mode {mode})", action))
    elif mode in ("L", "LA", "1"):
        found.append(("warning", "greyscale image", "copied to 3 identical channels"))
    elif mode in ("RGBA", "PA"):
        found.append(("warning", "image with transparency (RGBA)", "flattened onto black"))
    elif mode != "RGB":
        found.append(("warning", f"image in mode {mode}", "converted to RGB"))
    if width != height:
        action = f"{width} x {height} centre-cropped to a square"
        found.append(("warning", "non-square image", action))
    return found


def validate_catalogue(
    df: pd.DataFrame,
    schema=None,
    label_columns: Sequence[str] | None = None,
    check_images: str = "full",
    source: str = "DataFrame",
    progress: bool = True,
) -> CatalogueReport:
    """Check a catalogue and report every problem, naming row, id, column or file.

    Parameters
    ----------
    df : pandas.DataFrame
        Catalogue with ``id_str`` and ``file_loc`` (relative paths: to the working folder).
    schema : str or Schema, optional
        Check the vote-count columns of this schema (either spelling).
    label_columns : sequence of str, optional
        Plain label columns to check (present, no missing values, more than one class).
    check_images : {"full", "header", "none"}
        Decode every image (finds truncated files), read headers only, or check existence.
    source, progress : str, bool
        Name shown in the report; progress bar over the images.

    Returns
    -------
    CatalogueReport
    """
    from tqdm.auto import tqdm

    if check_images not in ("full", "header", "none"):
        raise ValueError(f"check_images must be 'full', 'header' or 'none', got {check_images!r}")
    df = df.reset_index(drop=True)
    ids = df["id_str"].astype(str).to_numpy() if "id_str" in df.columns else [""] * len(df)
    records: list[tuple] = []

    def add(row, problem, action, severity="error", column="", file=""):
        id_str = str(ids[row]) if row >= 0 else ""
        records.append((int(row), id_str, column, str(file), problem, action, severity))

    if len(df) == 0:
        add(-1, "the catalogue has no rows", "check the file or the filter that built it")
    for column, guesses in (("id_str", _ID_GUESSES), ("file_loc", _FILE_GUESSES)):
        if column not in df.columns:
            near = [g for g in guesses if g in df.columns and g != column]
            hint = f"rename {near[0]!r} to {column!r}" if near else f"add a {column!r} column"
            add(-1, f"missing required column {column!r}", hint, column=column)

    if "id_str" in df.columns:
        ids = df["id_str"]
        empty = ids.isna() | (ids.astype(str).str.strip() == "")
        for row in np.flatnonzero(empty.to_numpy()):
            add(row, "missing id", "give every row a unique id_str", column="id_str")
        first = pd.Series(range(len(ids))).groupby(ids.map(str).to_numpy()).transform("min")
        action = "keep one row per galaxy (drop_duplicates('id_str')) or make ids unique"
        for row in np.flatnonzero((ids.duplicated() & ~empty).to_numpy()):
            add(row, "duplicate id_str", action, column=f"id_str (first seen in row {first[row]})")

    if "file_loc" in df.columns:
        locs = df["file_loc"]
        check = functools.cache(lambda path: _check_image(path, full=check_images == "full"))
        for row in tqdm(range(len(df)), "checking images", disable=not progress or len(df) < 200):
            loc = locs.iloc[row]
            if loc is None or (isinstance(loc, float) and np.isnan(loc)) or str(loc) == "":
                add(row, "missing file_loc", "give the image path", column="file_loc")
                continue
            path = Path(str(loc))
            if not path.is_file():
                action = "fix the path (relative paths resolve against image_root) or drop the row"
                add(row, "image file not found", action, column="file_loc", file=path)
                continue
            if check_images == "none":
                continue
            for severity, problem, action in check(path):
                add(row, problem, action, severity=severity, column="file_loc", file=path)
        dup_files = locs.duplicated(keep="first") & locs.notna()
        action = "check that two rows are meant to share one image"
        for row in np.flatnonzero(dup_files.to_numpy()):
            problem, file = "same image file as an earlier row", locs.iloc[row]
            add(row, problem, action, "warning", "file_loc", file)

    if schema is not None:
        schema = get_schema(schema)
        votes = canonical_columns(df, schema)
        missing = [c for c in schema.answer_columns if c not in votes.columns]
        if missing:
            problem = f"missing vote columns of schema {schema.name!r}"
            action = (
                "add them (0 votes where a question was not asked) or pass label_columns "
                f"instead of schema; missing: {missing}"
            )
            add(-1, problem, action, column=", ".join(missing))
        for column in [c for c in schema.answer_columns if c not in missing]:
            for problem, positions in _bad_values(votes[column]).items():
                action = _NAN_ACTION if "NaN" in problem else _VOTE_ACTION
                for row in positions:
                    add(row, problem, action, column=column)
        try:
            pairs = [] if missing else parent_child_problems(vote_counts(votes, schema), schema)
        except ValueError:  # bad values, reported above
            pairs = []
        action = (
            "check the vote columns (swapped or mis-joined?); a question is only asked after its "
            "parent answers"
        )
        for row, question, n, parents in pairs:
            problem = f"{question} has {n} votes but the answers leading to it only {parents}"
            add(row, problem, action, severity="warning", column=question)

    for column in label_columns or []:
        if column not in df.columns:
            add(-1, f"missing label column {column!r}", "add it or fix the name", column=column)
            continue
        values = df[column]
        for row in np.flatnonzero(values.isna().to_numpy()):
            add(row, "missing label", "label every row or drop it", column=column)
        if values.nunique(dropna=True) < 2 and len(values):
            problem = f"label column {column!r} has fewer than two classes"
            add(-1, problem, "a classifier needs examples of every class", "warning", column)
    return CatalogueReport(pd.DataFrame(records, columns=_PROBLEM_COLUMNS), len(df), source)


def _read_table(path: Path, id_column: str = "id_str") -> pd.DataFrame:
    name = path.name.lower()
    if not path.is_file():
        raise FileNotFoundError(f"catalogue file {path} not found")
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if name.endswith((".csv", ".csv.gz", ".txt")):
        # ids stay text: "00042" must not become 42 (joins with label files would then fail)
        return pd.read_csv(path, dtype={id_column: str})
    raise ValueError(f"{path}: unknown catalogue format; use .csv or .parquet")


def load_catalogue(
    path_or_df: str | os.PathLike | pd.DataFrame,
    schema=None,
    label_columns: Sequence[str] | None = None,
    image_root: str | os.PathLike | None = None,
    id_column: str = "id_str",
    file_column: str = "file_loc",
    check_images: str = "full",
    progress: bool = True,
) -> pd.DataFrame:
    """Read a catalogue (CSV, parquet or DataFrame), resolve image paths, and validate it.

    Parameters
    ----------
    path_or_df : path-like or pandas.DataFrame
        ``.csv`` or ``.parquet`` file, or a DataFrame.
    schema, label_columns, check_images, progress
        As in :func:`validate_catalogue`; vote columns are renamed to the canonical spelling.
    image_root : path-like, optional
        Folder of relative ``file_loc`` paths; default the file's folder (or the working one).
    id_column, file_column : str
        The id and image-path columns, renamed to ``id_str`` and ``file_loc``.

    Returns
    -------
    pandas.DataFrame
        String ``id_str``, absolute ``file_loc``, int64 vote columns when ``schema`` is given;
        ``df.attrs["catalogue_report"]`` holds the report (warnings: ``UserWarning``).

    Raises
    ------
    CatalogueError
        Any error; the message lists every problem with its row number and what to do.
    """
    if isinstance(path_or_df, pd.DataFrame):
        df, source = path_or_df.copy(), "DataFrame"
        base = Path(image_root) if image_root is not None else Path.cwd()
    else:
        path = Path(path_or_df).expanduser()
        df, source = _read_table(path, id_column), str(path)
        base = Path(image_root) if image_root is not None else path.resolve().parent
    rename = {id_column: "id_str", file_column: "file_loc"}
    df = df.rename(columns={k: v for k, v in rename.items() if k != v and k in df.columns})
    if "id_str" in df.columns:
        df["id_str"] = df["id_str"].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
    if "file_loc" in df.columns:

        def resolve(value):
            if pd.isna(value) or str(value) == "":
                return value
            p = Path(str(value)).expanduser()
            return str(p if p.is_absolute() else (base / p).resolve())

        df["file_loc"] = df["file_loc"].map(resolve)
    if schema is not None:
        df = canonical_columns(df, schema)
    report = validate_catalogue(df, schema, label_columns, check_images, source, progress)
    report.raise_if_errors()
    if not report.warnings.empty:
        warnings.warn(str(report), UserWarning, stacklevel=2)
    if schema is not None:
        for column in get_schema(schema).answer_columns:
            df[column] = pd.to_numeric(df[column]).astype(np.int64)
    df.attrs["catalogue_report"] = str(report)
    return df.reset_index(drop=True)


def open_catalogue(source, schema=None, label_columns=None, **kwargs) -> pd.DataFrame:
    """One parameter for every notebook: a dataset name, a file, or a DataFrame.

    Parameters
    ----------
    source : str, path-like or pandas.DataFrame
        A dataset name (:func:`data.load_dataset`), else a file or DataFrame (:func:`load_catalogue`).
    schema, label_columns, **kwargs
        Passed to the loader (``schema``, ``label_columns``: files and DataFrames only).

    Returns
    -------
    pandas.DataFrame
    """
    if isinstance(source, str) and not source.lower().endswith(
        (".csv", ".parquet", ".pq", ".csv.gz")
    ):
        names = data.list_manifests(kind="dataset")
        if source in names:
            return data.load_dataset(source, **kwargs)
        if not Path(source).exists():
            raise ValueError(
                f"catalogue {source!r} is neither a dataset ({', '.join(names)}) nor a file"
            )
    return load_catalogue(source, schema=schema, label_columns=label_columns, **kwargs)

"""Manifests: one TOML file per dataset or model in ``data_manifests/`` (citation, licence, pinned
files, and how its table maps onto the catalogue contract), checked and turned into catalogues."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from . import core
from .images import check_crop
from .schema import canonical_columns, get_schema

__all__ = [
    "MANIFESTS_ENV", "DataError", "ManifestError", "FileEntry", "Manifest", "BUILDERS",
    "manifest_dir", "list_manifests", "load_manifest", "validate_manifest", "checked_paths",
    "inside", "check_inside", "inside_all", "build_catalogue",
]  # fmt: skip

MANIFESTS_ENV = "GALAXY_DATA_MANIFESTS"


class DataError(RuntimeError):
    """Base class of the errors raised while getting real data."""


class ManifestError(DataError, ValueError):
    """A manifest is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest: its ``path`` below the dataset folder (and in a mirror), pinned
    ``url``, ``size`` in bytes, lowercase hex ``sha256`` or ``md5``; for archives ``extract_to``
    (a folder) and ``spot_check`` (a path that must exist once unpacked); for files built
    locally ``builder`` (a name in ``BUILDERS``)."""

    path: str
    url: str | None = None
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    extract_to: str | None = None
    builder: str | None = None
    spot_check: str | None = None

    @property
    def checksum(self) -> tuple[str, str]:
        """``(algorithm, hex digest)``, sha256 preferred."""
        return ("sha256", self.sha256) if self.sha256 else ("md5", str(self.md5))


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: ``name`` (file stem), ``kind`` (``"dataset"`` or ``"models"``),
    ``path`` (the TOML file), ``raw`` (the whole table), ``files`` (downloaded or mirrored) and
    ``derived_files`` (built locally)."""

    name: str
    kind: str
    path: Path
    raw: dict = field(repr=False)
    files: tuple[FileEntry, ...] = field(repr=False)
    derived_files: tuple[FileEntry, ...] = field(repr=False, default=())

    @property
    def catalogue(self) -> dict:
        """The ``[catalogue]`` mapping onto the catalogue contract (empty for models)."""
        return self.raw.get("catalogue", {})

    @property
    def all_files(self) -> tuple[FileEntry, ...]:
        return self.files + self.derived_files

    def citation(self) -> str:
        """The references to cite, one per line."""
        return "\n".join(self.raw.get("citation", []))


def manifest_dir() -> Path:
    """The folder holding the manifests: ``$GALAXY_DATA_MANIFESTS``, else ``data_manifests/``
    next to the package (a source checkout or an editable install)."""
    env = os.environ.get(MANIFESTS_ENV, "").strip()
    default = Path(__file__).resolve().parents[1] / "data_manifests"
    folder = Path(env).expanduser() if env else default
    if not folder.is_dir():
        raise ManifestError(
            f"manifest folder {folder} not found. Install the course from its source checkout "
            f"(`pip install -e .`) or set {MANIFESTS_ENV} to the data_manifests folder."
        )
    return folder


def list_manifests(kind: str | None = None) -> list[str]:
    """Sorted names of all manifests, or of those of one ``kind`` (``"dataset"``, ``"models"``)."""
    names = sorted(p.stem for p in manifest_dir().glob("*.toml"))
    return names if kind is None else [n for n in names if load_manifest(n).kind == kind]


_KEYS = ("url", "sha256", "md5", "extract_to", "spot_check")


def _entry(item: dict, where: str, derived: bool) -> FileEntry:
    if not isinstance(item, dict) or "path" not in item:
        raise ManifestError(f"{where}: every file needs a 'path'")
    unknown = set(item) - {*_KEYS, "path", "size", "builder", "description"}
    if unknown:
        raise ManifestError(f"{where} ({item['path']}): unknown keys {sorted(unknown)}")
    builder = item.get("builder") if derived else None
    values = {k: item.get(k) or None if k in ("sha256", "md5") else item.get(k) for k in _KEYS}
    return FileEntry(path=item["path"], size=item.get("size"), builder=builder, **values)


def _parse_toml(path: Path) -> dict:
    """The TOML table of ``path``. A parsed copy is kept as JSON in the cache, named by the
    file's SHA-256: the Galaxy Zoo 2 manifest (1.5 MB, 5,000 files) takes 0.2 s to parse
    and every notebook reads it several times; the JSON copy reads in 5 ms."""
    text = path.read_text(encoding="utf-8")
    key = hashlib.sha256(f"toml-json-1\n{text}".encode()).hexdigest()[:32]
    kept = core.cache_dir("manifests") / f"{key}.json"
    try:
        return json.loads(kept.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not kept yet, or a damaged copy: parsed again
        pass
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path}: not valid TOML ({err})") from err
    try:
        core.write_text(kept, json.dumps(raw))
    except (OSError, TypeError):  # a read-only cache, or TOML dates (not JSON): not kept
        pass
    return raw


def load_manifest(name: str | os.PathLike) -> Manifest:
    """Read one manifest by name (``"gz_decals_rings"``) or TOML path; a :class:`ManifestError`
    names an unknown name, a malformed file or a path that would leave the dataset's folder."""
    path = Path(name)
    if path.suffix != ".toml":
        path = manifest_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(list_manifests())
        raise ManifestError(f"no manifest {path.name} in {path.parent}; known: {known}")
    raw = _parse_toml(path)
    for key in ("name", "kind"):
        if key not in raw:
            raise ManifestError(f"{path}: missing required key {key!r}")
    if raw["name"] != path.stem:
        raise ManifestError(f"{path}: name {raw['name']!r} differs from the file name")
    files, derived = (
        tuple(_entry(f, f"{path} [[{group}]]", group != "files") for f in raw.get(group, []))
        for group in ("files", "derived_files")
    )
    return checked_paths(Manifest(raw["name"], raw["kind"], path, raw, files, derived))


_NAME = re.compile(r"[A-Za-z0-9][\w.\-]*")


def checked_paths(manifest: Manifest) -> Manifest:
    """Refuse a manifest (read from a file or built by hand) whose name or any path could leave
    its dataset folder or mirror."""
    where = str(manifest.path)
    if not (isinstance(manifest.name, str) and _NAME.fullmatch(manifest.name)):
        raise ManifestError(
            f"{where}: name {manifest.name!r} must be letters, digits, '_', '-' or '.', not "
            "starting with '.' (it names the dataset's cache and mirror folder)"
        )
    problems = []
    for entry in manifest.all_files:
        for key in ("path", "extract_to", "spot_check"):
            value = getattr(entry, key)
            if value is not None or key == "path":
                problems += _check_relative(value, f"{where} file {entry.path!r} {key}")
    files = manifest.catalogue.get("file", []) if manifest.kind == "dataset" else []
    for file in files if isinstance(files, list) else [files]:
        problems += _check_relative(file, f"{where} [catalogue] file")
    if problems:
        raise ManifestError(
            "; ".join(problems) + ". Nothing was read or written: every path of a manifest stays "
            "inside its dataset folder. Fix the manifest."
        )
    return manifest


def check_inside(root: str | os.PathLike, relative: str | os.PathLike, where: str) -> str:
    """``root / relative`` normalised (not resolved), refused unless it stays inside ``root``
    as written: the check alone, for loops that do not need the resolved path."""
    base = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(base, relative))
    if path != base and not path.startswith(base.rstrip(os.sep) + os.sep):
        raise ManifestError(
            f"{where}: {relative!s} leads to {path}, outside {root}; refusing to read, write or "
            "delete it. Fix the manifest (or the catalogue row)."
        )
    return path


def inside(root: Path, relative: str | os.PathLike, where: str) -> Path:
    """``root / relative`` resolved, refused unless it stays inside ``root`` as written (links
    may lead elsewhere, so a cache made of links to a bigger disk keeps working)."""
    return Path(check_inside(root, relative, where)).resolve()


def inside_all(root: Path, relatives, where: str) -> list[str]:
    """:func:`inside` of many paths (``where`` may hold ``{k}``, the row), as strings. Each
    folder is resolved once per call: a dataset's thousands of files share a few folders, so
    only the file itself is checked for a link."""
    folders: dict[str, str] = {}
    out = []
    for k, rel in enumerate(relatives):
        path = check_inside(root, rel, where.replace("{k}", str(k)))
        if os.path.islink(path):
            out.append(os.path.realpath(path))
            continue
        head, name = os.path.split(path)
        if head not in folders:
            folders[head] = os.path.realpath(head)
        out.append(os.path.join(folders[head], name))
    return out


def _check_relative(path: Any, where: str) -> list[str]:
    if not isinstance(path, str) or not path:
        return [f"{where}: path must be a non-empty string"]
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        return [f"{where}: path {path!r} must be relative, with '/' and no '..'"]
    return []


_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}
_COMMON = ("name", "kind", "title", "description", "licence", "citation", "credit", "homepage")
_REQUIRED = {
    "dataset": (*_COMMON, "files", "catalogue"),
    "models": (*_COMMON, "models", "checksum_note"),
}


def validate_manifest(manifest: str | os.PathLike | Manifest) -> list[str]:
    """Check a manifest's keys, files (path, https URL or builder, size, checksum), catalogue
    mapping and models; return every problem found.

    Parameters
    ----------
    manifest : str, path-like or Manifest
        Manifest name, TOML path, or parsed manifest.

    Returns
    -------
    list of str
        Problems, each naming the file and the key; empty when the manifest is valid.
    """
    from urllib.parse import quote

    try:
        m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
    except ManifestError as err:
        return [str(err)]
    raw, src = m.raw, m.path.name
    if m.kind not in _REQUIRED:
        return [f"{src}: kind must be one of {sorted(_REQUIRED)}, got {m.kind!r}"]
    problems = [f"{src}: missing required key {k!r}" for k in _REQUIRED[m.kind] if k not in raw]
    citation = raw.get("citation")
    if not (isinstance(citation, list) and citation and all(isinstance(c, str) for c in citation)):
        problems.append(f"{src}: citation must be a non-empty list of strings")
    base = raw.get("base_url")
    if base is not None and not (base.startswith("https://") and base.endswith("/")):
        problems.append(f"{src}: base_url must start with https:// and end with '/'")
    seen: set[str] = set()
    for group in ("files", "derived_files"):
        for i, item in enumerate(raw.get(group, [])):
            where, path = f"{src} [[{group}]] #{i + 1}", item.get("path")
            problems += _check_relative(path, where)
            if path in seen:
                problems.append(f"{where}: duplicate path {path!r}")
            seen.add(path)
            at = f"{where} ({path})"
            url, size, builder = item.get("url"), item.get("size"), item.get("builder")
            rebased = base + quote(path) if base is not None and isinstance(path, str) else url
            if group == "files" and not re.fullmatch(r"https://[^\s]+", str(url)):
                problems.append(f"{at}: url must be an https:// URL, got {url!r}")
            elif group == "files" and url != rebased:
                problems.append(f"{at}: url {url} is not base_url + quoted path")
            elif group != "files" and builder not in BUILDERS:
                problems.append(f"{at}: builder {builder!r} is not one of {sorted(BUILDERS)}")
            if size is not None and not (isinstance(size, int) and size > 0):
                problems.append(f"{at}: size must be a positive integer")
            sums = [a for a in ("sha256", "md5") if a in item]
            if not sums:
                problems.append(f"{at}: needs a sha256 or md5 checksum")
            for alg in sums:
                if not (isinstance(item[alg], str) and _HEX[alg].fullmatch(item[alg])):
                    problems.append(f"{at}: {alg} must be lowercase hex, got {item[alg]!r}")
            if item.get("extract_to") is not None:
                problems += _check_relative(item["extract_to"], f"{where} extract_to")
    catalogue = raw.get("catalogue")
    if m.kind == "dataset" and isinstance(catalogue, dict):
        for key in ("file", "id_str", "file_loc"):
            if key not in catalogue:
                problems.append(f"{src} [catalogue]: missing required key {key!r}")
        files = catalogue.get("file", [])
        for file in files if isinstance(files, list) else [files]:
            if file not in seen:
                problems.append(f"{src} [catalogue]: file {file!r} is not one of the files")
        for tag in catalogue.get("tags", {}):
            if not tag.startswith("tag_"):
                problems.append(f"{src} [catalogue.tags]: {tag!r} must start with 'tag_'")
    for i, model in enumerate(raw.get("models", [])):
        where = f"{src} [[models]] #{i + 1}"
        if not re.fullmatch(r"hf_hub:[\w.\-]+/[\w.\-]+", str(model.get("hub_id", ""))):
            problems.append(f"{where}: hub_id must look like hf_hub:<owner>/<repo>")
        if not str(model.get("url", "")).startswith("https://"):
            problems.append(f"{where}: url must be an https:// URL")
        if model.get("channels") not in (1, 3):
            problems.append(f"{where}: channels must be 1 or 3")
        if not model.get("architecture"):
            problems.append(f"{where}: missing architecture (the timm model name)")
    return problems


_EXAMPLE_NAME = re.compile(r"decals-(\d+)_([ax])-(\d+)_(\d+)\.jpg")


def _build_examples_labels(manifest: Manifest, folder: Path) -> bytes:
    """``examples_labels.csv`` from the example images' names: one row per distinct image (by
    md5, in file-name order), ``answers`` the ``;``-joined answers it is an example of."""
    tree = manifest.catalogue["site_tree"]
    rows: dict[str, list] = {}
    for entry in sorted(manifest.files, key=lambda e: e.path):
        match = _EXAMPLE_NAME.fullmatch(PurePosixPath(entry.path).name)
        if match is None:
            continue
        question, _, answer, _ = match.groups()
        label = f"{tree[question][0]}_{tree[question][int(answer) + 1]}"
        md5 = hashlib.md5((folder / entry.path).read_bytes()).hexdigest()
        labels = rows.setdefault(md5, [entry.path, md5, []])[2]
        if label not in labels:
            labels.append(label)
    lines = ["file,md5,answers", *(f"{p},{m},{';'.join(a)}" for p, m, a in rows.values())]
    return "".join(f"{line}\n" for line in lines).encode()


BUILDERS: dict[str, Callable[[Manifest, Path], bytes]] = {
    "examples_labels": _build_examples_labels,
}


def _tag_from_expression(df: pd.DataFrame, expression: str, where: str) -> pd.Series:
    match = re.fullmatch(r"\s*([\w\-]+)\s*==\s*(\S+)\s*", expression)
    if match is None or match.group(1) not in df.columns:
        raise ManifestError(f"{where}: cannot read tag rule {expression!r} ('<column> == <value>')")
    column, value = match.groups()
    target: Any = value.strip("\"'")
    if pd.api.types.is_numeric_dtype(df[column]):
        target = float(target)
    return df[column] == target


def _fraction_column(raw: pd.DataFrame, column: str, where: str) -> pd.Series:
    if column not in raw.columns:
        raise ManifestError(f"{where}: the catalogue file has no column {column!r}")
    values = pd.to_numeric(raw[column], errors="coerce")
    bad = ~values.between(-1e-6, 1 + 1e-6)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}: column {column!r}, row {row}: {raw[column].iloc[row]!r} is not a vote "
            "fraction in [0, 1]; the cached file may be damaged -- delete it and fetch again."
        )
    return values.clip(0.0, 1.0)


def _largest_remainder(shares: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Integer counts per row that sum to ``totals`` and follow ``shares`` (rows sum to 1)."""
    exact = shares * totals[:, None]
    counts = np.floor(exact).astype(np.int64)
    short = totals - counts.sum(axis=1)
    order = np.argsort(-(exact - counts), axis=1, kind="stable")
    for k in range(shares.shape[1]):
        take = short > k
        counts[take, order[take, k]] += 1
    return counts


def _votes_from_fractions(raw: pd.DataFrame, spec: dict, where: str) -> pd.DataFrame:
    """Vote counts from cumulative fractions: ``spec["volunteers"]`` answer the first question,
    a question with a ``parent`` answer gets that answer's count; all-0 fractions get 0 votes."""
    volunteers = int(spec["volunteers"])
    if volunteers < 1:
        raise ManifestError(f"{where} [votes]: volunteers must be a positive whole number")
    out: dict[str, np.ndarray] = {}
    for question, qspec in spec["questions"].items():
        answers = qspec["answers"]
        columns = [_fraction_column(raw, column, where).to_numpy() for column in answers.values()]
        fractions = np.stack(columns, axis=1)
        parent = qspec.get("parent")
        if parent is None:
            totals = np.full(len(raw), volunteers, dtype=np.int64)
        elif parent in out:
            totals = out[parent]
        else:
            raise ManifestError(
                f"{where} [votes.questions.{question}]: parent {parent!r} must be an answer of "
                "a question listed before it"
            )
        reached = fractions.sum(axis=1)
        shares = np.divide(
            fractions, reached[:, None], out=np.zeros_like(fractions), where=reached[:, None] > 0
        )
        totals = np.where(reached > 0, totals, 0)
        counts = _largest_remainder(shares, totals)
        for k, answer in enumerate(answers):
            out[f"{question}_{answer}"] = counts[:, k]
    return pd.DataFrame(out, index=raw.index)


def _odd_feature_tags(raw: pd.DataFrame, spec: dict, where: str) -> dict[str, np.ndarray]:
    """A tag per odd feature: odd > threshold and the feature holds > half of the odd votes."""
    spec = dict(spec)
    odd = _fraction_column(raw, spec.pop("odd"), where).to_numpy()
    threshold = float(spec.pop("threshold"))
    tags = {}
    for tag, column in spec.items():
        if not tag.startswith("tag_"):
            raise ManifestError(f"{where} [odd_tags]: {tag!r} must start with 'tag_'")
        feature = _fraction_column(raw, column, where).to_numpy()
        tags[tag] = (odd > threshold) & (feature > 0.5 * odd)
    return tags


def build_catalogue(manifest: Manifest, folder: Path) -> pd.DataFrame:
    """The catalogue of a dataset whose files are in ``folder``, as its ``[catalogue]`` says."""
    spec = manifest.catalogue
    where = f"{manifest.path} [catalogue]"
    files = spec["file"] if isinstance(spec["file"], list) else [spec["file"]]
    splits, id_rule = spec.get("split_from_file"), spec["id_str"]
    frames = []
    for i, file in enumerate(files):
        if spec.get("format") == "parquet":
            frame = pd.read_parquet(folder / file)
        else:  # ids stay text: "00042" must not become 42
            frame = pd.read_csv(folder / file, dtype={id_rule.removeprefix("stem:"): str})
        if splits:
            frame["split"] = splits[i]
        frames.append(frame)
    raw = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    out = pd.DataFrame(index=raw.index)
    if id_rule.startswith("stem:"):
        out["id_str"] = raw[id_rule[5:]].map(lambda p: PurePosixPath(p).stem)
    else:
        out["id_str"] = raw[id_rule].astype(str)

    loc_rule = spec["file_loc"]
    if loc_rule.startswith("join:"):
        template = loc_rule[5:]
        # Row dicts keep each column's own type (a row Series would turn ints into floats).
        relative = pd.Series([template.format(**row) for row in raw.to_dict("records")])
    else:
        relative = raw[loc_rule]
    out["file_loc"] = inside_all(folder, relative, f"{where} file_loc, row {{k}}")
    consumed = {loc_rule, id_rule, id_rule.removeprefix("stem:")}

    for column in spec.get("labels", []):
        out[column] = raw[column].astype(int)
        consumed.add(column)

    answers_column = spec.get("answers")
    if answers_column:
        answer_lists = raw[answers_column].fillna("").map(lambda s: [a for a in s.split(";") if a])
        out["answers"] = raw[answers_column]
        prefix = spec.get("answer_column_prefix", "example_")
        for names in spec["site_tree"].values():
            for answer in filter(None, names[1:]):
                label = f"{names[0]}_{answer}"
                out[prefix + label] = answer_lists.map(lambda a, label=label: label in a)
        dr5 = spec.get("dr5_answers", {})
        out["dr5_answers"] = answer_lists.map(lambda a: ";".join(dr5[x] for x in a if x in dr5))
        consumed.add(answers_column)

    for tag, rule in spec.get("tags", {}).items():
        if isinstance(rule, str):
            out[tag] = _tag_from_expression(raw, rule, where).to_numpy(dtype=bool)
        else:
            out[tag] = answer_lists.map(lambda a, rule=rule: any(x in a for x in rule)).astype(bool)

    if "votes" in spec:
        votes = _votes_from_fractions(raw, spec["votes"], where)
        # Every other answer of the schema: 0 votes (unasked), as the catalogue contract says.
        for column in get_schema(spec.get("schema", "decals_dr5")).answer_columns:
            out[column] = votes[column].to_numpy() if column in votes else 0
    for column, source in spec.get("fractions", {}).items():
        out[column] = _fraction_column(raw, source, where).to_numpy()
    if "odd_tags" in spec:
        for tag, flags in _odd_feature_tags(raw, spec["odd_tags"], where).items():
            out[tag] = flags
    if "crop" in spec:
        out["crop"] = check_crop(spec["crop"], f"{where} crop")
    if "split" in spec:
        every = int(spec["split"]["test_every"])
        order = np.argsort(raw[id_rule].to_numpy(), kind="stable")
        split = np.full(len(raw), "train", dtype=object)
        split[order[np.arange(len(raw)) % every == every - 1]] = "test"
        out["split"] = split
    consumed.update(spec.get("drop", []))

    if spec.get("schema"):
        raw = canonical_columns(raw, spec["schema"])
    # Keep the remaining upstream columns (votes, predictions, md5, split) untouched.
    for column in raw.columns:
        if column not in consumed and column not in out.columns:
            out[column] = raw[column].to_numpy()
    expected = spec.get("expected_rows")
    if expected is not None and len(out) != expected:
        raise DataError(
            f"{manifest.name}: catalogue has {len(out)} rows, the manifest expects {expected}; "
            f"the cached copy in {folder} is incomplete -- delete that folder and fetch again."
        )
    if out["id_str"].duplicated().any():
        dupes = out.loc[out["id_str"].duplicated(), "id_str"].tolist()[:5]
        raise DataError(f"{manifest.name}: duplicate id_str values {dupes}")
    return out.reset_index(drop=True)

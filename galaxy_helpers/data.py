"""Real data: manifests, verified downloads, an offline mirror, and ready catalogues.

Every dataset or model the course can use is described by one TOML file in
``data_manifests/`` (what it is, citation, licence, pinned URL, size and checksum of every
file, and how its catalogue maps onto the catalogue contract of ``DEVELOPERS.md``).

:func:`fetch` puts a dataset's files into ``<course.cache_dir()>/data/<dataset>/``:

- from a **mirror folder** when one is given (``mirror=`` or the environment variable
  ``GALAXY_DATA_MIRROR``): files are looked up as ``<mirror>/<dataset>/<path>``, the layout
  of the course's shared data folder, and the network is never touched;
- otherwise from the pinned upstream URL (stdlib ``urllib``; retries with backoff; progress
  bar).

Every file is checked against the manifest's sha256 (or md5 where that is all upstream
publishes) and written atomically: a temporary ``.part`` file in the same folder, renamed to
its final name only once it is complete and verified, so the cache never holds a half file
under a final name. A download cut off part-way keeps its ``.part`` file and is resumed with
an HTTP ``Range`` request by the next attempt or run (a server without ``Range`` support gets
a fresh download; the whole file's checksum is verified either way); a file that fails its
checksum is deleted. ``.part`` files and folders left by a crashed or killed run (no process
holds their lock) are removed by the next :func:`fetch`. :func:`verify` (or
``python -m galaxy_helpers.data verify NAME``) re-hashes every cached file and deletes the bad
ones. A mirror folder that does not exist is named in a :class:`MirrorWarning`. Archives are
unpacked through a temporary folder and refused if any member would land outside it.
:func:`load_dataset` returns the dataset as a catalogue (``id_str``, absolute ``file_loc``,
labels, ``tag_*`` columns).

Examples
--------
>>> from galaxy_helpers import data
>>> rings = data.load_dataset("gz_decals_rings")          # doctest: +SKIP
>>> rings[["id_str", "ring", "tag_ring"]].head()          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError as _err:
        raise ImportError(
            "Reading data manifests needs Python >= 3.11 (tomllib) or, on Python 3.10, "
            "`pip install tomli`."
        ) from _err

try:  # POSIX: who holds a .part file (a live download) vs. a crashed run's leftover
    import fcntl
except ImportError:  # pragma: no cover - Windows: leftovers are told apart by age alone
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "MANIFESTS_ENV",
    "DataError",
    "ManifestError",
    "ChecksumError",
    "DataUnavailableError",
    "UnsafeArchiveError",
    "MirrorWarning",
    "VerifyReport",
    "STALE_PART_S",
    "FileEntry",
    "Manifest",
    "manifest_dir",
    "list_manifests",
    "load_manifest",
    "validate_manifest",
    "dataset_dir",
    "dataset_available",
    "fetch",
    "verify",
    "clean_stale_parts",
    "partial_path",
    "load_dataset",
    "file_checksum",
    "download_file",
    "safe_extract",
]

MIRROR_ENV = "GALAXY_DATA_MIRROR"
OFFLINE_ENV = "GALAXY_DATA_OFFLINE"
MANIFESTS_ENV = "GALAXY_DATA_MANIFESTS"
_STAMP = ".galaxy_helpers_verified.json"
_USER_AGENT = "galaxy_helpers (course data fetcher; Python urllib)"
#: A ``.part`` file or folder that no process holds locked and that has not changed for this
#: many seconds is a crashed or killed run's leftover; :func:`fetch` removes it.
STALE_PART_S = 60.0


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class DataError(RuntimeError):
    """Base class of the errors raised while getting real data."""


class ManifestError(DataError, ValueError):
    """A manifest is missing or malformed; the message names the file and the key."""


class ChecksumError(DataError, ValueError):
    """A file's size or checksum differs from its manifest (corrupted or changed upstream)."""


class DataUnavailableError(DataError, FileNotFoundError):
    """A file is neither cached, nor in the mirror, nor downloadable; says how to provide it."""


class UnsafeArchiveError(DataError, ValueError):
    """An archive member would be written outside the extraction folder (or is a link)."""


class MirrorWarning(UserWarning):
    """The mirror folder given (``mirror=`` or ``GALAXY_DATA_MIRROR``) does not exist."""


class _Interrupted(DataError):
    """A download stopped before the end; its ``.part`` file is kept to be resumed."""


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest.

    Attributes
    ----------
    path : str
        Path below the dataset folder (POSIX separators), also its path in a mirror.
    url : str or None
        Pinned upstream URL; None for files built locally (``builder`` set).
    size : int or None
        Size in bytes, None where upstream does not publish it.
    sha256, md5 : str or None
        Lowercase hex checksums; at least one is set.
    extract_to : str or None
        For archives: folder (below the dataset folder) to unpack into.
    builder : str or None
        For derived files: name of the function in this module that builds it.
    spot_check : str or None
        For archives: a path (below the dataset folder) that must exist once unpacked.
    """

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
        if self.sha256:
            return "sha256", self.sha256
        return "md5", str(self.md5)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: the TOML table plus its file entries.

    Attributes
    ----------
    name : str
        Dataset or model name (the file stem).
    kind : str
        ``"dataset"`` or ``"models"``.
    path : Path
        The TOML file.
    raw : dict
        The whole parsed TOML table (citation, licence, catalogue mapping, ...).
    files : list of FileEntry
        Files downloaded from upstream (or copied from a mirror).
    derived_files : list of FileEntry
        Files built locally from the downloaded ones.
    """

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
        """Downloaded and derived files together."""
        return self.files + self.derived_files

    def citation(self) -> str:
        """The references to cite, one per line."""
        return "\n".join(self.raw.get("citation", []))


def manifest_dir() -> Path:
    """Return the folder holding the manifests.

    Returns
    -------
    Path
        ``$GALAXY_DATA_MANIFESTS`` when set, else ``data_manifests/`` next to the package
        (present in a source checkout or an editable install).
    """
    env = os.environ.get(MANIFESTS_ENV, "").strip()
    folder = (
        Path(env).expanduser() if env else Path(__file__).resolve().parent.parent / "data_manifests"
    )
    if not folder.is_dir():
        raise ManifestError(
            f"manifest folder {folder} not found. Install the course from its source checkout "
            f"(`pip install -e .`) or set {MANIFESTS_ENV} to the data_manifests folder."
        )
    return folder


def list_manifests(kind: str | None = None) -> list[str]:
    """Names of all manifests, optionally only those of one kind.

    Parameters
    ----------
    kind : str, optional
        ``"dataset"`` or ``"models"``.

    Returns
    -------
    list of str
        Sorted manifest names (file stems).
    """
    names = sorted(p.stem for p in manifest_dir().glob("*.toml"))
    if kind is None:
        return names
    return [n for n in names if load_manifest(n).kind == kind]


def _entry(item: dict, where: str, derived: bool) -> FileEntry:
    if not isinstance(item, dict) or "path" not in item:
        raise ManifestError(f"{where}: every file needs a 'path'")
    known = {
        "path",
        "url",
        "size",
        "sha256",
        "md5",
        "extract_to",
        "builder",
        "spot_check",
        "description",
    }
    unknown = set(item) - known
    if unknown:
        raise ManifestError(f"{where} ({item['path']}): unknown keys {sorted(unknown)}")
    return FileEntry(
        path=item["path"],
        url=item.get("url"),
        size=item.get("size"),
        sha256=(item.get("sha256") or None),
        md5=(item.get("md5") or None),
        extract_to=item.get("extract_to"),
        builder=item.get("builder") if derived else None,
        spot_check=item.get("spot_check"),
    )


def load_manifest(name: str | os.PathLike) -> Manifest:
    """Read one manifest by name (``"gz_decals_rings"``) or path.

    Parameters
    ----------
    name : str or path-like
        Manifest name (file stem in :func:`manifest_dir`) or a path to a TOML file.

    Returns
    -------
    Manifest

    Raises
    ------
    ManifestError
        Unknown name (lists the known ones) or malformed file.
    """
    path = Path(name)
    if path.suffix != ".toml":
        path = manifest_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(list_manifests())
        raise ManifestError(f"no manifest {path.name} in {path.parent}; known: {known}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ManifestError(f"{path}: not valid TOML ({err})") from err
    for key in ("name", "kind"):
        if key not in raw:
            raise ManifestError(f"{path}: missing required key {key!r}")
    if raw["name"] != path.stem:
        raise ManifestError(f"{path}: name {raw['name']!r} differs from the file name")
    files = tuple(_entry(f, f"{path} [[files]]", False) for f in raw.get("files", []))
    derived = tuple(
        _entry(f, f"{path} [[derived_files]]", True) for f in raw.get("derived_files", [])
    )
    return _checked_paths(Manifest(raw["name"], raw["kind"], path, raw, files, derived))


_NAME = re.compile(r"[A-Za-z0-9][\w.\-]*")


def _checked_paths(manifest: Manifest) -> Manifest:
    """Refuse a manifest whose name or any path could leave its dataset folder (or mirror).

    Called wherever a manifest is read (:func:`load_manifest`) or handed in (:func:`fetch`), so a
    ``../`` in a manifest given by path, or in a manifests folder, never reaches the file system.
    """
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


def _inside(root: Path, relative: str | os.PathLike, where: str) -> Path:
    """``root / relative`` resolved, refused unless it stays inside ``root``.

    The check is on the path as written (``..`` and absolute parts), not on where links lead, so
    a cache or mirror made of links to a bigger disk keeps working.
    """
    path = Path(os.path.normpath(os.path.join(os.path.abspath(root), relative)))
    if not path.is_relative_to(os.path.normpath(os.path.abspath(root))):
        raise ManifestError(
            f"{where}: {relative!s} leads to {path}, outside {root}; refusing to read, write or "
            "delete it. Fix the manifest (or the catalogue row)."
        )
    return path.resolve()


_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "md5": re.compile(r"[0-9a-f]{32}")}
_REQUIRED = {
    "dataset": (
        "name",
        "kind",
        "title",
        "description",
        "licence",
        "citation",
        "credit",
        "homepage",
        "files",
        "catalogue",
    ),
    "models": (
        "name",
        "kind",
        "title",
        "description",
        "licence",
        "citation",
        "credit",
        "homepage",
        "models",
        "checksum_note",
    ),
}


def _check_relative(path: Any, where: str) -> list[str]:
    if not isinstance(path, str) or not path:
        return [f"{where}: path must be a non-empty string"]
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        return [f"{where}: path {path!r} must be relative, with '/' and no '..'"]
    return []


def validate_manifest(manifest: str | os.PathLike | Manifest) -> list[str]:
    """Check a manifest against the manifest schema; return every problem found.

    Checks: required keys for its kind; citation a non-empty list; every file has a relative
    path, an ``https://`` URL (or a known builder), a positive integer size when given, a
    sha256 (64 hex) or md5 (32 hex); no path twice; URLs equal ``base_url`` + quoted path when
    ``base_url`` is given; the catalogue mapping names its file, ``id_str`` and ``file_loc``;
    models have ``hf_hub:<owner>/<repo>`` ids, an https URL and 1 or 3 channels.

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
    raw, src, problems = m.raw, m.path.name, []
    required = _REQUIRED.get(m.kind)
    if required is None:
        return [f"{src}: kind must be one of {sorted(_REQUIRED)}, got {m.kind!r}"]
    problems += [f"{src}: missing required key {k!r}" for k in required if k not in raw]
    citation = raw.get("citation")
    if not (isinstance(citation, list) and citation and all(isinstance(c, str) for c in citation)):
        problems.append(f"{src}: citation must be a non-empty list of strings")
    base = raw.get("base_url")
    if base is not None and not (base.startswith("https://") and base.endswith("/")):
        problems.append(f"{src}: base_url must start with https:// and end with '/'")
    seen: set[str] = set()
    for group in ("files", "derived_files"):
        for i, item in enumerate(raw.get(group, [])):
            where = f"{src} [[{group}]] #{i + 1}"
            path = item.get("path")
            problems += _check_relative(path, where)
            if path in seen:
                problems.append(f"{where}: duplicate path {path!r}")
            seen.add(path)
            if group == "files":
                url = item.get("url")
                if not (isinstance(url, str) and re.fullmatch(r"https://[^\s]+", url)):
                    problems.append(f"{where} ({path}): url must be an https:// URL, got {url!r}")
                elif base is not None and isinstance(path, str) and url != base + quote(path):
                    problems.append(f"{where} ({path}): url {url} is not base_url + quoted path")
            elif item.get("builder") not in _BUILDERS:
                problems.append(
                    f"{where} ({path}): builder {item.get('builder')!r} is not one of "
                    f"{sorted(_BUILDERS)}"
                )
            size = item.get("size")
            if size is not None and not (isinstance(size, int) and size > 0):
                problems.append(f"{where} ({path}): size must be a positive integer")
            sums = [a for a in ("sha256", "md5") if a in item]
            if not sums:
                problems.append(f"{where} ({path}): needs a sha256 or md5 checksum")
            for algorithm in sums:
                value = item[algorithm]
                if not (isinstance(value, str) and _HEX[algorithm].fullmatch(value)):
                    problems.append(
                        f"{where} ({path}): {algorithm} must be lowercase hex, got {value!r}"
                    )
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


# --------------------------------------------------------------------------------------------
# Checksums, atomic writes, downloads
# --------------------------------------------------------------------------------------------
def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks.

    Parameters
    ----------
    path : path-like
        File to hash.
    algorithm : str
        Any :mod:`hashlib` name (``"sha256"``, ``"md5"``).

    Returns
    -------
    str
        Lowercase hex digest.
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_provide(manifest: Manifest, entry: FileEntry, final: Path) -> str:
    return (
        f"To provide it: set {MIRROR_ENV} to a folder holding "
        f"<mirror>/{manifest.name}/{entry.path}, or download {entry.url} yourself to {final} "
        f"(checksum {entry.checksum[0]} {entry.checksum[1]} is verified)."
    )


def _lock(fd: int, wait: bool = False) -> bool:
    """Take an exclusive ``flock`` on ``fd`` (released when it is closed); False if held."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def _is_stale(path: Path, now: float | None = None) -> bool:
    """A ``.part`` file or folder that nobody holds locked and that is older than
    :data:`STALE_PART_S` (a day where locks are unavailable)."""
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except OSError:
        return False
    if age < (STALE_PART_S if fcntl is not None else 86400.0):
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _lock(fd)
    finally:
        os.close(fd)


def _remove_part(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _atomic_target(final: Path):
    """Yield an open temporary file next to ``final``; the caller renames it on success.

    The temporary file is deleted if the block raises, so a failure leaves nothing behind;
    while it is written it is locked, so a crash's leftover can be told from a live write.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    tmp = Path(tmp_name)
    _lock(fd, wait=True)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_verified(
    source: Iterable[bytes],
    final: Path,
    entry: FileEntry,
    origin: str,
    bar: Any = None,
) -> None:
    """Write the blocks of ``source`` to ``final`` atomically, checking size and checksum."""
    algorithm, expected = entry.checksum
    digest = hashlib.new(algorithm)
    written = 0
    with _atomic_target(final) as (handle, tmp):
        for block in source:
            handle.write(block)
            digest.update(block)
            written += len(block)
            if bar is not None:
                bar.update(len(block))
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        if entry.size is not None and written != entry.size:
            raise ChecksumError(
                f"{entry.path}: got {written} bytes from {origin}, the manifest says {entry.size}"
                " (truncated or changed upstream). Nothing was written to the cache; try again, "
                "or replace the source file."
            )
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumError(
                f"{entry.path}: {algorithm} {actual} from {origin} does not match the manifest "
                f"({expected}): the file is corrupted or changed upstream. Nothing was written to "
                "the cache; replace the source file (or fix the manifest if upstream really "
                "changed it)."
            )
        os.replace(tmp, final)


def _file_blocks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def _response_blocks(response) -> Iterable[bytes]:
    yield from iter(lambda: response.read(1 << 16), b"")


def download_file(
    entry: FileEntry,
    final: Path,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    opener: Callable[..., Any] | None = None,
    resume: bool = True,
) -> Path:
    """Download one manifest file from its URL to ``final``, verified and atomically.

    The bytes go to ``.<name>.<algorithm>-<first 16 hex digits>.part`` next to ``final``
    (locked while written). When a download stops part-way (a cut connection, a timeout, a
    killed process), that file is kept and the next attempt, in this call or a later run, asks
    only for the rest with an HTTP ``Range`` request; a server that answers with the whole file
    (200 instead of 206) or refuses the range (416) gets a fresh download. The size and checksum
    of the whole file are verified at the end either way, and a mismatch deletes the ``.part``
    file (the next attempt starts from byte 0). If another process holds that file (it is
    downloading the same one), this call downloads to a private temporary file instead.

    Parameters
    ----------
    entry : FileEntry
        What to download (URL, size, checksum).
    final : Path
        Where the verified file ends up.
    retries : int
        Attempts in all; network errors, 5xx/429 answers and checksum mismatches are retried,
        other HTTP errors (404, 403, ...) are not.
    backoff_s : float
        Wait ``backoff_s * 2**attempt`` seconds between attempts.
    timeout_s : float
        Socket timeout of each attempt.
    progress : bool
        Show a byte progress bar (tqdm).
    opener : callable, optional
        Replacement for :func:`urllib.request.urlopen` (tests).
    resume : bool
        Continue a partial download left by an earlier attempt (default); False starts over.

    Returns
    -------
    Path
        ``final``.

    Raises
    ------
    DataUnavailableError
        The URL could not be read after ``retries`` attempts.
    ChecksumError
        Every attempt gave a file whose size or checksum is wrong.
    """
    if not entry.url:
        raise DataUnavailableError(f"{entry.path}: the manifest gives no URL to download it from")
    opener = opener or urllib.request.urlopen
    last: BaseException | None = None
    for attempt in range(max(1, int(retries))):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            _download_once(entry, final, timeout_s, progress, opener, resume)
            return final
        except urllib.error.HTTPError as err:
            last = err
            if err.code < 500 and err.code not in (416, 429):
                break
        except ChecksumError as err:
            last = err
        except (_Interrupted, urllib.error.URLError, http.client.HTTPException, OSError) as err:
            last = err  # (TimeoutError and cut connections are OSErrors)
    if isinstance(last, ChecksumError):
        raise last
    kept = partial_path(final, entry)
    note = (
        f" The {kept.stat().st_size} bytes received so far are kept in {kept}; the next fetch "
        "resumes from there."
        if kept.is_file() and kept.stat().st_size
        else ""
    )
    raise DataUnavailableError(
        f"{entry.path}: could not download {entry.url} after {attempt + 1} attempt(s) "
        f"({last}).{note}"
    ) from last


def partial_path(final: Path, entry: FileEntry) -> Path:
    """The resumable ``.part`` file of ``entry`` next to ``final`` (tagged by its checksum,
    so a partial download of another version of the file is never continued)."""
    algorithm, expected = entry.checksum
    return final.parent / f".{final.name}.{algorithm}-{expected[:16]}.part"


def _range_start(response) -> int | None:
    found = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range") or "")
    return int(found.group(1)) if found else None


def _download_once(entry, final, timeout_s, progress, opener, resume) -> None:
    """One attempt of :func:`download_file`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final, entry)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    handle = os.fdopen(fd, "r+b")
    with handle:
        if not _lock(fd):  # another process downloads this very file: go private, no resume
            handle.close()
            return _download_whole(entry, final, timeout_s, progress, opener)
        try:
            return _resume_into(handle, partial, entry, final, timeout_s, progress, opener, resume)
        except BaseException:
            handle.flush()
            if os.fstat(fd).st_size == 0:  # nothing worth resuming: leave nothing behind
                partial.unlink(missing_ok=True)
            raise


def _download_bar(entry, total, progress: bool, initial: int = 0):
    """The byte progress bar of one file's download."""
    from tqdm.auto import tqdm

    name = PurePosixPath(entry.path).name
    return tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, desc=name,
        disable=not progress, leave=False,
    )  # fmt: skip


def _resume_into(handle, partial, entry, final, timeout_s, progress, opener, resume) -> None:
    fd = handle.fileno()
    algorithm, expected = entry.checksum
    offset = os.fstat(fd).st_size if resume else 0
    if entry.size is not None and offset > entry.size:
        offset = 0
    if offset and offset == entry.size and _digest_of(handle, offset, algorithm) == expected:
        os.replace(partial, final)  # complete before a crash, never renamed
        return None
    if entry.size is not None and offset >= entry.size:
        offset = 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(entry.url, headers=headers)
    try:
        response = opener(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # the range is past the end: start over
            handle.truncate(0)
        raise
    with response:
        status = getattr(response, "status", None) or response.getcode()
        if offset and (status != 206 or _range_start(response) != offset):
            offset = 0  # the server sent the whole file (no Range support)
        digest = hashlib.new(algorithm)
        if offset:
            digest = _digest_of(handle, offset, algorithm, digest)
        handle.seek(offset)
        handle.truncate()
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        received = 0
        total = offset + length if length is not None else entry.size
        with _download_bar(entry, total, progress, initial=offset) as bar:
            for block in _response_blocks(response):
                handle.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
    handle.flush()
    os.fsync(fd)
    written = offset + received
    if length is not None and received < length:
        raise _Interrupted(f"the connection closed after {written} of {offset + length} bytes")
    resumed = f" (resumed at byte {offset})" if offset else ""
    problem = None
    if entry.size is not None and written != entry.size:
        problem = (
            f"{entry.path}: got {written} bytes from {entry.url}{resumed}, the manifest says "
            f"{entry.size} (truncated or changed upstream). Nothing was written to the "
            "cache; try again, or replace the source file."
        )
    elif (actual := digest.hexdigest()) != expected:
        problem = (
            f"{entry.path}: {algorithm} {actual} from {entry.url}{resumed} does not match the "
            f"manifest ({expected}): the file is corrupted or changed upstream. Nothing was "
            "written to the cache; replace the source file (or fix the manifest if upstream "
            "really changed it)."
        )
    if problem is not None:
        partial.unlink(missing_ok=True)
        raise ChecksumError(problem)
    os.replace(partial, final)
    return None


def _digest_of(handle, n: int, algorithm: str, digest=None):
    """Hash of the first ``n`` bytes of an open file (a hashlib object when ``digest`` is
    given, else the hex digest)."""
    out = digest if digest is not None else hashlib.new(algorithm)
    handle.seek(0)
    left = n
    while left > 0:
        block = handle.read(min(left, 1 << 20))
        if not block:
            break
        out.update(block)
        left -= len(block)
    return out if digest is not None else out.hexdigest()


def _download_whole(entry, final, timeout_s, progress, opener) -> None:
    """Download without resuming, to a private temporary file (see :func:`_copy_verified`)."""
    request = urllib.request.Request(entry.url, headers={"User-Agent": _USER_AGENT})
    with opener(request, timeout=timeout_s) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else entry.size
        with _download_bar(entry, total, progress) as bar:
            _copy_verified(_response_blocks(response), final, entry, entry.url, bar)


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------
def _check_member(name: str, archive: Path, target: Path) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    resolved = (target / pure).resolve()
    if pure.is_absolute() or ".." in pure.parts or not resolved.is_relative_to(target.resolve()):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written outside {target}; refusing to unpack "
            "this archive. Get the archive again from its pinned URL, or unpack it by hand after "
            "checking its contents."
        )
    return resolved


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Unpack a tar (optionally gzip/bz2/xz) or zip archive into ``target`` safely.

    Members are unpacked into a temporary folder next to ``target`` and renamed into place
    only when all of them are unpacked, so a failure leaves no half-unpacked folder. Absolute
    paths, ``..`` components, links and device files are refused.

    Parameters
    ----------
    archive : path-like
        The archive file.
    target : path-like
        Folder to create (must not exist yet).

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    UnsafeArchiveError
        A member would escape ``target`` or is a link or special file.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists already; remove it to unpack {archive} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part"))
    lock = os.open(tmp, os.O_RDONLY)  # held while unpacking: not a crash's leftover
    _lock(lock, wait=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, archive, tmp)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:  # symlink
                        raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a link")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for member in members:
                    _check_member(member.name, archive, tmp)
                    if not (member.isfile() or member.isdir()):
                        raise UnsafeArchiveError(
                            f"{archive}: member {member.name!r} is a link or special file; "
                            "refusing to unpack it"
                        )
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extractall(tmp, members=members)
        else:
            raise DataError(f"{archive}: not a tar or zip archive")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)
    return target


# --------------------------------------------------------------------------------------------
# Derived files
# --------------------------------------------------------------------------------------------
_EXAMPLE_NAME = re.compile(r"decals-(\d+)_([ax])-(\d+)_(\d+)\.jpg")


def _build_examples_labels(manifest: Manifest, folder: Path) -> bytes:
    """Rebuild ``examples_labels.csv`` from the example images' names (see the manifest).

    One row per distinct image (by md5, in file-name order); ``answers`` lists every answer
    whose example the image is, ``;``-joined, in file-name order.
    """
    tree = manifest.catalogue["site_tree"]
    rows: dict[str, list] = {}
    for entry in sorted(manifest.files, key=lambda e: e.path):
        match = _EXAMPLE_NAME.fullmatch(PurePosixPath(entry.path).name)
        if match is None:
            continue
        question, _, answer, _ = match.groups()
        names = tree[question]
        label = f"{names[0]}_{names[int(answer) + 1]}"
        md5 = file_checksum(folder / entry.path, "md5")
        if md5 in rows:
            if label not in rows[md5][2]:
                rows[md5][2].append(label)
        else:
            rows[md5] = [entry.path, md5, [label]]
    out = io.StringIO()
    out.write("file,md5,answers\n")
    for path, md5, labels in rows.values():
        out.write(f"{path},{md5},{';'.join(labels)}\n")
    return out.getvalue().encode()


_BUILDERS: dict[str, Callable[[Manifest, Path], bytes]] = {
    "examples_labels": _build_examples_labels,
}


# --------------------------------------------------------------------------------------------
# Fetch
# --------------------------------------------------------------------------------------------
def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from .course import cache_dir as course_cache_dir

    return course_cache_dir()


def dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder a dataset is fetched into: ``<cache_dir>/data/<name>``.

    Parameters
    ----------
    name : str
        Manifest name.
    cache_dir : path-like, optional
        Cache root; default :func:`galaxy_helpers.course.cache_dir`.

    Returns
    -------
    Path
    """
    return _cache_root(cache_dir) / "data" / name


def _mirror_setting(mirror: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The mirror root asked for (``mirror=`` or the environment) and where it came from."""
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV, "").strip() or None
        origin = f"environment variable {MIRROR_ENV}"
    else:
        origin = "the mirror= argument"
    return (Path(mirror).expanduser() if mirror else None), origin


def _missing_mirror_note(mirror: str | os.PathLike | None) -> str:
    root, origin = _mirror_setting(mirror)
    if root is None or root.is_dir():
        return ""
    return f"the mirror folder {root} (from {origin}) does not exist"


def _mirror_root(mirror: str | os.PathLike | None) -> Path | None:
    """The mirror folder, or None; a folder that does not exist is named in a MirrorWarning."""
    root, origin = _mirror_setting(mirror)
    if root is not None and not root.is_dir():
        warnings.warn(
            f"The mirror folder {root} (from {origin}) does not exist, so it is not used: files "
            f"come from the cache or the network. Fix the path (a typo?) or unset {MIRROR_ENV}.",
            MirrorWarning,
            stacklevel=3,
        )
        return None
    return root


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _manifest_digest(manifest: Manifest) -> str:
    return hashlib.sha256(manifest.path.read_bytes()).hexdigest()


def _read_stamp(folder: Path) -> dict:
    try:
        return json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return {}


def _file_state(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _write_stamp(folder: Path, stamp: dict) -> None:
    with _atomic_target(folder / _STAMP) as (handle, tmp):
        handle.write(json.dumps(stamp, indent=1, sort_keys=True).encode())
        handle.close()
        os.replace(tmp, folder / _STAMP)


def _is_verified(entry: FileEntry, path: Path, stamp: dict) -> bool:
    """True when ``path`` matches the manifest: by the stamp when unchanged, else by hashing."""
    state = _file_state(path)
    if state is None:
        return False
    if stamp.get("files", {}).get(entry.path) == state:
        return True
    if entry.size is not None and state[0] != entry.size:
        return False
    algorithm, expected = entry.checksum
    return file_checksum(path, algorithm) == expected


def _manifest_or_name(name: str | Manifest) -> Manifest:
    return _checked_paths(name) if isinstance(name, Manifest) else load_manifest(name)


def fetch(
    name: str | Manifest,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    progress: bool = True,
    offline: bool | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> Path:
    """Make every file of a dataset present and verified in the cache; return its folder.

    Files already cached and unchanged since they were verified are kept. Missing ones are
    copied from the mirror (``<mirror>/<dataset>/<path>``) when it has them, else downloaded
    from their pinned URL. Archives are unpacked safely, derived files (such as a label table
    built from file names) are built, and everything is checked against the manifest.

    Parameters
    ----------
    name : str or Manifest
        Manifest name, e.g. ``"gz_decals_rings"``.
    cache_dir : path-like, optional
        Cache root (default :func:`galaxy_helpers.course.cache_dir`); files go to
        ``<cache_dir>/data/<name>/``.
    mirror : path-like, optional
        Mirror root; default the environment variable ``GALAXY_DATA_MIRROR``.
    progress : bool
        Show progress bars.
    offline : bool, optional
        Never use the network (default: environment variable ``GALAXY_DATA_OFFLINE=1``).
        A file that is neither cached nor mirrored then raises at once.
    retries, backoff_s : int, float
        Download attempts per file and the base of the exponential backoff between them.

    Returns
    -------
    Path
        The dataset folder ``<cache_dir>/data/<name>``.

    Raises
    ------
    DataUnavailableError
        A file is not cached, not in the mirror and cannot be downloaded; the message names
        the file, its URL and how to provide it.
    ChecksumError
        A mirrored or downloaded file does not match the manifest (nothing is kept).
    UnsafeArchiveError
        An archive member would escape its folder.
    """
    from tqdm.auto import tqdm

    manifest = _manifest_or_name(name)
    if manifest.kind != "dataset":
        raise ManifestError(
            f"{manifest.path}: {manifest.name!r} is a {manifest.kind} manifest, not a dataset; "
            "load models with galaxy_helpers.pretrained.load_pretrained_encoder"
        )
    folder = dataset_dir(manifest.name, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    mirror_root = _mirror_root(mirror)
    mirror_note = _missing_mirror_note(mirror)
    no_network = _offline(offline)
    clean_stale_parts(manifest, cache_dir)
    digest = _manifest_digest(manifest)
    stamp = _read_stamp(folder)
    if stamp.get("manifest_sha256") != digest:
        stamp = {"manifest_sha256": digest, "files": {}}
    # Only states of files verified against this manifest go into the stamp.
    verified: dict[str, list[int]] = {}

    def done(entry: FileEntry, path: Path) -> None:
        verified[entry.path] = _file_state(path)  # type: ignore[assignment]

    try:
        bar = tqdm(
            manifest.files,
            desc=f"{manifest.name}",
            unit="file",
            disable=not progress,
            leave=False,
        )
        for entry in bar:
            final = folder / entry.path
            _inside(folder, entry.path, f"{manifest.path} file")
            if _is_verified(entry, final, stamp):
                done(entry, final)
                _drop_partial(final, entry)
                continue
            final.unlink(missing_ok=True)  # stale or corrupted copy
            source = mirror_root / manifest.name / entry.path if mirror_root else None
            if source is not None:
                _inside(mirror_root, PurePosixPath(manifest.name, entry.path), "mirror file")
            if source is not None and source.is_file():
                _copy_verified(_file_blocks(source), final, entry, f"mirror file {source}")
            elif no_network or not entry.url:
                where = (
                    f"not in the mirror ({source} does not exist)"
                    if source is not None
                    else f"not cached at {final} and {mirror_note}"
                    if mirror_note
                    else f"not cached at {final} and no mirror is set ({MIRROR_ENV})"
                )
                raise DataUnavailableError(
                    f"{manifest.name}: file {entry.path} is {where}, and the network is off "
                    f"({OFFLINE_ENV}). It comes from {entry.url}. "
                    + _how_to_provide(manifest, entry, final)
                )
            else:
                try:
                    download_file(
                        entry, final, retries=retries, backoff_s=backoff_s, progress=progress
                    )
                except DataUnavailableError as err:
                    raise DataUnavailableError(
                        f"{manifest.name}: {err} " + _how_to_provide(manifest, entry, final)
                    ) from err
            done(entry, final)
            _drop_partial(final, entry)
        bar.close()

        for entry in manifest.files:
            if entry.extract_to:
                _extract_once(manifest, entry, folder)

        for entry in manifest.derived_files:
            final = folder / entry.path
            _inside(folder, entry.path, f"{manifest.path} derived file")
            if _is_verified(entry, final, stamp):
                done(entry, final)
                continue
            source = mirror_root / manifest.name / entry.path if mirror_root else None
            if source is not None and source.is_file():
                blocks: Iterable[bytes] = _file_blocks(source)
                origin = f"mirror file {source}"
            else:
                builder = _BUILDERS.get(entry.builder or "")
                if builder is None:
                    raise ManifestError(
                        f"{manifest.path}: derived file {entry.path} names unknown builder "
                        f"{entry.builder!r}; known: {sorted(_BUILDERS)}"
                    )
                blocks = [builder(manifest, folder)]
                origin = f"builder {entry.builder}"
            _copy_verified(blocks, final, entry, origin)
            done(entry, final)
    finally:
        # Record what was verified, even after a failure, so a retry does not re-hash it.
        _write_stamp(folder, {"manifest_sha256": digest, "files": verified})
    return folder


def _drop_partial(final: Path, entry: FileEntry) -> None:
    """Remove ``entry``'s resumable ``.part`` file once ``final`` is verified (unless another
    process holds it)."""
    partial = partial_path(final, entry)
    if not partial.exists():
        return
    try:
        fd = os.open(partial, os.O_RDONLY)
    except OSError:
        return
    try:
        if _lock(fd):
            partial.unlink(missing_ok=True)
    finally:
        os.close(fd)


def clean_stale_parts(
    name: str | Manifest, cache_dir: str | os.PathLike | None = None
) -> list[Path]:
    """Remove the ``.part`` files and folders a crashed or killed run left in a dataset's folder.

    A ``.part`` is a leftover when no process holds it locked (every download and unpacking
    holds its lock until it finishes) and it has not changed for :data:`STALE_PART_S` seconds.
    The resumable partial download of a file the manifest still lists (same checksum) is kept
    for :func:`download_file` to continue; one of another version of the file is removed.
    :func:`fetch` calls this first. Only the folders the manifest writes into are looked at.

    Returns
    -------
    list of Path
        What was removed.
    """
    manifest = _manifest_or_name(name)
    folder = dataset_dir(manifest.name, cache_dir)
    keep = set()
    parents = {folder}
    for entry in manifest.all_files:
        _inside(folder, entry.path, f"{manifest.path} file")
        final = folder / entry.path
        parents.add(final.parent)
        if entry in manifest.files:
            keep.add(partial_path(final, entry))
        if entry.extract_to:
            _inside(folder, str(entry.extract_to), f"{manifest.path} extract_to")
            parents.add((folder / str(entry.extract_to)).parent)
    removed = []
    now = time.time()
    for parent in sorted(parents):
        try:
            names = [e.name for e in os.scandir(parent)]
        except OSError:
            continue
        for part_name in names:
            path = parent / part_name
            if not part_name.endswith(".part") or path in keep:
                continue
            if _is_stale(path, now):
                _remove_part(path)
                removed.append(path)
    return removed


def _extract_once(manifest: Manifest, entry: FileEntry, folder: Path) -> None:
    target = folder / str(entry.extract_to)
    _inside(folder, str(entry.extract_to), f"{manifest.path} extract_to")
    if target.is_dir() and (target / ".complete").is_file():
        return
    if target.exists():
        shutil.rmtree(target)  # left by an older, interrupted version
    safe_extract(folder / entry.path, target)
    if entry.spot_check and not (folder / entry.spot_check).is_file():
        shutil.rmtree(target)
        raise DataError(
            f"{folder / entry.path}: unpacked, but {entry.spot_check} is not in it; the archive "
            "does not have the layout the manifest expects. Check the manifest's extract_to."
        )
    (target / ".complete").write_text(entry.checksum[1])


def dataset_available(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
) -> bool:
    """Whether :func:`fetch` can succeed without the network. Never touches the network.

    Parameters
    ----------
    name : str
        Manifest name.
    cache_dir, mirror : path-like, optional
        As in :func:`fetch`.

    Returns
    -------
    bool
        True when every file is cached and unchanged since verification, or present in the
        mirror (checksums are verified later, by :func:`fetch`).
    """
    try:
        manifest = load_manifest(name)
    except ManifestError:
        return False
    if manifest.kind != "dataset":
        return False
    folder = dataset_dir(manifest.name, cache_dir)
    stamp = _read_stamp(folder)
    mirror_root = _mirror_root(mirror)
    fresh = stamp.get("manifest_sha256") == _manifest_digest(manifest)
    for entry in manifest.files:
        state = _file_state(folder / entry.path)
        cached = fresh and state is not None and stamp.get("files", {}).get(entry.path) == state
        mirrored = mirror_root is not None and (mirror_root / manifest.name / entry.path).is_file()
        if not (cached or mirrored):
            return False
    return True


@dataclass
class VerifyReport:
    """What :func:`verify` found in a dataset's cache folder.

    ``checked``: files whose size and checksum match the manifest; ``missing``: files not in
    the cache; ``bad``: ``{path: what is wrong}``; ``deleted``: the bad files removed.
    """

    dataset: str
    folder: Path
    checked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no cached file is corrupted (missing files are not an error)."""
        return not self.bad

    def __str__(self) -> str:
        lines = [
            f"{self.dataset} ({self.folder}): {len(self.checked)} file(s) verified, "
            f"{len(self.bad)} bad, {len(self.missing)} not cached."
        ]
        for path, problem in self.bad.items():
            fate = "deleted" if path in self.deleted else "kept"
            lines.append(f"  BAD {path}: {problem} ({fate})")
        if self.bad:
            lines.append(
                f"  Run galaxy_helpers.data.fetch({self.dataset!r}) to fetch the deleted files "
                "again."
                if self.deleted
                else "  Delete them, or call verify(..., delete=True)."
            )
        if self.missing:
            lines.append(f"  not cached: {', '.join(self.missing[:10])}")
        return "\n".join(lines)


def verify(
    name: str | Manifest,
    cache_dir: str | os.PathLike | None = None,
    delete: bool = True,
    progress: bool = True,
) -> VerifyReport:
    """Re-hash every cached file of a dataset against its manifest; report (and delete) bad ones.

    :func:`fetch` trusts a file whose size and modification time are unchanged since it was
    verified; this reads every byte again, so it also finds a file corrupted in place (a disk
    error, an edit that kept the size and time). The verification record is rewritten with the
    good files only, so the next :func:`fetch` downloads (or copies from the mirror) what was
    deleted. Unpacked archive members are not hashed (manifests pin the archive, not its
    members); a deleted archive is fetched again but not unpacked again.

    Parameters
    ----------
    name : str or Manifest
        Manifest name, e.g. ``"gz_decals_rings"``.
    cache_dir : path-like, optional
        As in :func:`fetch`.
    delete : bool
        Delete the files that do not match (default); False only reports them.
    progress : bool
        Progress bar over the files.

    Returns
    -------
    VerifyReport
        ``.ok``, ``.bad`` (path -> problem), ``.deleted``, ``.missing``, readable ``str()``.
    """
    from tqdm.auto import tqdm

    manifest = _manifest_or_name(name)
    if manifest.kind != "dataset":
        raise ManifestError(f"{manifest.path}: {manifest.name!r} is a {manifest.kind} manifest")
    folder = dataset_dir(manifest.name, cache_dir)
    report = VerifyReport(manifest.name, folder)
    verified: dict[str, list[int]] = {}
    for entry in tqdm(manifest.all_files, desc="verifying", unit="file", disable=not progress):
        _inside(folder, entry.path, f"{manifest.path} file")
        path = folder / entry.path
        if not path.is_file():
            report.missing.append(entry.path)
            continue
        algorithm, expected = entry.checksum
        size = path.stat().st_size
        if entry.size is not None and size != entry.size:
            problem = f"{size} bytes, the manifest says {entry.size}"
        elif (actual := file_checksum(path, algorithm)) != expected:
            problem = f"{algorithm} {actual}, the manifest says {expected}"
        else:
            report.checked.append(entry.path)
            verified[entry.path] = _file_state(path)  # type: ignore[assignment]
            continue
        report.bad[entry.path] = problem
        if delete:
            path.unlink(missing_ok=True)
            report.deleted.append(entry.path)
    if folder.is_dir():
        _write_stamp(folder, {"manifest_sha256": _manifest_digest(manifest), "files": verified})
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m galaxy_helpers.data verify NAME [--keep]``: re-hash a dataset's cache.

    Exits 1 when a cached file did not match its manifest (listed, and deleted unless
    ``--keep``), else 0.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m galaxy_helpers.data")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="re-hash every cached file of a dataset")
    check.add_argument("name", nargs="+", help="manifest name(s) or path(s)")
    check.add_argument("--keep", action="store_true", help="report bad files, do not delete")
    check.add_argument("--cache-dir", default=None, help="cache root (default: course cache)")
    args = parser.parse_args(argv)
    status = 0
    for name in args.name:
        report = verify(name, cache_dir=args.cache_dir, delete=not args.keep, progress=False)
        print(report)
        status = max(status, 0 if report.ok else 1)
    return status


# --------------------------------------------------------------------------------------------
# Catalogues
# --------------------------------------------------------------------------------------------
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
    """Vote counts from cumulative fractions: a question's counts sum to its parent's count.

    ``spec["volunteers"]`` volunteers answer the first question; a question with a ``parent``
    answer is asked of the volunteers who gave that answer. A question whose fractions are
    all 0 for a galaxy gets 0 votes (unasked).
    """
    volunteers = int(spec["volunteers"])
    if volunteers < 1:
        raise ManifestError(f"{where} [votes]: volunteers must be a positive whole number")
    out: dict[str, np.ndarray] = {}
    for question, qspec in spec["questions"].items():
        answers = qspec["answers"]
        fractions = np.stack(
            [_fraction_column(raw, column, where).to_numpy() for column in answers.values()],
            axis=1,
        )
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


def _catalogue_from_manifest(manifest: Manifest, folder: Path) -> pd.DataFrame:
    spec = manifest.catalogue
    where = f"{manifest.path} [catalogue]"
    files = spec["file"] if isinstance(spec["file"], list) else [spec["file"]]
    splits = spec.get("split_from_file")
    frames = []
    for i, file in enumerate(files):
        path = folder / file
        ids_as_text = {str(spec.get("id_str", "")).removeprefix("stem:"): str}  # "00042" stays
        frame = (
            pd.read_parquet(path)
            if spec.get("format") == "parquet"
            else pd.read_csv(path, dtype=ids_as_text)
        )
        if splits:
            frame["split"] = splits[i]
        frames.append(frame)
    raw = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    out = pd.DataFrame(index=raw.index)
    id_rule = spec["id_str"]
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
    out["file_loc"] = [
        str(_inside(folder, p, f"{where} file_loc, row {k}")) for k, p in enumerate(relative)
    ]
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
            for answer in names[1:]:
                if answer:
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
        from .schema import get_schema

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
        from .images import _check_crop

        out["crop"] = _check_crop(spec["crop"], f"{where} crop")
    if "split" in spec:
        every = int(spec["split"]["test_every"])
        order = np.argsort(raw[id_rule].to_numpy(), kind="stable")
        split = np.full(len(raw), "train", dtype=object)
        split[order[np.arange(len(raw)) % every == every - 1]] = "test"
        out["split"] = split
    consumed.update(spec.get("drop", []))

    if spec.get("schema"):
        from .schema import canonical_columns

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


def load_dataset(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    progress: bool = True,
    offline: bool | None = None,
) -> pd.DataFrame:
    """Fetch a dataset (verified) and return its catalogue in the course's contract.

    Parameters
    ----------
    name : str
        ``"gz_decals_rings"``, ``"gz_decals_examples"`` or ``"gz_decals_dr5"``.
    cache_dir, mirror, progress, offline
        As in :func:`fetch`.

    Returns
    -------
    pandas.DataFrame
        One row per galaxy with ``id_str`` and absolute ``file_loc``, then:

        - ``gz_decals_rings``: ``ring`` (1/0) and ``tag_ring`` (bool), plus the upstream
          model-predicted fractions (``*_fraction``; predictions, not volunteer votes);
        - ``gz_decals_examples``: ``answers`` (``;``-joined site answers), one bool column
          ``example_<question>_<answer>`` per answer of the site's tree, ``dr5_answers``
          (nearest DR5 answer columns, ``;``-joined), ``tag_ring``, ``tag_lens``,
          ``tag_irregular``, ``tag_dust-lane``, ``tag_overlapping``, ``tag_merger``,
          ``tag_tidal``, ``tag_artifact``, and ``md5``;
        - ``gz_decals_dr5``: canonical DR5 vote-count columns and ``split``.

    Examples
    --------
    >>> examples = load_dataset("gz_decals_examples")            # doctest: +SKIP
    >>> examples.loc[examples["tag_ring"], "file_loc"].head()    # doctest: +SKIP
    """
    manifest = load_manifest(name)
    folder = fetch(manifest, cache_dir=cache_dir, mirror=mirror, progress=progress, offline=offline)
    return _catalogue_from_manifest(manifest, folder)


if __name__ == "__main__":
    raise SystemExit(main())

"""Real data: manifests, verified downloads (pooch), an offline mirror, and ready catalogues.

Every dataset or model is one TOML file in ``data_manifests/``: what it is, citation, licence,
pinned URL, size and checksum of every file, and how its catalogue maps onto the catalogue
contract of ``DEVELOPERS.md``. :func:`fetch` puts a dataset's files into
``<core.cache_dir()>/data/<dataset>/``, from a mirror folder (``$GALAXY_DATA_MIRROR``, laid out
``<mirror>/<dataset>/<path>``; the network is never touched) or the pinned URL (retries,
progress bar, and a cut download resumes from its ``.part`` file with an HTTP ``Range``
request). pooch checks every file's checksum before renaming it into place, so the cache never
holds a half or wrong file under a final name. :func:`load_dataset` returns the catalogue.

>>> from galaxy_helpers import data
>>> rings = data.load_dataset("gz_decals_rings")          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tarfile
import time
import tomllib
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pooch

from . import core

try:  # POSIX: who holds a .part file (a live download) vs. a crashed run's leftover
    import fcntl
except ImportError:  # pragma: no cover - Windows: leftovers are told apart by age alone
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MIRROR_ENV", "OFFLINE_ENV", "MANIFESTS_ENV", "STALE_PART_S", "DataError", "ManifestError",
    "ChecksumError", "DataUnavailableError", "UnsafeArchiveError", "MirrorWarning", "FileEntry",
    "Manifest", "VerifyReport", "manifest_dir", "list_manifests", "load_manifest",
    "validate_manifest", "dataset_dir", "dataset_available", "fetch", "verify",
    "clean_stale_parts", "partial_path", "load_dataset", "file_checksum", "download_file",
    "safe_extract",
]  # fmt: skip

MIRROR_ENV = "GALAXY_DATA_MIRROR"
OFFLINE_ENV = "GALAXY_DATA_OFFLINE"
MANIFESTS_ENV = "GALAXY_DATA_MANIFESTS"
_STAMP = ".galaxy_helpers_verified.json"
_HEADERS = {
    "User-Agent": "galaxy_helpers (course data fetcher; pooch)",
    "Accept-Encoding": "identity",
}
#: A leftover (``.part`` or temporary file/folder) that no process holds locked and that has
#: not changed for this many seconds is a crashed run's; :func:`fetch` removes it.
STALE_PART_S = 60.0


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


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest: its ``path`` below the dataset folder (and in a mirror), pinned
    ``url``, ``size`` in bytes, lowercase hex ``sha256`` or ``md5``; for archives ``extract_to``
    (a folder) and ``spot_check`` (a path that must exist once unpacked); for files built
    locally ``builder`` (a name in ``_BUILDERS``)."""

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
        """Downloaded and derived files together."""
        return self.files + self.derived_files

    def citation(self) -> str:
        """The references to cite, one per line."""
        return "\n".join(self.raw.get("citation", []))


def manifest_dir() -> Path:
    """The folder holding the manifests: ``$GALAXY_DATA_MANIFESTS``, else ``data_manifests/``
    next to the package (a source checkout or an editable install)."""
    env = os.environ.get(MANIFESTS_ENV, "").strip()
    folder = (
        Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "data_manifests"
    )
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
    values = {k: item.get(k) or None for k in _KEYS}
    return FileEntry(path=item["path"], size=item.get("size"), builder=builder, **values)


def load_manifest(name: str | os.PathLike) -> Manifest:
    """Read one manifest by name (``"gz_decals_rings"``) or TOML path.

    Raises :class:`ManifestError` for an unknown name (listing the known ones), a malformed
    file, or a path that would leave the dataset's folder.
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
    files, derived = (
        tuple(_entry(f, f"{path} [[{group}]]", group != "files") for f in raw.get(group, []))
        for group in ("files", "derived_files")
    )
    return _checked_paths(Manifest(raw["name"], raw["kind"], path, raw, files, derived))


_NAME = re.compile(r"[A-Za-z0-9][\w.\-]*")


def _checked_paths(manifest: Manifest) -> Manifest:
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
            where += f" ({path})"
            url, size, builder = item.get("url"), item.get("size"), item.get("builder")
            if group == "files" and not re.fullmatch(r"https://[^\s]+", str(url)):
                problems.append(f"{where}: url must be an https:// URL, got {url!r}")
            elif group == "files" and base is not None and url != base + quote(str(path)):
                problems.append(f"{where}: url {url} is not base_url + quoted path")
            elif group != "files" and builder not in _BUILDERS:
                problems.append(f"{where}: builder {builder!r} is not one of {sorted(_BUILDERS)}")
            if size is not None and not (isinstance(size, int) and size > 0):
                problems.append(f"{where}: size must be a positive integer")
            sums = [a for a in ("sha256", "md5") if a in item]
            if not sums:
                problems.append(f"{where}: needs a sha256 or md5 checksum")
            for alg in sums:
                if not (isinstance(item[alg], str) and _HEX[alg].fullmatch(item[alg])):
                    problems.append(f"{where}: {alg} must be lowercase hex, got {item[alg]!r}")
            if item.get("extract_to") is not None:
                problems += _check_relative(item["extract_to"], f"{where} extract_to")
    catalogue = raw.get("catalogue")
    if m.kind == "dataset" and isinstance(catalogue, dict):
        problems += [
            f"{src} [catalogue]: missing required key {key!r}"
            for key in ("file", "id_str", "file_loc")
            if key not in catalogue
        ]
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
# Verified files through pooch: mirror copies, built files, resumable downloads, archives
# --------------------------------------------------------------------------------------------
def file_checksum(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Lowercase hex digest of a file (``algorithm``: any :mod:`hashlib` name)."""
    return pooch.file_hash(str(path), alg=algorithm)


def partial_path(final: Path, entry: FileEntry) -> Path:
    """The resumable ``.part`` file of ``entry`` next to ``final`` (tagged by its checksum,
    so a partial download of another version of the file is never continued)."""
    algorithm, expected = entry.checksum
    return final.parent / f".{final.name}.{algorithm}-{expected[:16]}.part"


def _lock(fd: int, wait: bool = False) -> bool:
    """Take an exclusive ``flock`` on ``fd`` (released when it is closed); False if held."""
    if fcntl is None:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _quiet():
    """pooch announces every download and unpacking at INFO; our progress bars suffice."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def _size_error(entry: FileEntry, written: int, origin: str) -> ChecksumError:
    return ChecksumError(
        f"{entry.path}: got {written} bytes from {origin}, the manifest says {entry.size} "
        "(truncated or changed upstream). Nothing was written to the cache; try again, or "
        "replace the source file."
    )


class _Source:
    """A pooch downloader that copies a mirror file (``source``) or writes built bytes."""

    def __init__(self, entry: FileEntry, origin: str, source: Path | None = None, blob=b""):
        self.entry, self.origin, self.source, self.blob = entry, origin, source, blob

    def __call__(self, url: str, output_file: str, store: Any) -> None:
        if self.source is None:
            Path(output_file).write_bytes(self.blob)
        else:
            shutil.copyfile(self.source, output_file)
        size = os.path.getsize(output_file)
        if self.entry.size is not None and size != self.entry.size:
            raise _size_error(self.entry, size, self.origin)


class _Resumable:
    """A pooch downloader that fills the entry's ``.part`` file, resuming with ``Range``.

    The ``.part`` file is locked while written; when another process holds it (it downloads
    the same file), pooch's :class:`pooch.HTTPDownloader` downloads privately instead.
    """

    def __init__(self, entry: FileEntry, final: Path, timeout_s: float, progress: bool, resume):
        self.entry, self.timeout_s, self.progress, self.resume = entry, timeout_s, progress, resume
        self.partial, self.offset = partial_path(final, entry), 0

    @property
    def origin(self) -> str:
        return self.entry.url + (f" (resumed at byte {self.offset})" if self.offset else "")

    def __call__(self, url: str, output_file: str, store: Any) -> None:
        import requests

        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+b", buffering=0) as handle:
            if not _lock(fd):
                get = pooch.HTTPDownloader(progressbar=self.progress, headers=_HEADERS)
                return get(url, output_file, store)
            try:
                self._fill(handle, url)
            except requests.HTTPError as err:
                code = err.response.status_code if err.response is not None else 0
                if code == 416:  # the range is past the end: start over
                    handle.truncate(0)
                if code < 500 and code not in (416, 429):  # 404, 403...: not worth a retry
                    raise DataUnavailableError(f"{self.entry.path}: {url} answered {err}") from err
                raise
            finally:
                if os.fstat(fd).st_size == 0:  # nothing worth resuming: leave nothing behind
                    self.partial.unlink(missing_ok=True)
        os.replace(self.partial, output_file)  # pooch verifies the checksum, then renames
        return None

    def _fill(self, handle, url: str) -> None:
        import requests
        import urllib3
        from tqdm.auto import tqdm

        size, (algorithm, expected) = self.entry.size, self.entry.checksum
        offset = os.fstat(handle.fileno()).st_size if self.resume else 0
        if offset and offset == size and pooch.file_hash(str(self.partial), algorithm) == expected:
            return  # complete before a crash, never renamed
        self.offset = offset = 0 if size is not None and offset >= size else offset
        headers = {**_HEADERS, "Range": f"bytes={offset}-"} if offset else _HEADERS
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout_s) as response:
            response.raise_for_status()
            found = re.match(r"\s*bytes\s+(\d+)-", response.headers.get("Content-Range") or "")
            if offset and (response.status_code != 206 or not found or int(found[1]) != offset):
                self.offset = offset = 0  # the server sent the whole file (no Range support)
            handle.seek(offset)
            handle.truncate()
            length = response.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            total = offset + length if length is not None else size
            name = PurePosixPath(self.entry.path).name
            with tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=name,
                disable=not self.progress, leave=False,
            ) as bar, contextlib.suppress(urllib3.exceptions.HTTPError):  # fmt: skip
                # read1, not iter_content: a cut connection keeps the bytes received so far
                for block in iter(lambda: response.raw.read1(1 << 16), b""):
                    handle.write(block)
                    bar.update(len(block))
        written = os.fstat(handle.fileno()).st_size
        if length is not None and written < offset + length:
            raise requests.ConnectionError(f"the connection closed after {written} bytes")
        if size is not None and written != size:
            handle.truncate(0)
            raise _size_error(self.entry, written, self.origin)


def _retrieve(entry: FileEntry, final: Path, downloader, retries: int = 1) -> Path:
    """Put ``entry`` at ``final`` through pooch (temporary file, checksum, rename, retries)."""
    algorithm, expected = entry.checksum
    store = pooch.create(
        path=final.parent,
        base_url="",
        registry={final.name: f"{algorithm}:{expected}"},
        urls={final.name: entry.url or ""},
        retry_if_failed=max(1, int(retries)) - 1,
    )
    try:
        with _quiet():
            store.fetch(final.name, downloader=downloader)
    except ChecksumError:
        raise
    except ValueError as err:  # pooch's checksum check
        got = re.search(r"but got (\w+)", str(err))
        raise ChecksumError(
            f"{entry.path}: {algorithm} {got[1] if got else '?'} from {downloader.origin} does "
            f"not match the manifest ({expected}): the file is corrupted or changed upstream. "
            "Nothing was written to the cache; replace the source file (or fix the manifest if "
            "upstream really changed it)."
        ) from None
    return final


def download_file(
    entry: FileEntry,
    final: Path,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Download one manifest file from its URL to ``final``, verified and atomically.

    The bytes go to :func:`partial_path` (locked while written). A download that stops
    part-way keeps it, and the next attempt, in this call or a later run, asks only for the
    rest (HTTP ``Range``); a server that sends the whole file or refuses the range gets a
    fresh download. A size or checksum mismatch deletes the ``.part`` file.

    Parameters
    ----------
    entry : FileEntry
        What to download (URL, size, checksum).
    final : Path
        Where the verified file ends up.
    retries : int
        Attempts in all (pooch's ``retry_if_failed``, which waits 1 s, 2 s, ... between them);
        network errors, 5xx/416/429 answers and mismatches are retried, 404/403 are not.
    backoff_s : float
        Unused, kept for callers: pooch sets the wait between attempts.
    timeout_s : float
        Socket timeout of each attempt.
    progress : bool
        Byte progress bar (tqdm).
    resume : bool
        Continue a partial download left by an earlier attempt (default); False starts over.

    Returns
    -------
    Path
        ``final``. Raises :class:`DataUnavailableError` when the URL could not be read after
        ``retries`` attempts (saying what was kept) and :class:`ChecksumError` when the last
        attempt gave a file of the wrong size or checksum.
    """
    import requests

    if not entry.url:
        raise DataUnavailableError(f"{entry.path}: the manifest gives no URL to download it from")
    final.parent.mkdir(parents=True, exist_ok=True)
    downloader = _Resumable(entry, final, timeout_s, progress, resume)
    try:
        return _retrieve(entry, final, downloader, retries)
    except (requests.RequestException, OSError) as err:
        if isinstance(err, DataError):
            raise
        kept = downloader.partial
        note = (
            f" The {kept.stat().st_size} bytes received so far are kept in {kept}; the next "
            "fetch resumes from there."
            if kept.is_file() and kept.stat().st_size
            else ""
        )
        raise DataUnavailableError(
            f"{entry.path}: could not download {entry.url} after {max(1, int(retries))} "
            f"attempt(s) ({err}).{note}"
        ) from err


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Unpack a tar (optionally gzip/bz2/xz) or zip archive into the new folder ``target``.

    Every member is checked first (absolute paths, ``..``, links and device files raise
    :class:`UnsafeArchiveError`); pooch's ``Untar``/``Unzip`` then unpacks into a temporary
    folder that becomes ``target`` only when complete. Returns ``target``.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists already; remove it to unpack {archive} again")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            links = {i.filename: (i.external_attr >> 16) & 0o170000 == 0o120000 for i in zf.infolist()}  # fmt: skip
        unpack = pooch.Unzip
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            links = {m.name: not (m.isfile() or m.isdir()) for m in tf.getmembers()}
        unpack = pooch.Untar
    else:
        raise DataError(f"{archive}: not a tar or zip archive")
    with core.atomic_path(target) as tmp:
        tmp.mkdir()
        lock = os.open(tmp, os.O_RDONLY)  # held while unpacking: not a crash's leftover
        try:
            _lock(lock, wait=True)
            for name, link in links.items():
                pure = PurePosixPath(name.replace("\\", "/"))
                if pure.is_absolute() or ".." in pure.parts:
                    raise UnsafeArchiveError(
                        f"{archive}: member {name!r} would be written outside {target}; refusing "
                        "to unpack this archive. Get the archive again from its pinned URL, or "
                        "unpack it by hand after checking its contents."
                    )
                if link:
                    raise UnsafeArchiveError(
                        f"{archive}: member {name!r} is a link or special file; refusing to "
                        "unpack it"
                    )
            with _quiet():
                unpack(extract_dir=str(tmp))(str(archive), "download", None)
        finally:
            os.close(lock)
    return target


# --------------------------------------------------------------------------------------------
# Derived files
# --------------------------------------------------------------------------------------------
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
        md5 = file_checksum(folder / entry.path, "md5")
        labels = rows.setdefault(md5, [entry.path, md5, []])[2]
        if label not in labels:
            labels.append(label)
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
def dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder a dataset is fetched into: ``<cache_dir>/data/<name>`` (default cache:
    :func:`galaxy_helpers.core.cache_dir`)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else core.cache_dir()
    return root / "data" / name


def _mirror_root(mirror: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The mirror folder (``mirror=`` or the environment) or None, and a note naming it when it
    does not exist (also warned about)."""
    origin = "the mirror= argument"
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV, "").strip() or None
        origin = f"environment variable {MIRROR_ENV}"
    root = Path(mirror).expanduser() if mirror else None
    if root is None or root.is_dir():
        return root, ""
    warnings.warn(
        f"The mirror folder {root} (from {origin}) does not exist, so it is not used: files "
        f"come from the cache or the network. Fix the path (a typo?) or unset {MIRROR_ENV}.",
        MirrorWarning,
        stacklevel=3,
    )
    return None, f"the mirror folder {root} (from {origin}) does not exist"


def _read_stamp(folder: Path, manifest: Manifest) -> dict[str, list[int]]:
    """The verified files' ``[size, mtime_ns]`` recorded for this very manifest, else ``{}``."""
    try:
        stamp = core.read_json(folder / _STAMP, what="verification record")
        if stamp["manifest_sha256"] == file_checksum(manifest.path):
            return dict(stamp["files"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def _write_stamp(folder: Path, manifest: Manifest, files: dict) -> None:
    record = {"manifest_sha256": file_checksum(manifest.path), "files": files}
    core.write_json(folder / _STAMP, record, indent=1)


def _file_state(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _is_verified(entry: FileEntry, path: Path, stamp: dict) -> bool:
    """True when ``path`` matches the manifest: by the stamp when unchanged, else by hashing."""
    state = _file_state(path)
    if state is None or (entry.size is not None and state[0] != entry.size):
        return False
    return (
        stamp.get(entry.path) == state
        or file_checksum(path, entry.checksum[0]) == entry.checksum[1]
    )


def _manifest_or_name(name: str | Manifest, kind: str = "dataset") -> Manifest:
    manifest = _checked_paths(name) if isinstance(name, Manifest) else load_manifest(name)
    if manifest.kind != kind:
        raise ManifestError(
            f"{manifest.path}: {manifest.name!r} is a {manifest.kind} manifest, not a dataset; "
            "load models with galaxy_helpers.pretrained.load_pretrained_encoder"
        )
    return manifest


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

    Files cached and unchanged since they were verified are kept; missing ones are copied from
    the mirror when it has them, else downloaded (:func:`download_file`). Archives are then
    unpacked and derived files (a label table built from file names) built.

    Parameters
    ----------
    name : str or Manifest
        Manifest name, e.g. ``"gz_decals_rings"``.
    cache_dir : path-like, optional
        Cache root (default :func:`galaxy_helpers.core.cache_dir`).
    mirror : path-like, optional
        Mirror root (``<mirror>/<dataset>/<path>``); default ``$GALAXY_DATA_MIRROR``.
    progress : bool
        Show progress bars.
    offline : bool, optional
        Never use the network (default: ``GALAXY_DATA_OFFLINE=1``).
    retries, backoff_s : int, float
        As in :func:`download_file`.

    Returns
    -------
    Path
        The dataset folder ``<cache_dir>/data/<name>``. Raises :class:`DataUnavailableError`
        (naming the file, its URL and how to provide it), :class:`ChecksumError` (nothing is
        kept) or :class:`UnsafeArchiveError`.
    """
    from tqdm.auto import tqdm

    manifest = _manifest_or_name(name)
    folder = dataset_dir(manifest.name, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    mirror_root, mirror_note = _mirror_root(mirror)
    no_network = (
        bool(offline)
        if offline is not None
        else os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}
    )
    clean_stale_parts(manifest, cache_dir)
    stamp, verified = _read_stamp(folder, manifest), {}

    def get(entry: FileEntry) -> None:
        final = folder / entry.path
        _inside(folder, entry.path, f"{manifest.path} file")
        if not _is_verified(entry, final, stamp):
            final.unlink(missing_ok=True)  # stale or corrupted copy
            _get(entry, final)
        verified[entry.path] = _file_state(final)
        _drop_partial(final, entry)

    def _get(entry: FileEntry, final: Path) -> None:
        source = None
        if mirror_root is not None:
            _inside(mirror_root, PurePosixPath(manifest.name, entry.path), "mirror file")
            source = mirror_root / manifest.name / entry.path
        if source is not None and source.is_file():
            _retrieve(entry, final, _Source(entry, f"mirror file {source}", source))
        elif entry.builder is not None:
            if entry.builder not in _BUILDERS:
                raise ManifestError(
                    f"{manifest.path}: derived file {entry.path} names unknown builder "
                    f"{entry.builder!r}; known: {sorted(_BUILDERS)}"
                )
            blob = _BUILDERS[entry.builder](manifest, folder)
            _retrieve(entry, final, _Source(entry, f"builder {entry.builder}", blob=blob))
        else:
            how = (
                f"To provide it: set {MIRROR_ENV} to a folder holding <mirror>/{manifest.name}/"
                f"{entry.path}, or download {entry.url} yourself to {final} (checksum "
                f"{entry.checksum[0]} {entry.checksum[1]} is verified)."
            )
            if no_network or not entry.url:
                where = (
                    f"not in the mirror ({source} does not exist)"
                    if source is not None
                    else f"not cached at {final} and "
                    + (mirror_note or f"no mirror is set ({MIRROR_ENV})")
                )
                raise DataUnavailableError(
                    f"{manifest.name}: file {entry.path} is {where}, and the network is off "
                    f"({OFFLINE_ENV}). It comes from {entry.url}. {how}"
                )
            try:
                download_file(entry, final, retries=retries, progress=progress)
            except DataUnavailableError as err:
                raise DataUnavailableError(f"{manifest.name}: {err} {how}") from err

    try:
        for entry in tqdm(
            manifest.files, manifest.name, unit="file", disable=not progress, leave=False
        ):
            get(entry)
        for entry in manifest.files:
            if entry.extract_to:
                _extract_once(manifest, entry, folder)
        for entry in manifest.derived_files:
            get(entry)
    finally:
        # Record what was verified, even after a failure, so a retry does not re-hash it.
        _write_stamp(folder, manifest, verified)
    return folder


def _drop_partial(final: Path, entry: FileEntry) -> None:
    """Remove ``entry``'s ``.part`` file once ``final`` is verified (unless someone holds it)."""
    partial = partial_path(final, entry)
    with contextlib.suppress(OSError):
        fd = os.open(partial, os.O_RDONLY)
        try:
            if _lock(fd):
                partial.unlink(missing_ok=True)
        finally:
            os.close(fd)


_POOCH_TMP = re.compile(r"tmp\w{8}")  # tempfile's names, where pooch downloads to


def clean_stale_parts(
    name: str | Manifest, cache_dir: str | os.PathLike | None = None
) -> list[Path]:
    """Remove the leftovers of crashed or killed runs from a dataset's folder; return them.

    Leftovers are ``.part`` files, pooch's and :func:`core.atomic_path`'s temporary files and
    folders that no process holds locked and that have not changed for :data:`STALE_PART_S`
    seconds (a day without ``flock``). The resumable ``.part`` of a file the manifest lists is
    kept for :func:`download_file`. Only the folders the manifest writes into are looked at.
    """
    manifest = _manifest_or_name(name)
    folder = dataset_dir(manifest.name, cache_dir)
    keep, targets = set(), {folder: {_STAMP}}
    for entry in manifest.all_files:
        for rel in filter(None, (entry.path, entry.extract_to)):
            _inside(folder, rel, f"{manifest.path} file")
            targets.setdefault((folder / rel).parent, set()).add((folder / rel).name)
        keep.add(partial_path(folder / entry.path, entry))
    removed, now = [], time.time()
    for parent, names in sorted(targets.items()):
        with contextlib.suppress(OSError):
            for leftover in sorted(os.listdir(parent)):
                path = parent / leftover
                ours = leftover.endswith(".part") or _POOCH_TMP.fullmatch(leftover)
                ours = ours or any(leftover.startswith(f".{n}.") for n in names)
                if ours and leftover not in names and path not in keep and _is_stale(path, now):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def _is_stale(path: Path, now: float) -> bool:
    try:
        if now - path.stat().st_mtime < (STALE_PART_S if fcntl is not None else 86400.0):
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _lock(fd)
    finally:
        os.close(fd)


def _extract_once(manifest: Manifest, entry: FileEntry, folder: Path) -> None:
    _inside(folder, str(entry.extract_to), f"{manifest.path} extract_to")
    target = folder / str(entry.extract_to)
    if (target / ".complete").is_file():
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
    """Whether :func:`fetch` can succeed without the network (never touches it).

    True when every file is cached and unchanged since verification, or is in the mirror
    (checksums are verified later, by :func:`fetch`). ``cache_dir``, ``mirror``: as there.
    """
    try:
        manifest = _manifest_or_name(name)
    except ManifestError:
        return False
    folder = dataset_dir(manifest.name, cache_dir)
    stamp = _read_stamp(folder, manifest)
    mirror_root, _ = _mirror_root(mirror)
    for entry in manifest.files:
        state = _file_state(folder / entry.path)
        cached = state is not None and stamp.get(entry.path) == state
        mirrored = mirror_root is not None and (mirror_root / manifest.name / entry.path).is_file()
        if not (cached or mirrored):
            return False
    return True


@dataclass
class VerifyReport:
    """What :func:`verify` found: ``checked`` (size and checksum match), ``missing`` (not
    cached), ``bad`` (``{path: what is wrong}``) and ``deleted`` (the bad files removed)."""

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
            lines.append(
                f"  BAD {path}: {problem} ({'deleted' if path in self.deleted else 'kept'})"
            )
        if self.bad and self.deleted:
            lines.append(
                f"  Run galaxy_helpers.data.fetch({self.dataset!r}) to fetch the deleted files again."
            )
        elif self.bad:
            lines.append("  Delete them, or call verify(..., delete=True).")
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
    verified; this reads every byte again, so it also finds a file corrupted in place. The
    verification record keeps the good files only, so the next :func:`fetch` gets the deleted
    ones again. Unpacked archive members are not hashed (manifests pin the archive).

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
    """
    from tqdm.auto import tqdm

    manifest = _manifest_or_name(name)
    folder = dataset_dir(manifest.name, cache_dir)
    report, verified = VerifyReport(manifest.name, folder), {}
    for entry in tqdm(manifest.all_files, "verifying", unit="file", disable=not progress):
        _inside(folder, entry.path, f"{manifest.path} file")
        path = folder / entry.path
        if not path.is_file():
            report.missing.append(entry.path)
            continue
        algorithm, expected = entry.checksum
        size = path.stat().st_size
        if entry.size is not None and size != entry.size:
            report.bad[entry.path] = f"{size} bytes, the manifest says {entry.size}"
        elif (actual := file_checksum(path, algorithm)) != expected:
            report.bad[entry.path] = f"{algorithm} {actual}, the manifest says {expected}"
        else:
            report.checked.append(entry.path)
            verified[entry.path] = _file_state(path)
            continue
        if delete:
            path.unlink(missing_ok=True)
            report.deleted.append(entry.path)
    if folder.is_dir():
        _write_stamp(folder, manifest, verified)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m galaxy_helpers.data verify NAME... [--keep] [--cache-dir DIR]``: re-hash a
    dataset's cache; exits 1 when a cached file did not match (listed, deleted unless --keep)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m galaxy_helpers.data")
    check = parser.add_subparsers(dest="command", required=True).add_parser(
        "verify", help="re-hash every cached file of a dataset"
    )
    check.add_argument("name", nargs="+", help="manifest name(s) or path(s)")
    check.add_argument("--keep", action="store_true", help="report bad files, do not delete")
    check.add_argument("--cache-dir", default=None, help="cache root (default: course cache)")
    args = parser.parse_args(argv)
    reports = [verify(n, args.cache_dir, delete=not args.keep, progress=False) for n in args.name]
    print("\n".join(map(str, reports)))
    return 0 if all(r.ok for r in reports) else 1


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
        A dataset manifest's name (:func:`list_manifests`), e.g. ``"gz_decals_rings"``.
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

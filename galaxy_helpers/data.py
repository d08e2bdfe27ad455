"""Real data: :func:`fetch` puts a dataset's files into ``<core.cache_dir()>/data/<dataset>/``
from a mirror (``$GALAXY_DATA_MIRROR/<dataset>/<path>``) or the pinned URL, verified by pooch;
:func:`load_dataset` returns the catalogue.

>>> from galaxy_helpers import data
>>> rings = data.load_dataset("gz_decals_rings")          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tarfile
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import pooch

from . import core
from .manifests import (
    BUILDERS,
    MANIFESTS_ENV,
    DataError,
    FileEntry,
    Manifest,
    ManifestError,
    build_catalogue,
    check_inside,
    checked_paths,
    inside,
    list_manifests,
    load_manifest,
    manifest_dir,
    validate_manifest,
)

try:  # POSIX: who holds a .part file (a live download) vs. a crashed run's leftover
    import fcntl
except ImportError:  # pragma: no cover - Windows: leftovers are told apart by age alone
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MIRROR_ENV", "OFFLINE_ENV", "MANIFESTS_ENV", "STALE_PART_S", "DataError", "ManifestError",
    "ChecksumError", "DataUnavailableError", "UnsafeArchiveError", "MirrorWarning", "FileEntry",
    "Manifest", "VerifyReport", "manifest_dir", "list_manifests", "load_manifest",
    "validate_manifest", "dataset_dir", "dataset_available", "fetch", "verify",
    "clean_stale_parts", "partial_path", "load_dataset", "download_file",
    "safe_extract",
]  # fmt: skip

MIRROR_ENV = "GALAXY_DATA_MIRROR"
OFFLINE_ENV = "GALAXY_DATA_OFFLINE"
_STAMP = ".galaxy_helpers_verified.json"
_HEADERS = {"User-Agent": "galaxy_helpers course data fetcher", "Accept-Encoding": "identity"}
#: A leftover (``.part`` or temporary file/folder) that no process holds locked and that has
#: not changed for this many seconds is a crashed run's; :func:`fetch` removes it.
STALE_PART_S = 60.0


class ChecksumError(DataError, ValueError):
    """A file's size or checksum differs from its manifest (corrupted or changed upstream)."""


class DataUnavailableError(DataError, FileNotFoundError):
    """A file is neither cached, nor in the mirror, nor downloadable; says how to provide it."""


class UnsafeArchiveError(DataError, ValueError):
    """An archive member would be written outside the extraction folder (or is a link)."""


class MirrorWarning(UserWarning):
    """The mirror folder given (``mirror=`` or ``GALAXY_DATA_MIRROR``) does not exist."""


def partial_path(final: Path, entry: FileEntry) -> Path:
    """The resumable ``.part`` file of ``entry`` next to ``final``, tagged by its checksum."""
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


def _unheld(path: Path) -> bool:
    """True when no process holds ``path`` locked (False when it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _lock(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _quiet():
    """Silence pooch's INFO lines (our progress bars suffice). Already quiet: nothing to do
    (``setLevel`` clears every logger's cache: 0.1 ms, 5,000 times in a 5,000-file fetch)."""
    logger = pooch.get_logger()
    level = logger.level
    if level >= logging.WARNING:
        yield
        return
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


class _Built:
    """A pooch downloader that writes a builder's bytes (mirror files: :func:`_copy_verified`)."""

    def __init__(self, entry: FileEntry, origin: str, blob: bytes):
        self.entry, self.origin, self.blob = entry, origin, blob

    def __call__(self, url: str, output_file: str, store: Any) -> None:
        Path(output_file).write_bytes(self.blob)
        size = os.path.getsize(output_file)
        if self.entry.size is not None and size != self.entry.size:
            raise _size_error(self.entry, size, self.origin)


class _Resumable:
    """A pooch downloader that fills the entry's locked ``.part`` file, resuming with ``Range``
    (privately through pooch's own downloader when another process holds that file)."""

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

    def _fill(self, handle, url: str) -> None:
        import requests
        from tqdm.auto import tqdm

        size, (algorithm, expected) = self.entry.size, self.entry.checksum
        cut = None
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
            ) as bar:  # fmt: skip
                while True:  # read1, not iter_content: a cut keeps the bytes received so far
                    try:
                        block = response.raw.read1(1 << 16)
                    except Exception as err:  # urllib3's ProtocolError, ReadTimeoutError...
                        cut = err
                    if cut is not None or not block:
                        break
                    handle.write(block)
                    bar.update(len(block))
        written = os.fstat(handle.fileno()).st_size
        if cut is not None or (length is not None and written < offset + length):
            raise requests.ConnectionError(f"the connection closed after {written} bytes ({cut})")
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
        raise _checksum_error(entry, got[1] if got else "?", downloader.origin) from None
    return final


def _checksum_error(entry: FileEntry, got: str, origin: str) -> ChecksumError:
    algorithm, expected = entry.checksum
    return ChecksumError(
        f"{entry.path}: {algorithm} {got} from {origin} does not match the manifest "
        f"({expected}): the file is corrupted or changed upstream. Nothing was written to the "
        "cache; replace the source file (or fix the manifest if upstream really changed it)."
    )


def _copy_verified(entry: FileEntry, source: Path, final: Path) -> Path:
    """Copy a local (mirror) file to ``final`` as :func:`_retrieve` would, in one read: size and
    checksum checked on a temporary file that replaces ``final`` only when both match. pooch's
    fetch costs about 0.5 ms of set-up a file, most of a 5,000-file mirror copy
    (``benchmarks/bench_mirror_copy.py``); downloads still go through pooch."""
    algorithm, expected = entry.checksum
    digest = hashlib.new(algorithm)
    origin = f"mirror file {source}"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.copy")  # this process's own
    try:
        size = 0
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                size += dst.write(chunk)
        if entry.size is not None and size != entry.size:
            raise _size_error(entry, size, origin)
        if digest.hexdigest() != expected:
            raise _checksum_error(entry, digest.hexdigest(), origin)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def download_file(
    entry: FileEntry,
    final: Path,
    retries: int = 3,
    timeout_s: float = 60.0,
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Download one manifest file from its URL to ``final``, verified and atomically.

    A cut download keeps its :func:`partial_path` file; the next attempt asks for the rest only.

    Parameters
    ----------
    entry, final : FileEntry, Path
        What to download (URL, size, checksum) and where the verified file ends up.
    retries : int
        Attempts in all (pooch waits 1 s, 2 s, ... between them); 404/403 are not retried.
    timeout_s, progress, resume : float, bool, bool
        Socket timeout of each attempt; a byte progress bar; continue a partial download.

    Returns
    -------
    Path
        ``final``. Raises :class:`DataUnavailableError` (saying what was kept) or
        :class:`ChecksumError`.
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
        size = kept.stat().st_size if kept.is_file() else 0
        resume = f" The {size} bytes received so far are kept in {kept}; the next fetch resumes"
        note = f"{resume} from there." if size else ""
        raise DataUnavailableError(
            f"{entry.path}: could not download {entry.url} after {max(1, int(retries))} "
            f"attempt(s) ({err}).{note}"
        ) from err


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Unpack a tar or zip archive into the new folder ``target`` (atomically); return it.

    Absolute paths, ``..``, links and device files raise :class:`UnsafeArchiveError`.
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
                if link or pure.is_absolute() or ".." in pure.parts:
                    what = "is a link or special file" if link else f"would leave {target}"
                    raise UnsafeArchiveError(
                        f"{archive}: member {name!r} {what}; refusing to unpack this archive. Get "
                        "it again from its pinned URL, or unpack it by hand after checking it."
                    )
            with _quiet():
                unpack(extract_dir=str(tmp))(str(archive), "download", None)
        finally:
            os.close(lock)
    return target


def dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder a dataset is fetched into: ``<cache_dir>/data/<name>``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else core.cache_dir()
    return root / "data" / name


def _mirror_root(mirror: str | os.PathLike | None) -> tuple[Path | None, str]:
    """The mirror folder (or None) and, when it does not exist, a note naming it (and a warning)."""
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
        if stamp["manifest_sha256"] == pooch.file_hash(str(manifest.path)):
            return dict(stamp["files"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def _write_stamp(folder: Path, manifest: Manifest, files: dict) -> None:
    record = {"manifest_sha256": pooch.file_hash(str(manifest.path)), "files": files}
    core.write_json(folder / _STAMP, record, indent=1)


def _file_state(path: Path) -> list[int] | None:
    with contextlib.suppress(OSError):
        return [(st := path.stat()).st_size, st.st_mtime_ns]
    return None


def _mismatch(entry: FileEntry, path: Path) -> str | None:
    """How the existing ``path`` differs from its manifest entry (size, else checksum), or None."""
    algorithm, expected = entry.checksum
    if entry.size is not None and (size := path.stat().st_size) != entry.size:
        return f"{size} bytes, the manifest says {entry.size}"
    if (actual := pooch.file_hash(str(path), algorithm)) != expected:
        return f"{algorithm} {actual}, the manifest says {expected}"
    return None


def _is_verified(entry: FileEntry, path: Path, stamp: dict) -> bool:
    """True when ``path`` matches the manifest: by the stamp when unchanged, else by hashing."""
    state = _file_state(path)
    if state is None or (entry.size is not None and state[0] != entry.size):
        return False
    return stamp.get(entry.path) == state or _mismatch(entry, path) is None


def _manifest_or_name(name: str | Manifest) -> Manifest:
    manifest = checked_paths(name) if isinstance(name, Manifest) else load_manifest(name)
    if manifest.kind != "dataset":
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
) -> Path:
    """Make every file of a dataset present and verified in the cache; return its folder.

    Missing files are copied from the mirror, else downloaded (:func:`download_file`); archives
    are then unpacked and derived files built.

    Parameters
    ----------
    name : str or Manifest
        Manifest name, e.g. ``"gz_decals_rings"``.
    cache_dir, mirror : path-like, optional
        Cache root (default :func:`core.cache_dir`); mirror root (default ``$GALAXY_DATA_MIRROR``).
    progress, offline : bool
        Show progress bars; never use the network (default: ``GALAXY_DATA_OFFLINE=1``).
    retries : int
        Attempts per download (:func:`download_file`).

    Returns
    -------
    Path
        The dataset folder ``<cache_dir>/data/<name>``.
    """
    from tqdm.auto import tqdm

    manifest = _manifest_or_name(name)
    folder = dataset_dir(manifest.name, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    mirror_root, mirror_note = _mirror_root(mirror)
    if offline is None:
        offline = os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}
    clean_stale_parts(manifest, cache_dir)
    stamp, verified = _read_stamp(folder, manifest), {}

    def get(entry: FileEntry) -> None:
        final = folder / entry.path
        check_inside(folder, entry.path, f"{manifest.path} file")
        if not _is_verified(entry, final, stamp):
            final.unlink(missing_ok=True)  # stale or corrupted copy
            _get(entry, final)
        verified[entry.path] = _file_state(final)
        if _unheld(partial := partial_path(final, entry)):  # verified: its .part is done with
            partial.unlink(missing_ok=True)

    def _get(entry: FileEntry, final: Path) -> None:
        source = None
        if mirror_root is not None:
            check_inside(mirror_root, PurePosixPath(manifest.name, entry.path), "mirror file")
            source = mirror_root / manifest.name / entry.path
        if source is not None and source.is_file():
            _copy_verified(entry, source, final)
        elif entry.builder is not None:
            if entry.builder not in BUILDERS:
                raise ManifestError(
                    f"{manifest.path}: derived file {entry.path} names unknown builder "
                    f"{entry.builder!r}; known: {sorted(BUILDERS)}"
                )
            blob = BUILDERS[entry.builder](manifest, folder)
            _retrieve(entry, final, _Built(entry, f"builder {entry.builder}", blob))
        else:
            how = (
                f"To provide it: set {MIRROR_ENV} to a folder holding <mirror>/{manifest.name}/"
                f"{entry.path}, or download {entry.url} yourself to {final} (checksum "
                f"{entry.checksum[0]} {entry.checksum[1]} is verified)."
            )
            if offline or not entry.url:
                where = f"not in the mirror ({source} does not exist)"
                if source is None:
                    unset = f"no mirror is set ({MIRROR_ENV})"
                    where = f"not cached at {final} and {mirror_note or unset}"
                raise DataUnavailableError(
                    f"{manifest.name}: file {entry.path} is {where}, and the network is off "
                    f"({OFFLINE_ENV}). It comes from {entry.url}. {how}"
                )
            try:
                download_file(entry, final, retries=retries, progress=progress)
            except DataUnavailableError as err:
                raise DataUnavailableError(f"{manifest.name}: {err} {how}") from err

    bar = tqdm(manifest.files, manifest.name, unit="file", disable=not progress, leave=False)
    try:
        with _quiet():  # once for the whole fetch, not per file
            for entry in bar:
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


_POOCH_TMP = re.compile(r"tmp\w{8}")  # tempfile's names, where pooch downloads to


def clean_stale_parts(
    name: str | Manifest, cache_dir: str | os.PathLike | None = None
) -> list[Path]:
    """Remove the leftovers of crashed runs from a dataset's folder; return them.

    Leftovers are ``.part`` and temporary files and folders in the folders the manifest writes
    into, unlocked and unchanged for :data:`STALE_PART_S` seconds (a day without ``flock``);
    the resumable ``.part`` of a listed file is kept for :func:`download_file`.
    """
    manifest = _manifest_or_name(name)
    folder = dataset_dir(manifest.name, cache_dir)
    keep, targets = set(), {folder: {_STAMP}}
    for entry in manifest.all_files:
        for rel in filter(None, (entry.path, entry.extract_to)):
            check_inside(folder, rel, f"{manifest.path} file")
            targets.setdefault((folder / rel).parent, set()).add((folder / rel).name)
        keep.add(partial_path(folder / entry.path, entry))
    removed, now = [], time.time()
    for parent, names in sorted(targets.items()):
        with contextlib.suppress(OSError):
            for leftover in sorted(os.listdir(parent)):
                path = parent / leftover
                ours = leftover.endswith(".part") or _POOCH_TMP.fullmatch(leftover)
                ours = ours or _hidden_temp_of(leftover, names)
                if ours and leftover not in names and path not in keep and _is_stale(path, now):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def _hidden_temp_of(leftover: str, names: set[str]) -> bool:
    """Whether ``leftover`` is ``.<name>.<anything>`` for one of ``names`` (a set lookup per dot,
    not a scan of every name: a dataset folder holds thousands)."""
    if not leftover.startswith("."):
        return False
    rest = leftover[1:]
    dot = rest.find(".")
    while dot != -1:
        if rest[:dot] in names:
            return True
        dot = rest.find(".", dot + 1)
    return False


def _is_stale(path: Path, now: float) -> bool:
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    return age >= (STALE_PART_S if fcntl is not None else 86400.0) and _unheld(path)


def _extract_once(manifest: Manifest, entry: FileEntry, folder: Path) -> None:
    inside(folder, str(entry.extract_to), f"{manifest.path} extract_to")
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
    """Whether :func:`fetch` can succeed without the network: every file is cached and
    verified, or in the mirror (``cache_dir``, ``mirror``: as there)."""
    try:
        manifest = _manifest_or_name(name)
    except ManifestError:
        return False
    folder = dataset_dir(manifest.name, cache_dir)
    stamp = _read_stamp(folder, manifest)
    mirror_root, _ = _mirror_root(mirror)
    for entry in manifest.files:
        cached = stamp.get(entry.path, "not cached") == _file_state(folder / entry.path)
        if not (cached or mirror_root and (mirror_root / manifest.name / entry.path).is_file()):
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
            fate = "deleted" if path in self.deleted else "kept"
            lines.append(f"  BAD {path}: {problem} ({fate})")
        if self.bad and self.deleted:
            again = f"galaxy_helpers.data.fetch({self.dataset!r})"
            lines.append(f"  Run {again} to fetch the deleted files again.")
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

    Finds files corrupted in place, which :func:`fetch` (trusting unchanged size and mtime)
    does not; the next :func:`fetch` gets the deleted ones again.

    Parameters
    ----------
    name, cache_dir, progress
        As in :func:`fetch`.
    delete : bool
        Delete the files that do not match (default); False only reports them.

    Returns
    -------
    VerifyReport
    """
    from tqdm.auto import tqdm

    manifest = _manifest_or_name(name)
    folder = dataset_dir(manifest.name, cache_dir)
    report, verified = VerifyReport(manifest.name, folder), {}
    for entry in tqdm(manifest.all_files, "verifying", unit="file", disable=not progress):
        check_inside(folder, entry.path, f"{manifest.path} file")
        path = folder / entry.path
        if not path.is_file():
            report.missing.append(entry.path)
            continue
        problem = _mismatch(entry, path)
        if problem is None:
            report.checked.append(entry.path)
            verified[entry.path] = _file_state(path)
            continue
        report.bad[entry.path] = problem
        if delete:
            path.unlink(missing_ok=True)
            report.deleted.append(entry.path)
    if folder.is_dir():
        _write_stamp(folder, manifest, verified)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m galaxy_helpers.data verify NAME... [--keep] [--cache-dir DIR]``; 1 if bad."""
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
        ``id_str``, absolute ``file_loc``, then the labels, ``tag_*`` flags, vote counts,
        ``split`` and upstream columns the manifest's ``[catalogue]`` maps.
    """
    manifest = load_manifest(name)
    folder = fetch(manifest, cache_dir=cache_dir, mirror=mirror, progress=progress, offline=offline)
    return build_catalogue(manifest, folder)


if __name__ == "__main__":
    raise SystemExit(main())

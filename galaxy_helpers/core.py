"""The ground floor every other module stands on: cache folder, device, JSON, atomic files, keys.

Nothing here imports another ``galaxy_helpers`` module, so any module may import it.

>>> from galaxy_helpers import core
>>> with core.atomic_path("/tmp/gh_core_doctest.json") as tmp:
...     _ = tmp.write_text("{}")
>>> core.read_json("/tmp/gh_core_doctest.json")
{}
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "cache_dir",
    "content_key",
    "device",
    "json_safe",
    "n_jobs",
    "parallel_imap",
    "parallel_map",
    "read_json",
    "source_files",
    "source_key",
    "write_json",
    "write_text",
]


def cache_dir(*parts: str) -> Path:
    """The folder for cached data and models (created if needed), or a subfolder of it.

    ``$GALAXY_HELPERS_CACHE`` when that environment variable is set, else
    ``~/.cache/galaxy_helpers``; ``cache_dir("models")`` is its ``models`` subfolder.
    """
    env = os.environ.get("GALAXY_HELPERS_CACHE", "").strip()
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "galaxy_helpers"
    path = path.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"cannot create the cache folder {path} ({err}); set GALAXY_HELPERS_CACHE to a "
            "writable folder"
        ) from err
    return path


#: Environment variable: how many worker processes CPU-bound repeats may use (default: the
#: thread count ``OMP_NUM_THREADS`` sets for torch, else every core this process may use).
JOBS_ENV = "GALAXY_HELPERS_JOBS"


def n_jobs() -> int:
    """Worker processes for independent repeats (:func:`parallel_map`): ``$GALAXY_HELPERS_JOBS``,
    else ``$OMP_NUM_THREADS`` (the CPU budget torch is given), else the usable cores; at least 1."""
    for name in (JOBS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(
                    f"${name}={value!r} is not a whole number; set it to how many CPU cores "
                    "to use (e.g. 2), or unset it"
                ) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def parallel_imap(func, tasks, jobs: int | None = None):
    """``func(*task)`` for each task, yielded in task order as they finish, the tasks spread over
    ``jobs`` worker processes (default :func:`n_jobs`; joblib's reusable loky pool, one BLAS
    and OpenMP thread per worker). For single-threaded work (scikit-learn's Gaussian processes and
    small fits) that would leave the other cores idle; not for torch training, which uses the
    cores better from one process (DEVELOPERS.md, "Course time, third pass"). Each task must be seeded
    on its own, so the results do not depend on ``jobs``; ``jobs=1`` runs them here."""
    tasks = list(tasks)
    jobs = min(n_jobs() if jobs is None else max(1, int(jobs)), max(1, len(tasks)))
    if jobs == 1:
        return (func(*task) for task in tasks)
    from joblib import Parallel, delayed

    pool = Parallel(n_jobs=jobs, return_as="generator", mmap_mode="c")  # writable views
    return pool(delayed(func)(*task) for task in tasks)


def parallel_map(func, tasks, jobs: int | None = None, progress: bool = False, desc: str = ""):
    """``[func(*task) for task in tasks]`` through :func:`parallel_imap`; ``progress`` shows a
    bar as the results arrive."""
    from tqdm.auto import tqdm

    tasks = list(tasks)
    results = parallel_imap(func, tasks, jobs)
    return list(tqdm(results, total=len(tasks), desc=desc, disable=not progress))


def device(choice: str | None = None) -> str:
    """The torch device to use: ``choice`` when given, else cuda, then mps, then cpu."""
    if choice:
        return str(choice)
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def json_safe(value: Any) -> Any:
    """Numpy/torch scalars and arrays, paths, dates, dataclasses and tuples as plain JSON values.

    Non-finite floats (NaN, infinity) become ``None`` so the file stays strict JSON.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    # numpy and torch: bool_/integer/floating scalars have .item(), arrays/tensors have .tolist()
    if hasattr(value, "tolist") and callable(value.tolist):
        return json_safe(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return json_safe(value.item())
    raise TypeError(
        f"cannot write a value of type {type(value).__name__} ({value!r}) as JSON; "
        "pass numbers, strings, lists or dicts"
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Whatever the block writes to the temporary path (any library, any format: its suffix is
    ``path``'s) appears at ``path`` only when the block finishes; on an error it is deleted and
    ``path`` keeps its old content, so a crash never leaves a half-written file. A folder
    written to the temporary path replaces an existing folder at ``path`` the same way.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=final.suffix)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # writers create it (a file or a folder)
    try:
        yield tmp
        if tmp.is_dir() and final.is_dir():
            old = final.with_name(f".{final.name}.old.{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Write ``json_safe(value)`` to ``path`` atomically (strict JSON); returns the path."""
    text = json.dumps(json_safe(value), indent=indent, allow_nan=False)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file, or raise a clear error naming the file and what to do.

    ``what`` names the file in the message (``"checkpoint metadata"``, ``"label file"``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{what} {path} is not valid JSON ({err}); it may be truncated: restore or rebuild it"
        ) from None


def content_key(*parts: Any, length: int = 16) -> str:
    """A short sha256 hex key of ``parts`` (bytes, arrays, or anything JSON can write).

    Used for cache folders: equal inputs give equal keys on every machine.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            blob = bytes(part)
        elif hasattr(part, "tobytes") and hasattr(part, "dtype"):
            blob = str(part.dtype).encode() + str(getattr(part, "shape", "")).encode()
            blob += part.tobytes()
        else:
            blob = json.dumps(json_safe(part), sort_keys=True).encode()
        digest.update(len(blob).to_bytes(8, "little"))
        digest.update(blob)
    return digest.hexdigest()[:length]


@functools.cache
def _package_imports(name: str, path: Path, root: str) -> set[str]:
    """The names in package ``root`` that module ``name`` (source file ``path``) imports,
    anywhere in it (lazy imports inside functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)  # `from x import y`: y may be a submodule of x or a name in it
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == root or m.startswith(f"{root}.")}


@functools.cache
def source_key(*modules: str) -> str:
    """12 hex digits of the source of ``modules`` (``"galaxy_helpers.label_budget"``...) and of
    every ``galaxy_helpers`` module they import, directly or not (:func:`source_files`).

    A cache of computed results (trained models, representation tables, label-budget runs)
    puts it in its key, so that a result made by code that has since changed (a new optimiser,
    another preprocessing) is computed again instead of read back; the synthetic sky does the
    same with its generator's files (``synthetic.truth.generator_source``).
    """
    files = source_files(*modules)
    if not files:
        raise ValueError(f"none of {modules} is a galaxy_helpers module")
    return content_key(*[(m, f.read_bytes().decode()) for m, f in sorted(files.items())], length=12)


def source_files(*modules: str, root: Path | None = None) -> dict[str, Path]:
    """``{module: source file}`` of ``modules`` and of the package's modules they import,
    directly or not, lazy imports inside functions included. ``root``: the package folder
    (default this package's); modules outside the package are left out."""
    root = Path(__file__).parent if root is None else Path(root)
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name.partition(".")[0] != root.name:
            continue  # outside the package (or the empty parent of its top level)
        file = root.joinpath(*name.split(".")[1:])
        file = file / "__init__.py" if file.is_dir() else file.with_suffix(".py")
        if name in seen or not file.is_file():
            continue  # seen, or a name inside a module rather than a module
        seen[name] = file
        todo.extend(_package_imports(name, file, root.name) - seen.keys())
        todo.append(name.rpartition(".")[0])  # importing a module runs its package's __init__
    return seen

"""Notebook bookkeeping: every notebook starts a run and ends by writing its metrics file.

``run = course.start_notebook("NN_short_name", output_dir=output_dir)`` starts it and
``run.write_metrics({...})`` writes ``<output_dir>/metrics/<NN_short_name>.json`` with
``runtime_s`` added; ``$GALAXY_COURSE_OUTPUT`` (set by the course runner and the test suite)
replaces ``output_dir``. Command line (:mod:`galaxy_helpers.notebooks`):
``python -m galaxy_helpers.course run --output course_output [--only 01 02]``.

>>> from galaxy_helpers import course
>>> run = course.start_notebook("01_meet_the_galaxies", output_dir="/tmp/course_output")
>>> path = run.write_metrics({"n_galaxies": 2000, "headline": {"galaxies": 2000}}, show=False)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .core import cache_dir, device, json_safe, read_json, write_text

__all__ = ["OUTPUT_ENV", "NotebookRun", "cache_dir", "device", "json_safe", "load_metrics"]
__all__ += ["start_notebook", "check_environment"]

#: Environment variable naming the course output folder; it wins over ``output_dir``.
OUTPUT_ENV = "GALAXY_COURSE_OUTPUT"


@dataclasses.dataclass
class NotebookRun:
    """One notebook run: name, output folder, start time (from :func:`start_notebook`)."""

    name: str
    output_dir: Path
    started: float = dataclasses.field(default_factory=time.perf_counter)
    started_at: str = dataclasses.field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )

    @property
    def metrics_path(self) -> Path:
        """Path of this notebook's metrics file, ``<output_dir>/metrics/<name>.json``."""
        return self.output_dir / "metrics" / f"{self.name}.json"

    def elapsed(self) -> float:
        """Seconds since :func:`start_notebook`."""
        return time.perf_counter() - self.started

    def write_metrics(self, metrics: Mapping[str, Any], show: bool = True) -> Path:
        """Write the notebook's metrics file with ``runtime_s`` added, atomically.

        Parameters
        ----------
        metrics : the notebook's numbers; optional ``headline`` ``{label: number}`` (summary table).
        show : print where the file went and its headline numbers (the whole file is on disk).

        Returns
        -------
        pathlib.Path, the metrics file.
        """
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"write_metrics expects a dict of metrics, got {type(metrics).__name__}"
            )
        if "headline" in metrics and not isinstance(metrics["headline"], Mapping):
            raise ValueError(
                "metrics['headline'] must be a dict {label: number} for the summary table, got "
                f"{type(metrics['headline']).__name__}"
            )
        record = json_safe(dict(metrics))
        # to 0.1 s, as the course summary prints it: a header quoting it agrees with that record
        record["runtime_s"] = round(self.elapsed(), 1)
        record.setdefault("notebook", self.name)
        record.setdefault("started_at", self.started_at)
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"
        write_text(self.metrics_path, text)
        if show:
            print(f"Metrics written to {self.shown(self.metrics_path)}")
            for label, value in record.get("headline", {}).items():
                print(f"  {label}: {value}")
        return self.metrics_path

    def shown(self, path: str | os.PathLike) -> str:
        """``path`` as the notebook's reader should see it: relative to the notebook's folder
        when it lies in the project beside it (``../course_output/...``), else in full."""
        target, here = Path(path).resolve(), Path.cwd().resolve()
        return os.path.relpath(target, here) if target.is_relative_to(here.parent) else str(target)


def start_notebook(name: str, output_dir: str | os.PathLike = "../course_output") -> NotebookRun:
    """Start the clock for one notebook and prepare its output folder.

    Parameters
    ----------
    name : the notebook's file stem, e.g. ``"01_meet_the_galaxies"``.
    output_dir : course output folder (relative to the notebook's folder); ``$GALAXY_COURSE_OUTPUT``
        replaces it when set. Later cells write under ``run.output_dir``.

    Returns
    -------
    NotebookRun; call ``run.write_metrics({...})`` in the notebook's last cell.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(
            f"notebook name {name!r} must be the notebook's file stem, e.g. '01_meet_the_galaxies'"
        )
    out = Path(os.environ.get(OUTPUT_ENV, "").strip() or output_dir).expanduser().resolve()
    try:
        (out / "metrics").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"cannot create the course output folder {out} ({err}); pass a writable output_dir"
        ) from err
    return NotebookRun(name=name, output_dir=out)


def load_metrics(output_dir: str | os.PathLike) -> dict[str, dict]:
    """Read every metrics file of a course output folder.

    Parameters
    ----------
    output_dir : the course output folder (holds ``metrics/``).

    Returns
    -------
    dict, ``{notebook stem: metrics dict}``.
    """
    folder = Path(output_dir) / "metrics"
    return {p.stem: read_json(p, what="metrics file") for p in sorted(folder.glob("*.json"))}


if __name__ == "__main__":  # the course tools' command line (run, regenerate, nav, ...)
    from galaxy_helpers.notebooks import main

    sys.exit(main())


#: Real datasets the course's real-galaxy sections read (each is skipped, with a message, when
#: absent).
COURSE_DATASETS = ("gz_decals_examples", "gz_decals_rings", "gz2_kaggle_subset")


def check_environment(min_free_gb: float = 2.0):
    """One row per thing the course needs (a workshop's first cell): ``check``, ``found``, ``ok``
    and, where not ok, ``what to do``. Nothing is downloaded; real datasets are only looked up
    in the cache and the mirror (``$GALAXY_DATA_MIRROR``)."""
    import importlib.metadata
    import platform
    import shutil

    import pandas as pd
    import torch

    from . import data, models, recipes, training

    rows = []

    def add(check, found, ok, fix=""):
        rows.append(
            {"check": check, "found": found, "ok": bool(ok), "what to do": "" if ok else fix}
        )

    py = sys.version_info
    add("Python", platform.python_version(), py >= (3, 10), "install Python 3.10 or newer")
    for name in ("torch", "timm", "scikit-learn", "ipywidgets", "matplotlib"):
        try:
            add(name, importlib.metadata.version(name), True)
        except importlib.metadata.PackageNotFoundError:
            add(name, "missing", False, "run `make env` (README, 'Set up')")
    cores = os.cpu_count() or 1
    add("CPU cores / torch threads", f"{cores} / {torch.get_num_threads()}", True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU is enough)"
    add("GPU", gpu, True)
    bf16 = training.cpu_has_native_bfloat16()
    add("CPU bfloat16 (faster training and encoding)", "yes" if bf16 else "no: float32", True)
    try:  # both files there and the weights the ones saved (sha256), without building it
        what = "the course checkpoint ships with the package"
        _, _, meta = models.read_checkpoint_metadata(
            recipes.course_checkpoint_path(), models.CheckpointError, what
        )
        add("course checkpoint", f"{meta['architecture']} at {meta['image_size']} px", True)
    except Exception as err:  # report, never raise: this is a check
        add("course checkpoint", f"cannot load: {err}", False, "reinstall: `make env`")
    for name in COURSE_DATASETS:
        here = data.dataset_available(name)
        found = "available" if here else "not here (its sections are skipped)"
        add(f"dataset {name}", found, True)
    folder = cache_dir()
    free = shutil.disk_usage(folder).free / 1e9
    shown = str(folder).replace(str(Path.home()), "~", 1)
    add(
        "cache folder",
        f"{shown} ({free:.0f} GB free)",
        free >= min_free_gb,
        f"free {min_free_gb:g} GB or set GALAXY_HELPERS_CACHE to a roomier folder",
    )
    return pd.DataFrame(rows).set_index("check")

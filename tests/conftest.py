"""Shared fixtures: the course is executed once per test session for the notebook tests.

``course_metrics`` runs every notebook in ``notebooks/`` in order with papermill (quick
profile) into a temporary folder and returns ``{notebook stem: metrics dict}``. Each notebook's
thresholds live in ``tests/test_nbNN_<stem>.py``::

    def test_something(course_metrics):
        metrics = course_metrics["01_meet_the_galaxies"]
        assert metrics["runtime_s"] < 60

Set ``GALAXY_COURSE_OUTPUT`` to a folder to keep the run: a finished run of the same
notebooks found there is reused (``python -m galaxy_helpers.course run --output DIR`` makes
one), otherwise the course runs into it. While working on one notebook, set
``GALAXY_COURSE_ONLY`` (e.g. ``"01"`` or ``"01 02"``) to run only those notebooks; tests of
the others then fail with "no metrics file", so never set it in CI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from galaxy_helpers import course

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


class CourseMetrics(Mapping):
    """``{stem: metrics}`` of a course run; looking up a notebook that failed fails the test
    with the notebook's cell error, so every other notebook's tests still run."""

    def __init__(self, output_dir: Path, metrics: dict[str, dict], errors: dict[str, str]):
        self.output_dir = output_dir
        self._metrics = metrics
        self.errors = errors

    def __getitem__(self, stem: str) -> dict:
        if stem in self.errors:
            pytest.fail(f"notebook {stem} failed in the course run:\n{self.errors[stem]}", False)
        if stem not in self._metrics:
            known = ", ".join(sorted(self._metrics)) or "none"
            pytest.fail(
                f"no metrics file for notebook {stem} in {self.output_dir / 'metrics'} "
                f"(notebooks with metrics: {known}); does notebooks/{stem}.ipynb exist and end "
                "with run.write_metrics({...})?",
                False,
            )
        return self._metrics[stem]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    def __len__(self) -> int:
        return len(self._metrics)


def _finished_run(folder: Path, stems: list[str]) -> dict | None:
    """The run record of a finished course run of exactly these notebooks, else None."""
    record_path = folder / course.RUN_RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError:
        return None
    if not record.get("finished") or record.get("requested") != stems:
        return None
    if record.get("profile") != "quick" or record.get("parameters"):
        return None
    return record


@pytest.fixture(scope="session")
def course_output(tmp_path_factory) -> Path:
    """Folder of a finished quick-profile course run (``executed/``, ``metrics/``,
    ``summary.md``, ``course_run.json``), made once per test session."""
    only = os.environ.get("GALAXY_COURSE_ONLY", "").split() or None
    notebooks = course.discover_notebooks(NOTEBOOKS, only)
    if not notebooks:
        pytest.fail(f"no numbered notebooks in {NOTEBOOKS}", False)
    stems = [p.stem for p in notebooks]
    env = os.environ.get("GALAXY_COURSE_OUTPUT", "").strip()
    if env:
        out = Path(env).expanduser().resolve()
        if _finished_run(out, stems) is not None:
            return out
    else:
        out = tmp_path_factory.mktemp("course_output")
    try:
        course.run_course(out, notebooks_dir=NOTEBOOKS, only=only, keep_going=True, verbose=True)
    except course.CourseRunError:
        pass  # recorded in course_run.json; reported by the tests that need the notebook
    return out


@pytest.fixture(scope="session")
def course_metrics(course_output) -> CourseMetrics:
    """``{notebook stem: metrics dict}`` of the session's course run (see module docstring)."""
    record = json.loads((course_output / course.RUN_RECORD).read_text())
    return CourseMetrics(course_output, course.load_metrics(course_output), record["errors"])

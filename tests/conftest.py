"""Shared fixtures: each notebook runs once per test session, for nbval and the metrics tests.

``pytest`` (``make test``) collects ``notebooks/`` before ``tests/`` with ``--nbval-lax``
(pyproject.toml): nbval executes every notebook from ``notebooks/`` with its own defaults and
compares the outputs of the cells marked ``# NBVAL_CHECK_OUTPUT`` with the committed ones
(tests/nbval_sanitize.cfg). Its kernels get ``$GALAXY_COURSE_OUTPUT``, a fresh folder of this
session, so each notebook's metrics land there; ``course_metrics`` then returns
``{notebook stem: metrics dict}`` of that same run. Each notebook's thresholds live in
``tests/test_nbNN_<stem>.py``::

    def test_something(course_metrics):
        assert course_metrics["01_meet_the_galaxies"]["n_galaxies"] > 0

A notebook that nbval does not run in this session (``pytest tests/test_nb02_*.py``) is run
by the papermill course runner when its metrics are first looked up, once. Set
``GALAXY_COURSE_OUTPUT`` to a folder to keep the run: metrics files already there are reused
(delete them to rerun), and its ``labels/`` must be empty before notebook 05 runs again.
"""

from __future__ import annotations

import collections
import functools
import os
import queue
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import nbformat
import nbval.kernel
import pytest
import zmq
from jupyter_client.blocking import BlockingKernelClient
from traitlets import Type, default

from galaxy_helpers import course, notebooks, tooling

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
#: This session's course output folder, the notebooks nbval runs, and their first cell errors.
SESSION: dict = {"output": None, "nbval": set(), "errors": {}, "executed": {}}


def _is_notebook_cell(item) -> bool:
    return item.path.suffix == ".ipynb" and hasattr(item, "cell_num")


class _UnboundedClient(BlockingKernelClient):
    """A kernel client whose sockets queue everything they receive (ZMQ's RCVHWM 0). With the
    default 1,000 messages, a kernel that sends faster than the test process reads (a widget
    flood on a busy machine) fills the client's queue and then its own, and its publisher drops
    the newest outputs. Unbounded, ZMQ's own I/O thread keeps taking them off the wire whatever
    Python is doing, so nothing is dropped; nbval reads them from memory."""

    @default("context")
    def _unbounded_context(self) -> zmq.Context:
        self._created_context = True  # the client terms it when its channels stop
        context = zmq.Context()
        context.rcvhwm = 0  # a default for every socket this context opens, set before connect
        return context


class _KernelManager(nbval.kernel.KernelManager):
    client_factory = Type(_UnboundedClient)


def pytest_configure(config):
    # nbval builds its kernels through this name in nbval.kernel.start_new_kernel
    nbval.kernel.KernelManager = _KernelManager
    config.pluginmanager.register(NotebookCells(), "galaxy-course-notebook-cells")
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not Path(sanitize).exists() and (config.rootpath / sanitize).exists():
        config.option.nbval_sanitize_with = str(config.rootpath / sanitize)
    # Only the kernels of the notebook runs see the folder, not the tests that call
    # course.start_notebook themselves.
    given = os.environ.pop(course.OUTPUT_ENV, "").strip()
    if given:
        SESSION["output"] = Path(given).resolve()
        config.add_cleanup(lambda: os.environ.__setitem__(course.OUTPUT_ENV, given))
        labels = SESSION["output"] / "labels"
        if labels.is_dir() and any(labels.iterdir()):
            SESSION["stale"] = (
                f"{labels} holds labels of an earlier run, which notebook 05 would carry on "
                f"from; delete that folder or unset {course.OUTPUT_ENV}"
            )


def _output() -> Path:
    """This session's course output folder: the one given, else a new one (removed at the end)."""
    if SESSION["output"] is None:
        SESSION["output"] = Path(tempfile.mkdtemp(prefix="course_output_"))
        SESSION["temporary"] = True
    return SESSION["output"]


def pytest_unconfigure(config):
    if SESSION.get("temporary"):
        shutil.rmtree(SESSION["output"], ignore_errors=True)


def _compare_cleaned(compare, test, ref, skip_compare=None):
    # The committed outputs were stripped of progress bars and widget ids; so are fresh ones.
    return compare(tooling.clean_outputs(test)[0], ref, skip_compare)


def pytest_collection_modifyitems(items):
    """Notebook cells first: their run feeds the metrics tests."""
    items.sort(key=lambda item: not _is_notebook_cell(item))  # stable


def pytest_collection_finish(session):
    SESSION["nbval"] = {item.path.stem for item in session.items if _is_notebook_cell(item)}
    if not SESSION["nbval"]:
        return
    if "stale" in SESSION:
        raise pytest.UsageError(SESSION["stale"])
    for stem in SESSION["nbval"]:
        (_output() / "metrics" / f"{stem}.json").unlink(missing_ok=True)


def _read_outputs_while_waiting(kernel) -> None:
    """nbval reads a cell's outputs only after the cell's reply; a cell that sends thousands of
    messages (widgets, progress bars: notebook 05's simulated labelling) overflows ZMQ's queue
    meanwhile and loses its last outputs ("Timeout of 5 seconds exceeded waiting for output").
    Read them while waiting, and hand them to nbval in order."""
    if getattr(kernel, "outputs_read_while_waiting", None) is not None:
        return
    read = kernel.outputs_read_while_waiting = collections.deque()
    get_message = kernel.get_message

    def get(stream, timeout=None):
        if stream == "iopub" and read:
            return read.popleft()
        if stream != "shell":
            return get_message(stream, timeout=timeout)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            while kernel.kc.iopub_channel.msg_ready():
                read.append(kernel.kc.get_iopub_msg(timeout=0))
            try:
                # 5 ms, not 50: on a busy 2-core machine the kernel fills ZMQ's 1,000-message
                # queue faster than a 50 ms drain empties it, and the newest outputs are dropped
                return get_message("shell", timeout=0.005)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    raise

    kernel.get_message = get


class NotebookCells:
    """Hooks for nbval's notebook cells. A conftest's item hooks reach only the items below its
    folder, so pytest_configure registers these as a plugin that reaches notebooks/ too."""

    @staticmethod
    def pytest_itemcollected(item):
        if _is_notebook_cell(item):
            item.add_marker(pytest.mark.slow)
            item.compare_outputs = functools.partial(_compare_cleaned, item.compare_outputs)

    @staticmethod
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(item):
        """The kernel starts in a notebook's first cell's setup and inherits the output folder."""
        if not _is_notebook_cell(item):
            return (yield)
        saved = os.environ.get(course.OUTPUT_ENV)
        os.environ[course.OUTPUT_ENV] = str(_output())
        try:
            result = yield
        finally:
            if saved is None:
                os.environ.pop(course.OUTPUT_ENV, None)
            else:
                os.environ[course.OUTPUT_ENV] = saved
        if getattr(item.parent, "kernel", None) is not None:
            _read_outputs_while_waiting(item.parent.kernel)
        return result

    @staticmethod
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(item, call):
        """Keep each notebook's fresh outputs and its first failing cell's error."""
        report = yield
        if _is_notebook_cell(item) and call.when == "call":
            stem = item.path.stem
            nb = SESSION["executed"].setdefault(stem, nbformat.from_dict(item.parent.nb))
            code = [c for c in nb.cells if c.cell_type == "code"]
            code[item.cell_num].outputs = list(getattr(item, "test_outputs", None) or [])
            error = call.excinfo.value if call.excinfo else None
            if error is not None and "Cell outputs differ" not in str(error):
                text = re.sub(r"\x1b\[[0-9;]*m", "", getattr(error, "inner_traceback", "") or "")
                last = [line for line in text.splitlines() if line.strip()][-1:] or [str(error)]
                SESSION["errors"].setdefault(
                    stem, f"nbval: code cell {item.cell_num} (from 0) failed: {last[0]}"
                )
        return report

    @staticmethod
    def pytest_runtest_teardown(item, nextitem):
        """After a notebook's last cell, write its executed copy beside the metrics."""
        if _is_notebook_cell(item) and (nextitem is None or nextitem.path != item.path):
            executed = SESSION["executed"].get(item.path.stem)
            if executed is not None:
                (_output() / "executed").mkdir(parents=True, exist_ok=True)
                nbformat.write(executed, _output() / "executed" / item.path.name)


class CourseMetrics(Mapping):
    """``{stem: metrics}`` of a course run; looking up a notebook that failed fails the test
    with the notebook's cell error, so every other notebook's tests still run. With ``run``,
    a notebook without metrics is run (once) when it is first looked up."""

    def __init__(self, output_dir: Path, metrics: dict, errors: dict[str, str], run=None):
        self.output_dir = output_dir
        self._metrics = metrics
        self.errors = errors
        self._run = run

    def __getitem__(self, stem: str) -> dict:
        if self._run is not None and stem not in self._metrics and stem not in self.errors:
            self._run(stem)
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


@pytest.fixture(scope="session")
def course_output() -> Path:
    """This session's course output folder (``metrics/``, ``executed/``)."""
    return _output()


@pytest.fixture(scope="session")
def course_metrics(course_output) -> CourseMetrics:
    """``{notebook stem: metrics dict}`` of the session's course run (see module docstring)."""

    def run(stem: str) -> None:
        # Not run by nbval in this session: the papermill runner runs it, once.
        if stem in SESSION["nbval"] or not (NOTEBOOKS / f"{stem}.ipynb").exists():
            return
        if "stale" in SESSION:
            metrics.errors[stem] = SESSION["stale"]
            return
        try:
            notebooks.run_course(course_output, [stem], notebooks_dir=NOTEBOOKS, verbose=False)
        except notebooks.CourseRunError as err:
            metrics.errors[stem] = str(err)
        metrics._metrics.update(course.load_metrics(course_output))

    metrics = CourseMetrics(
        course_output, course.load_metrics(course_output), SESSION["errors"], run
    )
    return metrics

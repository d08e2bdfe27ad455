"""The course runner and the command line of the course tools.

Papermill runs the numbered notebooks in order, each from its own folder, ``$GALAXY_COURSE_OUTPUT``
naming the output folder: ``run`` keeps executed copies there, ``regenerate`` writes them back
into the committed notebooks (stripped, stamped, navigation rewritten). The other commands are
:mod:`galaxy_helpers.tooling`'s; ``python -m galaxy_helpers.course ...`` is the same::

    python -m galaxy_helpers.notebooks run --output course_output [--only 01 02] [-p NAME=VALUE]
    python -m galaxy_helpers.notebooks regenerate [--only 01 02] [--no-stamp]
    python -m galaxy_helpers.notebooks strip [--check] [NOTEBOOK ...]
    python -m galaxy_helpers.notebooks nav [--check]
    python -m galaxy_helpers.notebooks check-structure [NOTEBOOK ...]
    python -m galaxy_helpers.notebooks check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from . import quotes
from .core import read_json, write_json, write_text
from .tooling import (
    DEFAULT_CONTENTS,
    NotebookCheckError,
    check_notebooks,
    default_notebook_dir,
    numbered_notebooks,
    read_notebook,
    stamp_header,
    strip_notebook,
    write_navigation,
    write_notebook,
)

#: The folder a kernel of the run writes to (``course.OUTPUT_ENV``, read by start_notebook).
OUTPUT_ENV = "GALAXY_COURSE_OUTPUT"
#: File the runner writes when it is done, so a finished run can be reused (tests/conftest.py).
RUN_RECORD = "course_run.json"
#: "quick" keeps every notebook's defaults (the laptop CPU profile); bigger runs take parameters.
PROFILES = ("quick",)


class CourseRunError(RuntimeError):
    """A notebook of the course failed; the message names the notebook and the cell."""


@dataclasses.dataclass
class NotebookResult:
    """Outcome of one notebook in :func:`run_course`."""

    notebook: str
    executed_path: Path
    wall_s: float
    metrics: dict | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _parameter_names(path: str | Path) -> set[str]:
    """Names set in a notebook's ``parameters`` cell (empty when it has none)."""
    for cell in read_notebook(path).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            pattern = r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]+)?=(?!=)"
            return {m.group(1) for m in re.finditer(pattern, cell.source, re.MULTILINE)}
    return set()


def _describe_failure(err: BaseException, notebook: Path, executed: Path, injected: int) -> str:
    """Name the notebook, the failing cell (numbered from 1 as in the source) and the error."""
    index, count = getattr(err, "cell_index", None), getattr(err, "exec_count", None)
    where = "an unknown cell" if index is None else f"cell {index + 1 - injected} (In [{count}])"
    message = f"notebook {notebook.name} failed in {where}: "
    message += f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    if lines := (getattr(err, "source", None) or "").strip().splitlines():
        source = "\n    ".join(lines[:8]) + ("\n    ..." if len(lines) > 8 else "")
        message += f"\n  cell source:\n    {source}"
    return message + f"\n  executed copy with the full traceback: {executed}"


def _format_number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def summary_markdown(results: Sequence[NotebookResult], total_s: float | None = None) -> str:
    """Markdown table: each notebook's status, runtime, headline numbers; wall ``total_s`` below."""
    lines = ["| notebook | status | runtime (s) | headline numbers |", "|---|---|---|---|"]
    for r in results:
        runtime = (r.metrics or {}).get("runtime_s", r.wall_s)
        headline = (r.metrics or {}).get("headline") or {}
        numbers = "; ".join(f"{k}: {_format_number(v)}" for k, v in headline.items())
        status = "FAILED" if not r.ok else "ok" if r.metrics is not None else "no metrics"
        lines.append(f"| {r.notebook} | {status} | {float(runtime):.1f} | {numbers} |")
    if total_s is not None:
        lines.append(
            f"\nTotal wall time: {total_s:.0f} s ({total_s / 60:.1f} min) for {len(results)} "
            "notebook(s), including kernel start-up."
        )
    return "\n".join(lines) + "\n"


def time_breakdown(executed: str | os.PathLike, wall_s: float) -> dict:
    """Where one executed notebook's time went: ``kernel`` (start-up, parameters and papermill's
    own work: the wall time no cell accounts for) and ``sections``, seconds per ``## heading``
    (the cells below it), largest first; from papermill's per-cell durations."""
    sections: dict[str, float] = {}
    title = "before the first section"
    for cell in read_notebook(executed).cells:
        if cell.cell_type == "markdown":
            heading = next((ln for ln in cell.source.splitlines() if ln.startswith("## ")), None)
            title = heading[3:].strip() if heading else title
        elif cell.cell_type == "code":
            seconds = cell.metadata.get("papermill", {}).get("duration") or 0.0
            sections[title] = sections.get(title, 0.0) + float(seconds)
    ordered = dict(sorted(((k, round(v, 2)) for k, v in sections.items()), key=lambda kv: -kv[1]))
    kernel = max(0.0, float(wall_s) - sum(sections.values()))
    return {"wall_s": round(float(wall_s), 2), "kernel_s": round(kernel, 2), "sections": ordered}


def breakdown_markdown(breakdowns: Mapping[str, dict], top: int = 3) -> str:
    """The course run's time by notebook: kernel start-up and its ``top`` largest sections."""
    lines = ["| notebook | wall (s) | kernel (s) | largest sections (s) |", "|---|---|---|---|"]
    for name, b in breakdowns.items():
        largest = "; ".join(f"{k}: {v:.1f}" for k, v in list(b["sections"].items())[:top])
        lines.append(f"| {name} | {b['wall_s']:.1f} | {b['kernel_s']:.1f} | {largest} |")
    return "\n".join(lines) + "\n"


def run_course(
    output: str | os.PathLike = "course_output",
    only: Iterable[str] | None = None,
    profile: str = "quick",
    parameters: Mapping[str, Any] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    keep_going: bool = False,
    kernel_name: str | None = None,
    timeout_s: float | None = None,
    verbose: bool = True,
    in_place: bool = False,
    stamp: bool = True,
    contents: str = DEFAULT_CONTENTS,
) -> list[NotebookResult]:
    """Execute the numbered notebooks in order with papermill and summarise them.

    Executed copies go to ``<output>/executed/``, metrics to ``<output>/metrics/``, the table
    of runtimes and headline numbers to ``<output>/summary.md`` and the run record to
    ``<output>/course_run.json``.

    Parameters
    ----------
    output : course output folder (created).
    only : run only these notebooks (numbers such as ``"01"`` or file stems).
    profile : ``"quick"``, every notebook's defaults; bigger runs are asked for with ``parameters``.
    parameters : injected into the notebooks whose parameters cell sets that name (e.g.
        ``{"device": "cuda"}``); ``output_dir`` is injected where it is set.
    notebooks_dir : default :func:`~galaxy_helpers.tooling.default_notebook_dir`.
    keep_going : run the remaining notebooks after a failure instead of stopping.
    kernel_name, timeout_s, verbose : Jupyter kernel (default: each notebook's own), per-cell
        timeout, print progress.
    in_place, stamp, contents : write each notebook that ran back over the committed one
        (stripped, header stamped when ``stamp``) and rewrite the navigation (course-map link
        ``contents``); nothing is injected, and ``<output>/labels/`` must be empty.

    Returns
    -------
    list of NotebookResult

    Raises
    ------
    CourseRunError, naming the notebook, the cell and the error, when a notebook fails.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    out = Path(output).expanduser().resolve()
    paths = numbered_notebooks(notebooks_dir, only)
    if not paths:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) in {notebooks_dir}")
    extra = dict(parameters or {})
    if in_place and extra:
        raise ValueError("regenerating in place keeps every notebook's defaults: no parameters")
    declared = {p.stem: _parameter_names(p) for p in paths}
    unused = sorted(k for k in extra if not any(k in names for names in declared.values()))
    if unused:
        raise ValueError(
            f"parameter(s) {unused} are not defined by any of the notebooks to run "
            f"({', '.join(declared)}); their parameters are: "
            + ", ".join(sorted(set().union(*declared.values())))
        )
    labels = out / "labels"
    if in_place and labels.is_dir() and any(labels.iterdir()):
        raise CourseRunError(
            f"{labels} holds labels of an earlier run, which a notebook would carry on from; "
            "move or delete that folder so the committed outputs start from no labels"
        )
    (out / "executed").mkdir(parents=True, exist_ok=True)
    (out / RUN_RECORD).unlink(missing_ok=True)
    results: list[NotebookResult] = []
    t_course = time.perf_counter()
    with mock.patch.dict(os.environ, {OUTPUT_ENV: str(out)}):  # the kernels inherit it
        warm = None
        try:
            for i, path in enumerate(paths):
                given = {k: v for k, v in extra.items() if k in declared[path.stem]}
                if "output_dir" in declared[path.stem] and not in_place:
                    given = {"output_dir": str(out), **given}
                km = warm.manager() if warm is not None else None
                # the next kernel starts while this notebook runs (its set-up overlaps this one's)
                warm = _WarmKernel(paths[i + 1], kernel_name) if i + 1 < len(paths) else None
                try:
                    result = _run_one(pm, path, out, given, kernel_name, timeout_s, verbose, km)
                finally:
                    if km is not None:
                        _WarmKernel.shutdown_manager(km)
                results.append(result)
                if results[-1].ok and in_place:
                    nb = strip_notebook(read_notebook(results[-1].executed_path))
                    write_notebook(stamp_header(nb) if stamp else nb, path)
                if not results[-1].ok and not keep_going:
                    break
        finally:
            if warm is not None:
                warm.shutdown()
    total = time.perf_counter() - t_course
    if in_place:
        write_navigation(paths[0].parent, contents)

    summary = summary_markdown(results, total)
    breakdowns = {
        r.notebook: time_breakdown(r.executed_path, r.wall_s)
        for r in results
        if r.executed_path.exists()
    }
    where = "\n### Where the time goes\n\n" + breakdown_markdown(breakdowns)
    write_text(out / "summary.md", "# Course run summary\n\n" + summary + where)
    failed = {r.notebook: r.error for r in results if not r.ok}
    record = {"finished": True, "ok": not failed, "profile": profile, "parameters": extra}
    record |= {"notebooks": [r.notebook for r in results], "requested": [p.stem for p in paths]}
    record |= {"errors": failed, "wall_s": {r.notebook: round(r.wall_s, 2) for r in results}}
    record |= {"time_breakdown": breakdowns, "numerics": _numerics(extra.get("device"))}
    record |= {"metrics": {r.notebook: r.metrics for r in results if r.ok}}
    write_json(out / RUN_RECORD, record | {"total_s": round(total, 2)})
    if verbose:
        print(f"\n{summary}{where}\n[course] executed copies, metrics/ and summary.md are in {out}")
    if failed:
        raise CourseRunError("\n".join(failed.values()))
    return results


def _numerics(device: str | None = None) -> dict:
    """:func:`galaxy_helpers.training.numerics` of the machine the kernels run on. They inherit
    this process's environment: a fresh kernel's torch starts with ``OMP_NUM_THREADS`` threads
    where it is set (bench_margins.py sets it per run, after this process's torch has started),
    else with this process's default."""
    from .training import numerics

    out = numerics(device)
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads.isdigit() and int(threads) > 0:
        out["torch_threads"] = int(threads)
    return out


#: Imported in a notebook's kernel while the notebook before it runs (:class:`_WarmKernel`):
#: the libraries whose import is most of a notebook's first cell (about 3 s on 2 cores).
WARM_IMPORTS = (
    "numpy", "pandas", "matplotlib.pyplot", "torch", "torchvision", "timm", "sklearn.decomposition",
    "sklearn.linear_model", "sklearn.gaussian_process", "sklearn.ensemble", "PIL.Image",
    "ipywidgets", "tqdm.auto",
)  # fmt: skip


class _WarmKernel:
    """The next notebook's kernel, started (and its libraries imported, silently: no output,
    no history, no execution count) in a thread while the current notebook runs. Papermill then
    runs the notebook in it (``km=``) instead of starting a kernel of its own; the notebook's
    cells are the same, only their imports find the modules loaded. A kernel that fails to start
    is left to papermill: :meth:`manager` returns None."""

    def __init__(self, path: Path, kernel_name: str | None):
        import threading

        self.path, self.km, self.error = path, None, None
        name = kernel_name or read_notebook(path).metadata.get("kernelspec", {}).get("name")
        self._thread = threading.Thread(target=self._start, args=(name,), daemon=True)
        self._thread.start()

    def _start(self, name: str | None):
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        try:
            km = AsyncKernelManager(**({"kernel_name": name} if name else {}))
            # nbclient's own start-up arguments (papermill's default: history in memory)
            run_sync(km.start_kernel)(
                extra_arguments=["--HistoryManager.hist_file=:memory:"], cwd=str(self.path.parent)
            )
            self.km = km
            code = "\n".join(
                f"try:\n    import {m}\nexcept Exception:\n    pass" for m in WARM_IMPORTS
            )
            kc = km.blocking_client()
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=120)
                msg_id = kc.execute(code, silent=True, store_history=False)
                while kc.get_shell_msg(timeout=300)["parent_header"].get("msg_id") != msg_id:
                    pass
            finally:
                kc.stop_channels()
        except Exception as err:  # papermill starts a kernel of its own
            self.error = err

    def manager(self):
        """The started kernel's manager once its imports are done (None: it failed)."""
        self._thread.join()
        if self.error is not None and self.km is not None:
            self.shutdown()
        return self.km if self.error is None else None

    def shutdown(self):
        self._thread.join()
        km, self.km = self.km, None
        if km is not None:
            self.shutdown_manager(km)

    @staticmethod
    def shutdown_manager(km):
        from jupyter_core.utils import run_sync

        try:
            run_sync(km.shutdown_kernel)(now=True)
        except Exception:  # already gone
            pass


def _run_one(pm, path: Path, out: Path, parameters, kernel_name, timeout_s, verbose, km=None):
    """Execute one notebook for :func:`run_course` (in the started kernel ``km``, else in a
    new one); a failure is returned, not raised."""
    executed = out / "executed" / path.name
    metrics_file = out / "metrics" / f"{path.stem}.json"
    metrics_file.unlink(missing_ok=True)
    if verbose:
        shown = {k: v for k, v in parameters.items() if k != "output_dir"}
        print(f"[course] running {path.name}{f' with {shown}' if shown else ''} ...", flush=True)
    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(path),
            str(executed),
            parameters=parameters,
            cwd=str(path.parent),
            kernel_name=kernel_name,
            progress_bar=False,
            log_output=False,
            execution_timeout=timeout_s,
            **({"km": km} if km is not None else {}),
        )
    except Exception as err:  # papermill raises PapermillExecutionError and friends
        error = _describe_failure(err, path, executed, injected=1 if parameters else 0)
    wall = time.perf_counter() - t0
    metrics = read_json(metrics_file, what="metrics file") if metrics_file.exists() else None
    if error is None and metrics is None:
        error = (
            f"notebook {path.name} ran but wrote no metrics file {metrics_file}; its last code "
            "cell must call run.write_metrics({...})"
        )
    if verbose:
        print(f"[course] {path.name}: {'ok' if error is None else 'FAILED'} in {wall:.1f} s")
    return NotebookResult(path.stem, executed, wall, metrics, error)


def regenerate(
    notebook_dir: str | Path | None = None,
    only: list[str] | None = None,
    contents: str = DEFAULT_CONTENTS,
    stamp: bool = True,
    timeout_s: int | None = 1200,
    record_dir: str | Path | None = "benchmarks/results",
) -> dict[str, float]:
    """Execute notebooks in place (quick profile), then strip, stamp and rewrite navigation:
    :func:`run_course` with ``in_place=True`` into ``course_output/`` beside ``notebooks/``; a
    notebook that fails is left unchanged. The marked numbers are filled from the run and its
    record is written to ``record_dir`` (relative: beside ``notebooks/``; None: not written;
    :func:`write_run_record`). Returns ``{stem: wall seconds}`` of those executed."""
    folder = Path(notebook_dir) if notebook_dir is not None else default_notebook_dir()
    output = folder.resolve().parent / "course_output"
    if record_dir is not None:
        record_dir = folder.resolve().parent / record_dir
    results = run_course(
        output,
        only,
        notebooks_dir=folder,
        timeout_s=timeout_s,
        in_place=True,
        stamp=stamp,
        contents=contents,
    )
    metrics = {
        p.stem: read_json(p, what="metrics file") for p in (output / "metrics").glob("*.json")
    }
    fill_quoted_numbers(folder, metrics)
    if record_dir is not None:
        write_run_record(output, folder, Path(record_dir), complete=only is None)
    return {r.notebook: r.wall_s for r in results}


#: Committed record of the run behind the committed outputs (:func:`write_run_record`).
RECORD_PATTERN = "course_run_*.json"


def latest_run_record(record_dir: str | Path) -> Path | None:
    """The newest ``course_run_<date>.json`` in ``record_dir`` (dated names sort by date)."""
    runs = sorted(Path(record_dir).glob(RECORD_PATTERN))
    return runs[-1] if runs else None


def write_run_record(
    output: str | Path,
    notebook_dir: str | Path,
    record_dir: str | Path,
    complete: bool = True,
    today: str | None = None,
) -> Path:
    """Commit what the committed outputs came from: ``<record_dir>/course_run_<date>.json``
    holds, per notebook, the metrics its marked numbers quote, the machine's
    :func:`~galaxy_helpers.training.numerics` and the seconds it ran. A notebook this run did
    not execute keeps its entry from the newest earlier record. ``complete`` (the whole course
    ran): the run's summary also goes to ``course_run_<date>.md``, the table the README quotes.

    The tests check every quoted number against this record on any machine, and that a fresh
    run reproduces it on a machine with the same numerics (tests/test_quotes.py)."""
    output, record_dir = Path(output), Path(record_dir)
    run = read_json(output / RUN_RECORD, what="course run record")
    today = today or time.strftime("%Y-%m-%d")
    target = record_dir / f"course_run_{today}.json"
    previous = latest_run_record(record_dir)
    entries = read_json(previous, what="course run record")["notebooks"] if previous else {}
    for stem, metrics in run["metrics"].items():
        entries[stem] = {
            "date": today,
            "metrics": metrics,
            "numerics": run["numerics"],
            "wall_s": run["wall_s"][stem],
        }
    known = {p.stem for p in numbered_notebooks(notebook_dir)}
    entries = {stem: entries[stem] for stem in sorted(entries) if stem in known}
    write_json(target, {"notebooks": entries})
    if complete:
        summary = (output / "summary.md").read_text().removeprefix("# Course run summary\n\n")
        write_text(target.with_suffix(".md"), summary)
    return target


#: Documents beside ``notebooks/`` whose marked numbers the course run fills and checks.
QUOTING_DOCS = ("README.md", "WORKSHOP.md")


def fill_quoted_numbers(notebook_dir: str | Path, metrics: Mapping[str, Mapping]) -> list[Path]:
    """Rewrite every marked number (:mod:`galaxy_helpers.quotes`) in the numbered notebooks'
    markdown and in the documents beside them (:data:`QUOTING_DOCS`) from ``metrics``; returns
    the files that changed."""
    folder = Path(notebook_dir)
    changed = []
    for path in numbered_notebooks(folder):
        nb = read_notebook(path)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = quotes.fill(cell.source, metrics)
        if write_notebook(nb, path):
            changed.append(path)
    for doc in QUOTING_DOCS:
        path = folder.resolve().parent / doc
        if path.exists() and (new := quotes.fill(text := path.read_text(), metrics)) != text:
            write_text(path, new)
            changed.append(path)
    return changed


def quoted_number_problems(
    notebook_dir: str | Path, metrics: Mapping[str, Mapping], timings: bool = True
) -> list[str]:
    """Every marked number in the notebooks' markdown and the README that ``metrics`` contradict
    (``timings=False``: except quoted timings, see :func:`galaxy_helpers.quotes.is_timing`)."""
    folder = Path(notebook_dir)
    out = []
    for path in numbered_notebooks(folder):
        for i, cell in enumerate(read_notebook(path).cells):
            if cell.cell_type == "markdown":
                where = f"{path.name} cell {i + 1} "
                out += quotes.problems(cell.source, metrics, where, timings)
    for doc in QUOTING_DOCS:
        if (path := folder.resolve().parent / doc).exists():
            out += quotes.problems(path.read_text(), metrics, f"{doc} ", timings)
    return out


_HOW_TO_FIX = {
    "strip": "python -m galaxy_helpers.notebooks strip",
    "nav": "python -m galaxy_helpers.notebooks nav",
    "structure": "edit the notebook (layout: DEVELOPERS.md, 'Notebooks')",
}


_SOLUTION = re.compile(r"<details><summary>Solution</summary>.*?```python\n(.*?)```", re.S)
#: A section whose heading holds this marks exercises that retrain (skipped unless asked for).
LONG_EXERCISES = "longer exercises"


def with_solutions(nb, include_long: bool = False):
    """A copy of ``nb`` with each folded solution's Python code as a code cell (tags ``solution``
    and ``raises-exception``, so the run goes on past a failing one) right after its exercise;
    solutions under a "Longer exercises" heading only with ``include_long``."""
    import copy

    import nbformat

    out, long_section = copy.deepcopy(nb), False
    cells = []
    for cell in out.cells:
        cells.append(cell)
        if cell.cell_type != "markdown":
            continue
        if cell.source.startswith("## "):
            long_section = LONG_EXERCISES in cell.source.splitlines()[0].lower()
        if long_section and not include_long:
            continue
        for i, code in enumerate(_SOLUTION.findall(cell.source)):
            title = re.search(r"\*\*(Exercise[^*]*)\*\*", cell.source)
            new = nbformat.v4.new_code_cell(code.rstrip())
            new.metadata["tags"] = ["solution", "raises-exception"]
            new.metadata["exercise"] = (title.group(1) if title else "exercise") + f" [{i + 1}]"
            cells.append(new)
    out.cells = cells
    return out


def check_solutions(
    output: str | Path,
    only: list[str] | None = None,
    notebook_dir: str | Path | None = None,
    include_long: bool = False,
) -> dict[str, list[str]]:
    """Run the numbered notebooks with every exercise's solution as a cell after its exercise
    (:func:`with_solutions`) into ``output``; returns ``{notebook: [failure, ...]}`` naming each
    exercise whose solution raised (empty lists: all ran)."""
    import tempfile

    folder = Path(notebook_dir) if notebook_dir is not None else default_notebook_dir()
    out = Path(output).expanduser().resolve()
    failures: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="solutions_") as tmp:
        paths = numbered_notebooks(folder, only)
        for path in paths:
            write_notebook(with_solutions(read_notebook(path), include_long), Path(tmp) / path.name)
        try:
            run_course(out, only, notebooks_dir=tmp, keep_going=True)
        except CourseRunError:
            pass  # a failing solution fails the papermill run: each one is named below
    for path in paths:
        executed, found = out / "executed" / path.name, failures.setdefault(path.stem, [])
        if not executed.exists():
            found.append("the notebook did not run (see the course run's output)")
            continue
        for i, cell in enumerate(read_notebook(executed).cells):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    solution = "solution" in cell.metadata.get("tags", [])
                    what = cell.metadata.get("exercise") if solution else f"cell {i + 1} (lesson)"
                    found.append(f"{what}: {o.get('ename')}: {o.get('evalue')}")
    return failures


def _parameter(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter {text!r} must look like name=value")
    name, raw = text.split("=", 1)
    try:
        return name.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return name.strip(), raw


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m galaxy_helpers.notebooks", description=__doc__.split("\n")[0]
    )
    common = argparse.ArgumentParser(add_help=False)  # the options, before or after the command
    for p, default in ((parser, None), (common, argparse.SUPPRESS)):
        p.add_argument("--notebook-dir", "--notebooks", default=default, help="notebook folder")
        p.add_argument("--contents", default=default or DEFAULT_CONTENTS, help="course-map link")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=text)

    p_run = add("run", "execute every numbered notebook into an output folder, with a summary")
    p_run.add_argument("--output", default="course_output", help="output folder")
    p_run.add_argument("--profile", default="quick", choices=PROFILES)
    p_run.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        type=_parameter,
        metavar="NAME=VALUE",
        help="inject a parameter into notebooks that define it (value parsed as JSON if it can "
        "be), e.g. -p device=cuda -p dataset=gz_decals_rings",
    )
    p_run.add_argument("--keep-going", action="store_true", help="run on after a failure")
    p_run.add_argument("--kernel", default=None, help="Jupyter kernel name")
    p_regen = add("regenerate", "execute notebooks in place, then strip, stamp and nav")
    p_regen.add_argument("--no-stamp", action="store_true", help="keep the 'Last verified' lines")
    for p in (p_run, p_regen):
        p.add_argument("--only", nargs="+", help="notebook numbers or stems, e.g. --only 01 02")
    p_strip = add("strip", "remove volatile metadata, keep outputs")
    p_nav = add("nav", "write the navigation cells")
    for p in (p_strip, p_nav):
        p.add_argument("--check", action="store_true", help="only report; exit 1 if not clean")
    p_struct = add("check-structure", "check the workshop layout")
    for p in (p_strip, p_struct):
        p.add_argument("paths", nargs="*", type=Path)
    add("check", "strip --check, nav --check and check-structure together")
    p_sol = add("check-solutions", "run the notebooks with every exercise's solution executed")
    p_sol.add_argument("--output", default="course_output/solutions", help="output folder")
    p_sol.add_argument("--only", nargs="+", help="notebook numbers or stems")
    p_sol.add_argument("--all", action="store_true", help="also the longer (retraining) ones")
    args = parser.parse_args(argv)

    try:
        if args.command == "run":
            run_course(
                args.output,
                args.only,
                args.profile,
                dict(args.parameter),
                args.notebook_dir,
                args.keep_going,
                args.kernel,
            )
            return 0
        if args.command == "regenerate":
            wall = regenerate(args.notebook_dir, args.only, args.contents, not args.no_stamp)
            print(
                f"Regenerated {len(wall)} notebooks in {sum(wall.values()):.0f} s; their run "
                "record is the newest benchmarks/results/course_run_<date>.json (and .md)"
            )
            return 0
        if args.command == "check-solutions":
            failed = check_solutions(args.output, args.only, args.notebook_dir, args.all)
            for name, items in failed.items():
                print(f"{name}: " + ("ok" if not items else "\n  - " + "\n  - ".join(items)))
            return 1 if any(failed.values()) else 0
        if args.command == "strip" and not args.check:
            for path in args.paths or numbered_notebooks(args.notebook_dir):
                if write_notebook(strip_notebook(read_notebook(path)), path):
                    print(f"stripped {path}")
            return 0
        if args.command == "nav" and not args.check:
            for path in write_navigation(args.notebook_dir, args.contents):
                print(f"navigation written to {path}")
            return 0
        named = {"strip": "strip", "nav": "nav", "check-structure": "structure"}
        checks = (named[args.command],) if args.command in named else ("strip", "nav", "structure")
        report = check_notebooks(
            getattr(args, "paths", None), args.notebook_dir, checks, args.contents
        )
    except CourseRunError as err:
        print(f"\n[course] FAILED:\n{err}", file=sys.stderr)
        return 1
    except (NotebookCheckError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, items in report.items():
        print(f"{path}:\n" + "\n".join(f"  - {item}" for item in items))
    if report:
        print("To fix -- " + "; ".join(f"{c}: {_HOW_TO_FIX[c]}" for c in checks), file=sys.stderr)
        return 1
    print("All notebooks pass.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Course bookkeeping: the cache folder, per-notebook metrics files and the course runner.

Every notebook starts with ``run = course.start_notebook("NN_short_name", output_dir=...)`` and
ends with ``run.write_metrics({...})``, which writes ``<output_dir>/metrics/<NN_short_name>.json``
with ``runtime_s`` added. The runner executes every numbered notebook with papermill and writes a
summary table of runtimes and headline numbers::

    python -m galaxy_helpers.course run --output course_output
    python -m galaxy_helpers.course run --only 01 02

Examples
--------
>>> from galaxy_helpers import course
>>> run = course.start_notebook("01_meet_the_galaxies", output_dir="/tmp/course_output")
>>> path = run.write_metrics({"n_galaxies": 2000, "headline": {"galaxies": 2000}})
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .core import cache_dir, device, json_safe, write_text

__all__ = [
    "CourseRunError",
    "NotebookResult",
    "CourseResult",
    "NotebookRun",
    "cache_dir",
    "device",
    "discover_notebooks",
    "json_safe",
    "load_metrics",
    "run_course",
    "start_notebook",
    "summary_markdown",
]

#: Numbered notebooks the runner picks up: ``01_meet_the_galaxies.ipynb`` and so on.
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[A-Za-z0-9_\-]+\.ipynb$")
#: File the runner writes when it is done, so a finished run can be reused (see tests/conftest.py).
RUN_RECORD = "course_run.json"
#: Named profiles. "quick" runs every notebook with its own defaults (the laptop CPU profile);
#: bigger runs (GPU, real data, bigger skies) are set with parameters, see README.md.
PROFILES = ("quick",)


class CourseRunError(RuntimeError):
    """A notebook of the course failed; the message names the notebook and the cell."""


# --------------------------------------------------------------------------------------------
# One notebook's bookkeeping
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class NotebookRun:
    """Bookkeeping of one notebook run: its name, output folder and start time.

    Create it with :func:`start_notebook`; finish with :meth:`write_metrics`.
    """

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
        metrics : mapping
            Numbers the notebook's issue names. The optional key ``headline``
            (``{label: number}``) feeds the course summary table.
        show : bool
            Print the written JSON (the last output a reader sees in the notebook).

        Returns
        -------
        pathlib.Path
            The metrics file.
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
        record["runtime_s"] = round(self.elapsed(), 3)
        record.setdefault("notebook", self.name)
        record.setdefault("started_at", self.started_at)
        text = json.dumps(record, indent=2, sort_keys=False, allow_nan=False) + "\n"
        write_text(self.metrics_path, text)
        if show:
            print(f"Metrics written to {self.metrics_path}")
            print(text, end="")
        return self.metrics_path


def start_notebook(name: str, output_dir: str | os.PathLike = "../course_output") -> NotebookRun:
    """Start the clock for one notebook and prepare its output folder.

    Parameters
    ----------
    name : str
        The notebook's file stem, e.g. ``"01_meet_the_galaxies"``.
    output_dir : str or path
        Course output folder (relative paths are relative to the notebook's folder when run
        from Jupyter). Metrics go to ``<output_dir>/metrics/<name>.json``.

    Returns
    -------
    NotebookRun
        Call ``run.write_metrics({...})`` in the notebook's last cell.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ValueError(
            f"notebook name {name!r} must be the notebook's file stem, e.g. '01_meet_the_galaxies'"
        )
    out = Path(output_dir).expanduser().resolve()
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
    output_dir : str or path
        The folder given to :func:`run_course` (holds ``metrics/``).

    Returns
    -------
    dict
        ``{notebook stem: metrics dict}``.
    """
    folder = Path(output_dir) / "metrics"
    result = {}
    for path in sorted(folder.glob("*.json")):
        try:
            result[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"metrics file {path} is not valid JSON: {err}") from err
    return result


# --------------------------------------------------------------------------------------------
# The course runner
# --------------------------------------------------------------------------------------------


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


@dataclasses.dataclass
class CourseResult:
    """Outcome of :func:`run_course`: one :class:`NotebookResult` per notebook, in order."""

    output_dir: Path
    results: list[NotebookResult]
    summary_path: Path
    total_s: float

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def metrics(self) -> dict[str, dict]:
        return {r.notebook: r.metrics for r in self.results if r.metrics is not None}

    @property
    def errors(self) -> dict[str, str]:
        return {r.notebook: r.error for r in self.results if r.error is not None}


def default_notebooks_dir() -> Path:
    """The course's ``notebooks/`` folder: ``./notebooks`` if present, else the repository's."""
    here = Path.cwd() / "notebooks"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "notebooks"


def discover_notebooks(
    notebooks_dir: str | os.PathLike | None = None, only: Iterable[str] | None = None
) -> list[Path]:
    """List the numbered notebooks ``NN_*.ipynb`` in order.

    Parameters
    ----------
    notebooks_dir : str or path, optional
        Folder to search (default :func:`default_notebooks_dir`).
    only : iterable of str, optional
        Keep notebooks whose number (``"01"``, ``"1"``) or stem matches one of these.

    Returns
    -------
    list of pathlib.Path
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"notebook folder {folder} does not exist; run from the repository root or pass "
            "--notebooks"
        )
    found = sorted(p for p in folder.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if only:
        wanted = [str(w).strip() for w in only if str(w).strip()]
        keep = []
        for path in found:
            number = path.name[:2]
            for w in wanted:
                if (w.isdigit() and int(w) == int(number)) or w in (path.stem, path.name):
                    keep.append(path)
                    break
        unknown = [
            w
            for w in wanted
            if not any(
                (w.isdigit() and int(w) == int(p.name[:2])) or w in (p.stem, p.name) for p in found
            )
        ]
        if unknown:
            names = ", ".join(p.name for p in found) or "none"
            raise ValueError(
                f"--only {' '.join(unknown)}: no such notebook in {folder} (found: {names})"
            )
        found = keep
    return found


def _parameter_names(path: Path) -> set[str] | None:
    """Names defined in a notebook's ``parameters`` cell, or None when it has none."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            names = set()
            for line in cell.source.splitlines():
                match = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]+)?=(?!=)", line)
                if match:
                    names.add(match.group(1))
            return names
    return None


def _describe_failure(err: BaseException, notebook: Path, executed: Path) -> str:
    """One message naming the notebook, the failing cell (as numbered in the source notebook,
    counting from 1) and the error."""
    exec_count = getattr(err, "exec_count", None)
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    where, source = "an unknown cell", ""
    if exec_count is not None and executed.exists():
        try:
            import nbformat

            nb = nbformat.read(str(executed), as_version=4)
            added = {"injected-parameters", "papermill-error-cell-tag"}
            original = [c for c in nb.cells if not added & set(c.metadata.get("tags", []))]
            for number, cell in enumerate(original, start=1):
                if cell.cell_type == "code" and cell.get("execution_count") == exec_count:
                    where = f"cell {number} (In [{exec_count}])"
                    lines = cell.source.strip().splitlines()
                    source = "\n    ".join(lines[:8]) + ("\n    ..." if len(lines) > 8 else "")
                    break
        except (OSError, ValueError):
            pass
    elif exec_count is not None:
        where = f"In [{exec_count}]"
    message = f"notebook {notebook.name} failed in {where}: {ename}: {evalue}"
    if source:
        message += f"\n  cell source:\n    {source}"
    message += f"\n  executed copy with the full traceback: {executed}"
    return message


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
    """Markdown table of each notebook's runtime and headline numbers.

    Parameters
    ----------
    results : sequence of NotebookResult
    total_s : float, optional
        Wall time of the whole run, written under the table.

    Returns
    -------
    str
    """
    lines = [
        "| notebook | status | runtime (s) | headline numbers |",
        "|---|---|---|---|",
    ]
    for r in results:
        runtime = (r.metrics or {}).get("runtime_s", r.wall_s)
        headline = (r.metrics or {}).get("headline") or {}
        numbers = "; ".join(f"{k}: {_format_number(v)}" for k, v in headline.items())
        status = "ok" if r.ok else "FAILED"
        if r.ok and r.metrics is None:
            status = "no metrics"
        lines.append(f"| {r.notebook} | {status} | {float(runtime):.1f} | {numbers} |")
    if total_s is not None:
        lines.append("")
        lines.append(
            f"Total wall time: {total_s:.0f} s ({total_s / 60:.1f} min) for {len(results)} "
            "notebook(s), including kernel start-up."
        )
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
) -> CourseResult:
    """Execute the numbered notebooks in order with papermill and summarise them.

    Each notebook runs with its folder as working directory and ``output_dir`` set to the
    absolute output folder. Executed copies go to ``<output>/executed/``, metrics files to
    ``<output>/metrics/`` and the table of runtimes and headline numbers to
    ``<output>/summary.md``.

    Parameters
    ----------
    output : str or path
        Course output folder (created).
    only : iterable of str, optional
        Run only these notebooks (numbers such as ``"01"`` or file stems).
    profile : {"quick"}
        ``"quick"`` keeps every notebook's defaults (the laptop CPU profile); bigger runs are
        asked for with ``parameters``.
    parameters : mapping, optional
        Extra parameters (e.g. ``{"device": "cuda"}``), each injected into the notebooks
        whose parameters cell defines that name.
    notebooks_dir : str or path, optional
        Where the notebooks are (default ``./notebooks``).
    keep_going : bool
        Run the remaining notebooks after a failure instead of raising at once.
    kernel_name : str, optional
        Jupyter kernel (default: the one in each notebook's metadata).
    timeout_s : float, optional
        Per-cell timeout.
    verbose : bool
        Print one line per notebook and the summary table.

    Returns
    -------
    CourseResult

    Raises
    ------
    CourseRunError
        When a notebook fails (at once, or at the end with ``keep_going``), naming the
        notebook, the cell and the error.
    """
    import papermill as pm

    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    out = Path(output).expanduser().resolve()
    notebooks = discover_notebooks(notebooks_dir, only)
    if not notebooks:
        raise FileNotFoundError(
            f"no numbered notebooks (NN_name.ipynb) in {notebooks_dir or default_notebooks_dir()}"
        )
    extra = dict(parameters or {})
    declared_by = {nb.stem: _parameter_names(nb) or set() for nb in notebooks}
    unused = sorted(k for k in extra if not any(k in names for names in declared_by.values()))
    if unused:
        known = sorted(set().union(*declared_by.values()))
        raise ValueError(
            f"parameter(s) {unused} are not defined by any of the notebooks to run "
            f"({', '.join(declared_by)}); their parameters are: {', '.join(known)}"
        )
    executed_dir = out / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    record_path = out / RUN_RECORD
    record_path.unlink(missing_ok=True)

    results: list[NotebookResult] = []
    t_course = time.perf_counter()
    for nb_path in notebooks:
        stem = nb_path.stem
        executed = executed_dir / nb_path.name
        metrics_file = out / "metrics" / f"{stem}.json"
        metrics_file.unlink(missing_ok=True)
        declared = declared_by[stem]
        params = {"output_dir": str(out)} if "output_dir" in declared else {}
        given = {k: v for k, v in extra.items() if k in declared}
        params.update(given)
        if verbose:
            with_params = f" with {given}" if given else ""
            print(f"[course] running {nb_path.name}{with_params} ...", flush=True)
        t0 = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(
                str(nb_path),
                str(executed),
                parameters=params,
                cwd=str(nb_path.parent),
                kernel_name=kernel_name,
                progress_bar=False,
                log_output=False,
                execution_timeout=timeout_s,
                report_mode=False,
            )
        except Exception as err:  # papermill raises PapermillExecutionError and friends
            error = _describe_failure(err, nb_path, executed)
        wall = time.perf_counter() - t0
        metrics = None
        if metrics_file.exists():
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        elif error is None:
            error = (
                f"notebook {nb_path.name} ran but wrote no metrics file {metrics_file}; its last "
                f"code cell must call run.write_metrics({{...}})"
            )
        result = NotebookResult(stem, executed, wall, metrics, error)
        results.append(result)
        if verbose:
            state = "ok" if result.ok else "FAILED"
            print(f"[course] {nb_path.name}: {state} in {wall:.1f} s", flush=True)
        if error is not None and not keep_going:
            break
    total = time.perf_counter() - t_course

    summary = summary_markdown(results, total)
    summary_path = out / "summary.md"
    write_text(summary_path, "# Course run summary\n\n" + summary)
    failed = [r for r in results if not r.ok]
    record = {
        "finished": True,
        "ok": not failed,
        "profile": profile,
        "parameters": json_safe(extra),
        "notebooks": [r.notebook for r in results],
        "requested": [p.stem for p in notebooks],
        "errors": {r.notebook: r.error for r in failed},
        "wall_s": {r.notebook: round(r.wall_s, 2) for r in results},
        "total_s": round(total, 2),
    }
    write_text(record_path, json.dumps(record, indent=2) + "\n")
    if verbose:
        print()
        print(summary, end="")
        print(f"[course] executed notebooks: {executed_dir}")
        print(f"[course] metrics files:      {out / 'metrics'}")
        print(f"[course] summary table:      {summary_path}")
    result = CourseResult(out, results, summary_path, total)
    if failed:
        raise CourseRunError("\n".join(r.error for r in failed))
    return result


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_parameter(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"parameter {text!r} must look like name=value")
    name, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name.strip(), value


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m galaxy_helpers.course run|nav ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m galaxy_helpers.course", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute every numbered notebook and write a summary")
    run_p.add_argument("--output", default="course_output", help="output folder")
    run_p.add_argument("--only", nargs="+", help="notebook numbers or stems, e.g. --only 01 02")
    run_p.add_argument("--profile", default="quick", choices=PROFILES)
    run_p.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        type=_parse_parameter,
        metavar="NAME=VALUE",
        help="inject a parameter into notebooks that define it (value parsed as JSON if it can "
        "be), e.g. -p device=cuda -p dataset=gz_decals_rings",
    )
    run_p.add_argument("--notebooks", default=None, help="notebook folder (default ./notebooks)")
    run_p.add_argument("--keep-going", action="store_true", help="run on after a failure")
    run_p.add_argument("--kernel", default=None, help="Jupyter kernel name")
    sub.add_parser(
        "nav", help="rewrite the navigation cells (same as python -m galaxy_helpers.notebooks nav)"
    )
    args = parser.parse_args(argv)

    if args.command == "nav":
        try:
            from galaxy_helpers import notebooks as nb_tools
        except ImportError as err:
            print(f"galaxy_helpers.notebooks is not available ({err})", file=sys.stderr)
            return 2
        return int(nb_tools.main(["nav"]) or 0)

    try:
        run_course(
            output=args.output,
            only=args.only,
            profile=args.profile,
            parameters=dict(args.parameter),
            notebooks_dir=args.notebooks,
            keep_going=args.keep_going,
            kernel_name=args.kernel,
        )
    except CourseRunError as err:
        print(f"\n[course] FAILED:\n{err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as err:
        print(f"[course] {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

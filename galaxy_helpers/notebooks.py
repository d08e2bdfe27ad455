"""Tools that keep the course notebooks tidy, navigable and current.

The notebooks are committed *with* the outputs of a quick-profile run so that a reader sees
every figure without running anything. This module keeps those files honest:

``strip``
    Removes volatile metadata (widget state, execution timing, papermill bookkeeping,
    interpreter versions, progress bars) but keeps the outputs, so diffs stay readable.
``nav``
    Writes the navigation cell (previous / course map / next) after the header and at the
    end of every numbered notebook, so links never go stale.
``check-structure``
    Checks the workshop layout every notebook promises (see DEVELOPERS.md): header, one
    ``parameters`` cell, numbered sections, an exercise with a folded solution, key points and
    a final ``write_metrics`` call.
``regenerate``
    Executes every notebook in place with papermill (quick profile, cwd ``notebooks/``), then
    strips it, stamps the "Last verified" line and rewrites the navigation.
``check``
    All of the read-only checks at once (what ``tests/test_notebook_hygiene.py`` runs).

Command line::

    python -m galaxy_helpers.notebooks strip [--check] [NOTEBOOK ...]
    python -m galaxy_helpers.notebooks nav [--check]
    python -m galaxy_helpers.notebooks check-structure [NOTEBOOK ...]
    python -m galaxy_helpers.notebooks regenerate [--only 01 02]
    python -m galaxy_helpers.notebooks check

The output comparison used by the nbval-style test (:func:`compare_checked_outputs`) follows
nbval's rules: only cells marked ``# NBVAL_CHECK_OUTPUT`` are compared, streams are coalesced,
images, metadata, execution counts and widget model ids are skipped, and the regex
replacements of ``notebooks/nbval_sanitize.cfg`` (nbval's ``--nbval-sanitize-with`` format)
are applied to both sides.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import difflib
import html
import importlib.metadata
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

NBFORMAT_VERSION = 4

#: Notebook-level metadata keys that change from run to run or from machine to machine.
VOLATILE_NOTEBOOK_METADATA = ("widgets", "papermill", "execution", "vscode", "colab")
#: Cell-level metadata keys that record timing or view state rather than content.
VOLATILE_CELL_METADATA = (
    "execution",
    "papermill",
    "ExecuteTime",
    "scrolled",
    "collapsed",
    "trusted",
)
#: The kernelspec every committed notebook carries (any other name is machine-specific).
CANONICAL_KERNELSPEC = {
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
    "name": "python3",
}
#: The output MIME type of a widget view: it points at a random model id and means nothing
#: once the widget state is stripped.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: Tags papermill adds to mark failures (never committed).
PAPERMILL_ERROR_TAGS = ("papermill-error-cell-tag",)
#: nbval's marker for cells whose output is compared.
CHECK_MARKER = "NBVAL_CHECK_OUTPUT"
CHECK_TAG = "nbval-check-output"
#: Keys nbval skips when comparing outputs (same list, plus images like nbval without nbdime).
NBVAL_SKIP_COMPARE = (
    "metadata",
    "traceback",
    "prompt_number",
    "output_type",
    "name",
    "execution_count",
    WIDGET_MIME,
    "image/png",
    "image/jpeg",
)
#: A tqdm progress line: "40%|####      | 4/10 [00:01<00:02, 3.1it/s]" or "12it [00:01, 9.9it/s]".
_TQDM_LINE = re.compile(r"(\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.]+[kMG]?\s*\[|^\s*[\d.]+[kMG]?it \[)")
_NOTEBOOK_NAME = re.compile(r"^(\d\d)_[A-Za-z0-9_]+\.ipynb$")
_SECTION = re.compile(r"^##\s+(\d+)\.\s+\S", re.MULTILINE)
_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
NAV_MARKER = (
    "<!-- navigation: written by `python -m galaxy_helpers.notebooks nav`; edits are lost -->"
)
NAV_TOP_ID = "navigation-top"
NAV_BOTTOM_ID = "navigation-bottom"
DEFAULT_CONTENTS = "../README.md#course-map"
#: Packages named on the "Last verified" line of every header.
STAMP_PACKAGES = ("numpy", "torch", "timm", "scikit-learn", "matplotlib")


class NotebookCheckError(ValueError):
    """A notebook breaks one of the course's notebook contracts."""


# ----------------------------------------------------------------------------------------
# Reading, writing and finding notebooks
# ----------------------------------------------------------------------------------------


def default_notebook_dir() -> Path:
    """Return the course's ``notebooks/`` folder.

    Returns
    -------
    Path
        ``notebooks/`` next to the ``galaxy_helpers`` package when the package runs from a
        checkout, else ``./notebooks`` under the current directory.
    """
    beside_package = Path(__file__).resolve().parents[1] / "notebooks"
    if beside_package.is_dir():
        return beside_package
    return Path.cwd() / "notebooks"


def numbered_notebooks(notebook_dir: str | Path | None = None) -> list[Path]:
    """List the numbered notebooks ``NN_short_name.ipynb`` of a folder, in course order.

    Parameters
    ----------
    notebook_dir : str or Path, optional
        Folder to look in; defaults to :func:`default_notebook_dir`.

    Returns
    -------
    list of Path
        Sorted by file name (so by number).
    """
    folder = Path(notebook_dir) if notebook_dir is not None else default_notebook_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Notebook folder {folder} does not exist; pass the course's notebooks/."
        )
    return sorted(p for p in folder.glob("*.ipynb") if _NOTEBOOK_NAME.match(p.name))


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Read a notebook as nbformat 4, with an error naming the file when it is not one.

    Parameters
    ----------
    path : str or Path
        The ``.ipynb`` file.

    Returns
    -------
    nbformat.NotebookNode
    """
    path = Path(path)
    try:
        return nbformat.read(path, as_version=NBFORMAT_VERSION)
    except FileNotFoundError:
        raise
    except Exception as exc:  # nbformat raises several unrelated types for bad JSON
        raise NotebookCheckError(f"{path}: not a readable Jupyter notebook ({exc}).") from exc


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """Serialise a notebook exactly as Jupyter does (sorted keys, indent 1, final newline)."""
    return nbformat.writes(nb, version=NBFORMAT_VERSION) + "\n"


def write_notebook(nb: nbformat.NotebookNode, path: str | Path) -> bool:
    """Write a notebook atomically, only when its text changes.

    Parameters
    ----------
    nb : nbformat.NotebookNode
        Notebook to write.
    path : str or Path
        Destination file.

    Returns
    -------
    bool
        True when the file was (re)written, False when it already held this text.
    """
    path = Path(path)
    text = notebook_text(nb)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".ipynb.tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True


def _cell_label(index: int, cell) -> str:
    first = cell.get("source", "").strip().splitlines()
    preview = first[0][:50] if first else "(empty)"
    return f"cell {index} ({cell.cell_type}, {preview!r})"


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


# ----------------------------------------------------------------------------------------
# strip
# ----------------------------------------------------------------------------------------


def _is_progress_text(text: str) -> bool:
    lines = [line for line in re.split(r"[\r\n]", text) if line.strip()]
    return bool(lines) and all(_TQDM_LINE.search(line) for line in lines)


def _join(text) -> str:
    return "".join(text) if isinstance(text, list) else str(text)


def _clean_outputs(outputs: list) -> tuple[list, list[str]]:
    """Drop progress bars and widget model ids from a cell's outputs; report what went."""
    kept, removed = [], []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream" and output.get("name") == "stderr":
            text = _join(output.get("text", ""))
            lines = re.split(r"(?<=\n)", text.replace("\r\n", "\n"))
            # tqdm redraws a line with "\r"; keep the last state of every redrawn line
            lines = [line.rsplit("\r", 1)[-1] for line in lines]
            clean = [line for line in lines if not _TQDM_LINE.search(line)]
            if len(clean) != len(lines):
                removed.append("progress-bar text on stderr")
                if "".join(clean).strip():
                    output = copy.deepcopy(output)
                    output["text"] = "".join(clean)
                    kept.append(output)
                continue
        if kind in ("display_data", "execute_result"):
            data = output.get("data", {})
            if WIDGET_MIME in data:
                removed.append(f"output {WIDGET_MIME} (random widget model id)")
                plain = _join(data.get("text/plain", ""))
                rest = {k: v for k, v in data.items() if k != WIDGET_MIME}
                if _is_progress_text(plain) or not rest:
                    continue
                output = copy.deepcopy(output)
                output["data"] = rest
        kept.append(output)
    return kept, removed


def volatile_items(nb: nbformat.NotebookNode) -> list[str]:
    """List the volatile metadata and noise a notebook carries.

    Parameters
    ----------
    nb : nbformat.NotebookNode
        The notebook (not modified).

    Returns
    -------
    list of str
        One human-readable item per problem, e.g. ``"cell 4 (code, 'x = 1'): metadata.execution"``;
        empty when the notebook is clean.
    """
    problems = []
    meta = nb.get("metadata", {})
    for key in VOLATILE_NOTEBOOK_METADATA:
        if key in meta:
            problems.append(f"notebook metadata.{key}")
    kernelspec = meta.get("kernelspec")
    if kernelspec is not None and dict(kernelspec) != CANONICAL_KERNELSPEC:
        problems.append(
            f"notebook metadata.kernelspec {dict(kernelspec)} (expected {CANONICAL_KERNELSPEC})"
        )
    if "version" in meta.get("language_info", {}):
        problems.append("notebook metadata.language_info.version (interpreter-specific)")
    for index, cell in enumerate(nb.cells):
        label = _cell_label(index, cell)
        cell_meta = cell.get("metadata", {})
        for key in VOLATILE_CELL_METADATA:
            if key in cell_meta:
                problems.append(f"{label}: metadata.{key}")
        if "tags" in cell_meta and not cell_meta["tags"]:
            problems.append(f"{label}: empty metadata.tags")
        if any(tag in PAPERMILL_ERROR_TAGS for tag in _tags(cell)):
            problems.append(f"{label}: papermill error-marker cell")
        if cell.cell_type == "code":
            _, removed = _clean_outputs(cell.get("outputs", []))
            problems.extend(f"{label}: {item}" for item in removed)
    return problems


def strip_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Return a copy of a notebook without volatile metadata; outputs are kept.

    Removed: widget state (``metadata.widgets``), execution timing (``metadata.execution``,
    cell ``execution``/``ExecuteTime``), papermill bookkeeping (notebook and cell ``papermill``
    metadata, error-marker cells), view state (``scrolled``, ``collapsed``), empty tag lists,
    the interpreter version in ``language_info``, progress bars in outputs and widget model ids.
    The kernelspec is normalised to ``python3``. Idempotent.

    Parameters
    ----------
    nb : nbformat.NotebookNode
        The notebook (not modified).

    Returns
    -------
    nbformat.NotebookNode
        The stripped copy.
    """
    nb = copy.deepcopy(nb)
    meta = nb.setdefault("metadata", {})
    for key in VOLATILE_NOTEBOOK_METADATA:
        meta.pop(key, None)
    if "kernelspec" in meta:
        meta["kernelspec"] = dict(CANONICAL_KERNELSPEC)
    if "language_info" in meta:
        meta["language_info"].pop("version", None)
    cells = []
    for cell in nb.cells:
        if any(tag in PAPERMILL_ERROR_TAGS for tag in _tags(cell)):
            continue
        cell_meta = cell.setdefault("metadata", {})
        for key in VOLATILE_CELL_METADATA:
            cell_meta.pop(key, None)
        if "tags" in cell_meta and not cell_meta["tags"]:
            del cell_meta["tags"]
        if cell.cell_type == "code":
            cell["outputs"], _ = _clean_outputs(cell.get("outputs", []))
        cells.append(cell)
    nb.cells = cells
    return nb


# ----------------------------------------------------------------------------------------
# nav
# ----------------------------------------------------------------------------------------


def notebook_title(nb: nbformat.NotebookNode, path: str | Path) -> str:
    """The notebook's title: the first ``# `` heading of its header, else a name from the file.

    Parameters
    ----------
    nb : nbformat.NotebookNode
    path : str or Path
        Used for the fallback title (``02_train_on_votes`` -> ``02. Train on votes``).

    Returns
    -------
    str
    """
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    stem = Path(path).stem
    number, _, rest = stem.partition("_")
    return f"{number}. {rest.replace('_', ' ').capitalize()}"


def navigation_markdown(
    previous: tuple[str, str] | None,
    following: tuple[str, str] | None,
    contents: str = DEFAULT_CONTENTS,
) -> str:
    """The text of a navigation cell.

    Parameters
    ----------
    previous, following : (title, file name) or None
        Neighbouring notebooks; None at either end of the course.
    contents : str
        Link to the course map (README section).

    Returns
    -------
    str
        Markdown: ``< previous | Course map | next >``.
    """
    parts = []
    if previous is not None:
        parts.append(f"[&larr; {html.escape(previous[0], quote=False)}]({previous[1]})")
    parts.append(f"[Course map]({contents})")
    if following is not None:
        parts.append(f"[{html.escape(following[0], quote=False)} &rarr;]({following[1]})")
    return NAV_MARKER + "\n\n" + " | ".join(parts)


def _header_index(nb) -> int | None:
    for index, cell in enumerate(nb.cells):
        if "header" in _tags(cell):
            return index
    return None


def _nav_cell(source: str, cell_id: str, nbformat_minor: int) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(source, metadata={"tags": ["navigation"]})
    if nbformat_minor >= 5:
        cell["id"] = cell_id  # fixed ids keep diffs quiet
    else:
        cell.pop("id", None)  # nbformat 4.4 and older have no cell ids
    return cell


def with_navigation(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """Return a copy of a notebook with exactly two navigation cells holding ``source``.

    The first goes right after the header cell (tag ``header``; at the top when there is
    none), the second at the very end. Any older navigation cells are replaced. Idempotent.

    Parameters
    ----------
    nb : nbformat.NotebookNode
    source : str
        Markdown from :func:`navigation_markdown`.

    Returns
    -------
    nbformat.NotebookNode
    """
    nb = copy.deepcopy(nb)
    nb.cells = [cell for cell in nb.cells if "navigation" not in _tags(cell)]
    header = _header_index(nb)
    minor = int(nb.get("nbformat_minor", 5))
    nb.cells.insert(0 if header is None else header + 1, _nav_cell(source, NAV_TOP_ID, minor))
    nb.cells.append(_nav_cell(source, NAV_BOTTOM_ID, minor))
    return nb


def navigation_sources(paths: list[Path], contents: str = DEFAULT_CONTENTS) -> dict[Path, str]:
    """Navigation markdown for each notebook of an ordered course.

    Parameters
    ----------
    paths : list of Path
        Numbered notebooks in course order.
    contents : str
        Link to the course map.

    Returns
    -------
    dict
        ``{path: markdown}``.
    """
    titles = [(notebook_title(read_notebook(p), p), p.name) for p in paths]
    sources = {}
    for i, path in enumerate(paths):
        previous = titles[i - 1] if i > 0 else None
        following = titles[i + 1] if i + 1 < len(paths) else None
        sources[path] = navigation_markdown(previous, following, contents)
    return sources


def navigation_problems(nb: nbformat.NotebookNode, source: str) -> list[str]:
    """Say how a notebook's navigation cells differ from the current ones.

    Parameters
    ----------
    nb : nbformat.NotebookNode
    source : str
        The expected navigation markdown.

    Returns
    -------
    list of str
        Empty when the navigation is current.
    """
    expected = with_navigation(nb, source)
    nav = [(i, c) for i, c in enumerate(nb.cells) if "navigation" in _tags(c)]
    if len(nav) != 2:
        return [f"{len(nav)} navigation cells (expected 2: after the header and at the end)"]
    problems = []
    header = _header_index(nb)
    top_at = 0 if header is None else header + 1
    if nav[0][0] != top_at:
        problems.append(f"first navigation cell is cell {nav[0][0]}, expected cell {top_at}")
    if nav[1][0] != len(nb.cells) - 1:
        problems.append(f"last navigation cell is cell {nav[1][0]}, not the last cell")
    for index, cell in nav:
        if cell.source != source:
            problems.append(f"cell {index}: navigation links are out of date")
    if not problems and [c.source for c in expected.cells] != [c.source for c in nb.cells]:
        problems.append("navigation cells differ from what `nav` writes")
    return problems


# ----------------------------------------------------------------------------------------
# check-structure
# ----------------------------------------------------------------------------------------


def _bullets_after(text: str, label: str) -> int | None:
    """Count bullet lines following a line that mentions ``label``; None when absent."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if label in line.lower():
            count = 0
            for following in lines[i + 1 :]:
                stripped = following.strip()
                if re.match(r"^([-*+]|\d+\.)\s+\S", stripped):
                    count += 1
                elif stripped and count:
                    break
                elif stripped.startswith(("#", "**")):
                    break
            return count
    return None


def _paragraphs(source: str) -> list[str]:
    """Blank-line separated blocks of markdown (wrapped lines joined with spaces)."""
    return [" ".join(block.split("\n")) for block in re.split(r"\n\s*\n", source) if block.strip()]


def header_problems(source: str) -> list[str]:
    """Check the header cell's text (see DEVELOPERS.md "Notebooks" item 1).

    Parameters
    ----------
    source : str
        Markdown of the cell tagged ``header``.

    Returns
    -------
    list of str
        What is missing; empty when complete.
    """
    text = source.lower()
    problems = []
    if not re.search(r"^# \S", source, re.MULTILINE):
        problems.append("no title (a line starting with '# ')")
    goals = _bullets_after(source, "learning goals")
    if goals is None:
        problems.append("no 'Learning goals' list")
    elif not 3 <= goals <= 5:
        problems.append(f"'Learning goals' has {goals} bullets (expected 3 to 5)")
    if "prerequisite" not in text:
        problems.append("no 'Prerequisites'")
    paragraphs = _paragraphs(source)
    runtime = [p.lower() for p in paragraphs if "runtime" in p.lower()]
    if not runtime:
        problems.append("no expected 'runtime' paragraph")
    elif not any("cpu" in p and "gpu" in p for p in runtime):
        problems.append("the runtime paragraph must give both a laptop CPU and a GPU time")
    if "data used" not in text:
        problems.append("no 'Data used'")
    verified = [p for p in paragraphs if "last verified" in p.lower()]
    if not verified:
        problems.append("no 'Last verified' line")
    else:
        if not _DATE.search(verified[0]):
            problems.append("the 'Last verified' line has no YYYY-MM-DD date")
        if not re.search(r"[A-Za-z][\w-]*\s+\d+\.\d+", verified[0]):
            problems.append(
                "the 'Last verified' line names no package versions (e.g. 'torch 2.4.1'); "
                "`python -m galaxy_helpers.notebooks regenerate` writes them"
            )
    return problems


def _code_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def structure_problems(nb: nbformat.NotebookNode, path: str | Path) -> list[str]:
    """Check a notebook against the workshop layout of DEVELOPERS.md.

    Checks: header cell first (tag ``header``, complete per :func:`header_problems`); exactly
    one code cell tagged ``parameters`` defining ``output_dir`` and ``seed``; the next code
    cell calls ``start_notebook("<file stem>"``; numbered sections ``## 1. ...`` counting up
    from 1 (at least two); an exercise with a solution folded in
    ``<details><summary>Solution``; a ``## Key points`` cell; the last code cell calls
    ``write_metrics(``.

    Parameters
    ----------
    nb : nbformat.NotebookNode
    path : str or Path
        The notebook's file (its stem is the name ``start_notebook`` must use).

    Returns
    -------
    list of str
        One message per problem, naming the cell where it helps; empty when all is well.
    """
    stem = Path(path).stem
    problems = []
    headers = [i for i, c in enumerate(nb.cells) if "header" in _tags(c)]
    if not headers:
        problems.append("no header cell (a markdown cell tagged 'header' must come first)")
    else:
        first = headers[0]
        if len(headers) > 1:
            problems.append(f"{len(headers)} cells tagged 'header' (cells {headers}); keep one")
        if first != 0:
            problems.append(f"header is cell {first}; it must be cell 0")
        if nb.cells[first].cell_type != "markdown":
            problems.append(f"header cell {first} is not markdown")
        problems.extend(f"header: {p}" for p in header_problems(nb.cells[first].source))

    code = _code_cells(nb)
    params = [i for i, c in code if "parameters" in _tags(c)]
    tagged_md = [
        i for i, c in enumerate(nb.cells) if c.cell_type != "code" and "parameters" in _tags(c)
    ]
    if tagged_md:
        problems.append(f"cells {tagged_md} are tagged 'parameters' but are not code cells")
    if len(params) != 1:
        problems.append(
            f"{len(params)} code cells tagged 'parameters' (cells {params}); expected exactly 1"
        )
    else:
        source = nb.cells[params[0]].source
        for name in ("output_dir", "seed"):
            if not re.search(rf"^{name}\s*=", source, re.MULTILINE):
                problems.append(f"parameters cell {params[0]} does not set '{name}'")
        after = [i for i, _ in code if i > params[0]]
        pattern = rf"start_notebook\(\s*[\"']{re.escape(stem)}[\"']"
        if not after or not re.search(pattern, nb.cells[after[0]].source):
            where = f"cell {after[0]}" if after else "no code cell"
            problems.append(
                f"the code cell after the parameters ({where}) must call "
                f'course.start_notebook("{stem}", output_dir=output_dir)'
            )

    markdown = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
    numbers = [(i, int(m)) for i, c in markdown for m in _SECTION.findall(c.source)]
    if len(numbers) < 2:
        problems.append("fewer than two numbered sections ('## 1. Set up', '## 2. ...')")
    else:
        for expected, (index, number) in enumerate(numbers, start=1):
            if number != expected:
                problems.append(f"cell {index}: section '## {number}.' should be '## {expected}.'")
                break

    exercise = re.compile(
        r"(^#+[^\n]*\bexercise|\*\*[^*\n]*\bexercise)", re.IGNORECASE | re.MULTILINE
    )
    exercises = [i for i, c in markdown if "header" not in _tags(c) and exercise.search(c.source)]
    solutions = [
        i
        for i, c in markdown
        if re.search(r"<details>\s*<summary>\s*(<b>)?\s*solution", c.source, re.IGNORECASE)
        and "</details>" in c.source
    ]
    if not exercises:
        problems.append("no exercise (a markdown heading or bold text naming an 'Exercise')")
    elif not [i for i in solutions if i >= exercises[0]]:
        problems.append(
            "no folded solution after the first exercise "
            "('<details><summary>Solution</summary> ... </details>' in a markdown cell)"
        )
    if not any(re.search(r"^##\s+key points\s*$", c.source, re.I | re.M) for _, c in markdown):
        problems.append("no '## Key points' cell")
    if not code or "write_metrics(" not in code[-1][1].source:
        last = f"cell {code[-1][0]}" if code else "no code cell"
        problems.append(f"the last code cell ({last}) must call run.write_metrics({{...}})")
    return problems


# ----------------------------------------------------------------------------------------
# Output comparison (nbval rules) for the stored-outputs test
# ----------------------------------------------------------------------------------------


def is_checked_cell(cell) -> bool:
    """True for a code cell whose output nbval compares (``# NBVAL_CHECK_OUTPUT`` or tag)."""
    if cell.cell_type != "code":
        return False
    if CHECK_TAG in _tags(cell):
        return True
    for line in cell.source.splitlines():
        line = line.strip()
        if line.startswith("#") and line.lstrip("#").strip() == CHECK_MARKER:
            return True
    return False


def read_sanitize_patterns(path: str | Path | None) -> list[tuple[str, str]]:
    """Read regex replacements in nbval's ``--nbval-sanitize-with`` format.

    The file holds pairs of lines ``regex: ...`` / ``replace: ...`` (sections such as
    ``[memory addresses]`` are comments).

    Parameters
    ----------
    path : str or Path or None
        The file; None or a missing file gives no patterns.

    Returns
    -------
    list of (regex, replacement)
    """
    if path is None or not Path(path).exists():
        return []
    text = Path(path).read_text(encoding="utf-8")
    pairs = re.findall(r"^regex: (.*)$\n^replace: (.*)$", text, flags=re.MULTILINE)
    for regex, _ in pairs:
        try:
            re.compile(regex)
        except re.error as exc:
            raise NotebookCheckError(f"{path}: bad regex {regex!r} ({exc}).") from exc
    return pairs


def _comparable(outputs: list, patterns: list[tuple[str, str]]) -> dict[str, list]:
    """Flatten outputs like nbval: one list of values per output key / MIME type."""
    outputs, _ = _clean_outputs(copy.deepcopy(list(outputs)))
    streams: dict[str, str] = {}
    flat: dict[str, list] = defaultdict(list)
    ordered = []
    for output in outputs:
        if output.get("output_type") == "stream":
            name = output.get("name", "stdout")
            if name not in streams:
                ordered.append(("stream", name))
                streams[name] = ""
            streams[name] += _join(output.get("text", ""))
        else:
            ordered.append(("other", output))
    for kind, item in ordered:
        if kind == "stream":
            text = streams[item]
            text = re.sub(r"[^\n]\x08", "", text)
            text = re.sub(r"^.*\r(?=[^\n])", "", text, flags=re.MULTILINE)
            flat[item].append(text)
            continue
        for key, value in item.items():
            if key in NBVAL_SKIP_COMPARE:
                continue
            values = value.items() if key == "data" else [(key, value)]
            for sub, v in values:
                if sub not in NBVAL_SKIP_COMPARE:
                    flat[sub].append(_join(v) if isinstance(v, list) else v)
    for key, values in flat.items():
        clean = []
        for value in values:
            if isinstance(value, str):
                for regex, replace in patterns:
                    value = re.sub(regex, replace, value)
            clean.append(value)
        flat[key] = clean
    return dict(flat)


def _short(value, limit: int = 1200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True)
    return (
        text
        if len(text) <= limit
        else text[:limit] + f"\n... ({len(text) - limit} more characters)"
    )


def _diff(old, new, context: int = 2, max_lines: int = 60) -> str:
    """A unified diff of two output values (text as is, anything else as sorted JSON)."""
    as_text = [
        v if isinstance(v, str) else json.dumps(v, indent=1, sort_keys=True) for v in (old, new)
    ]
    lines = list(
        difflib.unified_diff(
            as_text[0].splitlines(),
            as_text[1].splitlines(),
            "stored",
            "now",
            n=context,
            lineterm="",
        )
    )
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... ({len(lines) - max_lines} more diff lines)"]
    return "\n".join(lines) if lines else f"(whitespace only)\n{_short(old)!r}\nvs\n{_short(new)!r}"


def compare_outputs(stored: list, fresh: list, patterns: list[tuple[str, str]] = ()) -> list[str]:
    """Compare two cells' outputs with nbval's rules; describe the differences.

    Parameters
    ----------
    stored : list
        Outputs committed in the notebook (the reference).
    fresh : list
        Outputs of a new execution.
    patterns : list of (regex, replacement)
        Sanitising replacements applied to both sides first.

    Returns
    -------
    list of str
        Empty when the outputs agree.
    """
    ref, new = _comparable(stored, list(patterns)), _comparable(fresh, list(patterns))
    if set(ref) - set(new):
        return [f"output fields missing from the new run: {sorted(set(ref) - set(new))}"]
    if set(new) - set(ref):
        return [f"new output fields not in the stored notebook: {sorted(set(new) - set(ref))}"]
    problems = []
    for key in ref:
        if len(ref[key]) != len(new[key]):
            problems.append(f"{key}: {len(ref[key])} stored outputs vs {len(new[key])} new")
            continue
        for old, now in zip(ref[key], new[key], strict=True):
            if old != now:
                problems.append(
                    f"{key} differs (- stored in the notebook, + produced now):\n{_diff(old, now)}"
                )
    return problems


def compare_checked_outputs(
    stored_nb: nbformat.NotebookNode,
    executed_nb: nbformat.NotebookNode,
    patterns: list[tuple[str, str]] = (),
) -> dict[str, list[str]]:
    """Compare the checked cells of a committed notebook with a fresh execution of it.

    Cells are matched by cell id (papermill keeps ids and only adds its
    ``injected-parameters`` cell); a checked cell missing from the executed copy is reported.

    Parameters
    ----------
    stored_nb : nbformat.NotebookNode
        The committed notebook (reference outputs).
    executed_nb : nbformat.NotebookNode
        The same notebook executed now (e.g. by the course run).
    patterns : list of (regex, replacement)
        See :func:`read_sanitize_patterns`.

    Returns
    -------
    dict
        ``{"cell N (first line)": [problem, ...]}`` for each checked cell that differs.
    """
    by_id = {c.get("id"): c for c in executed_nb.cells if c.get("id")}
    executed_code = [
        c
        for c in executed_nb.cells
        if c.cell_type == "code" and "injected-parameters" not in _tags(c)
    ]
    stored_code = [c for c in stored_nb.cells if c.cell_type == "code"]
    report = {}
    for index, cell in enumerate(stored_nb.cells):
        if not is_checked_cell(cell):
            continue
        label = _cell_label(index, cell)
        twin = by_id.get(cell.get("id"))
        if twin is None:
            position = stored_code.index(cell)
            twin = executed_code[position] if position < len(executed_code) else None
        if twin is None or twin.source != cell.source:
            report[label] = [
                "the executed notebook has no cell with this source (is it up to date?)"
            ]
            continue
        problems = compare_outputs(cell.get("outputs", []), twin.get("outputs", []), patterns)
        if problems:
            report[label] = problems
    return report


# ----------------------------------------------------------------------------------------
# regenerate
# ----------------------------------------------------------------------------------------


def package_versions(names: tuple[str, ...] = STAMP_PACKAGES) -> str:
    """Python and package versions as ``"Python 3.11.9, numpy 2.1.0, ..."`` (missing ones skipped)."""
    parts = [f"Python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


def stamp_header(
    nb: nbformat.NotebookNode,
    runtime_s: float | None = None,
    today: _dt.date | None = None,
) -> nbformat.NotebookNode:
    """Rewrite the header's "Last verified" line with today's date, versions and runtime.

    The line keeps its label (everything up to and including the first ``:``, e.g.
    ``**Last verified:**``) and gets ``YYYY-MM-DD with Python x, numpy y, ...; quick profile
    ran in N s on a K-core CPU``.

    Parameters
    ----------
    nb : nbformat.NotebookNode
    runtime_s : float, optional
        Measured quick-profile runtime to state.
    today : datetime.date, optional
        Defaults to today (UTC).

    Returns
    -------
    nbformat.NotebookNode
        A copy; unchanged when there is no header or no "Last verified" line.
    """
    nb = copy.deepcopy(nb)
    index = _header_index(nb)
    if index is None:
        return nb
    today = today or _dt.datetime.now(_dt.UTC).date()
    value = f"{today.isoformat()} with {package_versions()}"
    if runtime_s is not None:
        value += f"; quick profile ran in {runtime_s:.0f} s on a {os.cpu_count()}-core CPU"
    lines = nb.cells[index].source.splitlines()
    for i, line in enumerate(lines):
        if "last verified" in line.lower() and ":" in line:
            label, _, _ = line.partition(":")
            closing = "**" if label.lstrip().startswith("**") and not label.endswith("**") else ""
            end = i + 1  # the stamp replaces the line and its wrapped continuation lines
            while (
                end < len(lines)
                and lines[end].strip()
                and not lines[end].lstrip().startswith(("**", "#", "-", "*"))
            ):
                end += 1
            lines[i:end] = [f"{label}:{closing} {value}"]
            break
    nb.cells[index].source = "\n".join(lines)
    return nb


def regenerate(
    notebook_dir: str | Path | None = None,
    only: list[str] | None = None,
    contents: str = DEFAULT_CONTENTS,
    stamp: bool = True,
    timeout_s: int | None = 1200,
) -> dict[str, float]:
    """Execute notebooks in place (quick profile), then strip, stamp and rewrite navigation.

    Each notebook runs with papermill in ``notebook_dir`` with its own default parameters (the
    quick profile, so nothing is injected and the committed file keeps its parameters cell).
    A notebook that fails is left untouched and the error names it and its cell.

    Parameters
    ----------
    notebook_dir : str or Path, optional
        Defaults to :func:`default_notebook_dir`.
    only : list of str, optional
        Number prefixes (``["01", "03"]``) or stems to run; default all.
    contents : str
        Course-map link for the navigation cells.
    stamp : bool
        Update each header's "Last verified" line.
    timeout_s : int, optional
        Per-cell execution timeout.

    Returns
    -------
    dict
        ``{stem: runtime_s}`` of the notebooks executed.
    """
    import papermill

    folder = Path(notebook_dir) if notebook_dir is not None else default_notebook_dir()
    paths = numbered_notebooks(folder)
    if only:
        chosen = [p for p in paths if p.stem in only or p.name[:2] in only]
        unknown = [o for o in only if not any(p.stem == o or p.name[:2] == o for p in paths)]
        if unknown:
            raise NotebookCheckError(f"--only {unknown}: no such notebooks in {folder}.")
        paths = chosen
    runtimes = {}
    for path in paths:
        print(f"Running {path.name} ...", flush=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / path.name
            try:
                papermill.execute_notebook(
                    str(path),
                    str(out),
                    cwd=str(folder),
                    progress_bar=False,
                    execution_timeout=timeout_s,
                )
            except papermill.PapermillExecutionError as exc:
                raise NotebookCheckError(
                    f"{path}: cell {exc.cell_index} failed ({exc.ename}: {exc.evalue}). "
                    "The committed notebook was left unchanged; fix the cell or its helper and rerun."
                ) from exc
            executed = read_notebook(out)
        runtime = executed.metadata.get("papermill", {}).get("duration") or (
            time.perf_counter() - start
        )
        runtimes[path.stem] = float(runtime)
        executed = strip_notebook(executed)
        if stamp:
            executed = stamp_header(executed, runtime_s=runtime)
        write_notebook(executed, path)
        print(f"  {path.name}: {runtime:.1f} s", flush=True)
    write_navigation(folder, contents)
    return runtimes


def write_navigation(
    notebook_dir: str | Path | None = None, contents: str = DEFAULT_CONTENTS
) -> list[Path]:
    """Write current navigation cells into every numbered notebook.

    Parameters
    ----------
    notebook_dir : str or Path, optional
    contents : str
        Course-map link.

    Returns
    -------
    list of Path
        The notebooks whose file changed.
    """
    paths = numbered_notebooks(notebook_dir)
    changed = []
    for path, source in navigation_sources(paths, contents).items():
        if write_notebook(with_navigation(read_notebook(path), source), path):
            changed.append(path)
    return changed


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    """Problems found per notebook by one or more checks."""

    problems: dict[str, list[str]] = field(default_factory=dict)

    def add(self, path: Path, check: str, items: list[str]) -> None:
        """Record ``items`` found by ``check`` in ``path``."""
        if items:
            self.problems.setdefault(str(path), []).extend(f"[{check}] {item}" for item in items)

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.problems

    def __str__(self) -> str:
        if self.ok:
            return "All notebooks pass."
        lines = []
        for path, items in self.problems.items():
            lines.append(f"{path}:")
            lines.extend(f"  - {item}" for item in items)
        return "\n".join(lines)


def check_notebooks(
    paths: list[Path] | None = None,
    notebook_dir: str | Path | None = None,
    checks: tuple[str, ...] = ("strip", "nav", "structure"),
    contents: str = DEFAULT_CONTENTS,
) -> CheckReport:
    """Run the read-only checks on notebooks.

    Parameters
    ----------
    paths : list of Path, optional
        Notebooks for the ``strip`` and ``structure`` checks; default all numbered ones.
    notebook_dir : str or Path, optional
        The course folder (navigation always looks at the whole course).
    checks : tuple of str
        Any of ``"strip"``, ``"nav"``, ``"structure"``.
    contents : str
        Course-map link expected in the navigation.

    Returns
    -------
    CheckReport
    """
    course = numbered_notebooks(notebook_dir)
    paths = [Path(p) for p in paths] if paths else course
    report = CheckReport()
    nav = navigation_sources(course, contents) if "nav" in checks else {}
    for path in paths:
        nb = read_notebook(path)
        if "strip" in checks:
            report.add(path, "strip", volatile_items(nb))
        if "nav" in checks and path in nav:
            report.add(path, "nav", navigation_problems(nb, nav[path]))
        if "structure" in checks:
            report.add(path, "structure", structure_problems(nb, path))
    return report


_HOW_TO_FIX = {
    "strip": "python -m galaxy_helpers.notebooks strip",
    "nav": "python -m galaxy_helpers.notebooks nav",
    "structure": "edit the notebook (layout: DEVELOPERS.md, 'Notebooks')",
}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m galaxy_helpers.notebooks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--notebook-dir", default=None, help="course notebooks folder (default: notebooks/)"
    )
    parser.add_argument(
        "--contents", default=DEFAULT_CONTENTS, help="course-map link in navigation cells"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_strip = sub.add_parser("strip", help="remove volatile metadata, keep outputs")
    p_strip.add_argument(
        "--check", action="store_true", help="only report; exit 1 if anything would change"
    )
    p_strip.add_argument("paths", nargs="*", type=Path)
    p_nav = sub.add_parser("nav", help="write the navigation cells")
    p_nav.add_argument("--check", action="store_true", help="only report; exit 1 if out of date")
    p_struct = sub.add_parser("check-structure", help="check the workshop layout")
    p_struct.add_argument("paths", nargs="*", type=Path)
    p_regen = sub.add_parser("regenerate", help="execute notebooks in place, then strip + nav")
    p_regen.add_argument("--only", nargs="+", help="number prefixes or stems, e.g. 01 03")
    p_regen.add_argument(
        "--no-stamp", action="store_true", help="leave the 'Last verified' lines alone"
    )
    sub.add_parser("check", help="strip --check, nav --check and check-structure together")
    args = parser.parse_args(argv)

    try:
        if args.command == "strip" and not args.check:
            paths = args.paths or numbered_notebooks(args.notebook_dir)
            for path in paths:
                if write_notebook(strip_notebook(read_notebook(path)), path):
                    print(f"stripped {path}")
            return 0
        if args.command == "nav" and not args.check:
            for path in write_navigation(args.notebook_dir, args.contents):
                print(f"navigation written to {path}")
            return 0
        if args.command == "regenerate":
            runtimes = regenerate(
                args.notebook_dir, args.only, args.contents, stamp=not args.no_stamp
            )
            total = sum(runtimes.values())
            print(f"Regenerated {len(runtimes)} notebooks in {total:.0f} s of execution.")
            return 0
        checks = {"strip": ("strip",), "nav": ("nav",), "check-structure": ("structure",)}.get(
            args.command, ("strip", "nav", "structure")
        )
        report = check_notebooks(
            getattr(args, "paths", None), args.notebook_dir, checks, args.contents
        )
    except (NotebookCheckError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    if not report.ok:
        fixes = "; ".join(f"{c}: {_HOW_TO_FIX[c]}" for c in checks)
        print(f"To fix -- {fixes}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

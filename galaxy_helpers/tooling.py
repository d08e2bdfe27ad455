"""Tools that keep the committed notebooks tidy: strip, navigation, layout checks, header stamp.

The notebooks are committed *with* a quick-profile run's outputs (a reader sees every figure
without running anything); the command line and the runner are in :mod:`galaxy_helpers.notebooks`.

>>> from galaxy_helpers import tooling
>>> report = tooling.check_notebooks(checks=("nav",))  # {} when every navigation cell is current
"""

from __future__ import annotations

import copy
import datetime as _dt
import html
import importlib.metadata
import platform
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import nbformat

from .core import write_text

#: nbstripout's default keys, then papermill bookkeeping, view state and the Python version.
STRIP_KEYS = (
    *("metadata.signature", "metadata.widgets", "cell.metadata.collapsed"),
    *("cell.metadata.ExecuteTime", "cell.metadata.execution", "cell.metadata.heading_collapsed"),
    *("cell.metadata.hidden", "cell.metadata.scrolled"),
    *("metadata.papermill", "metadata.execution", "metadata.vscode", "metadata.colab"),
    *("metadata.language_info.version", "cell.metadata.papermill", "cell.metadata.trusted"),
)
#: The kernelspec every committed notebook carries (any other name is machine-specific).
CANONICAL_KERNELSPEC = dict(display_name="Python 3 (ipykernel)", language="python", name="python3")
#: A widget view's output: it points at a random model id, meaningless once widget state is gone.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
#: A tqdm progress line: "40%|####      | 4/10 [00:01<00:02, 3.1it/s]" or "12it [00:01, 9.9it/s]".
_TQDM_LINE = re.compile(r"(\d+%\|.*\|\s*[\d.]+[kMG]?/[\d.]+[kMG]?\s*\[|^\s*[\d.]+[kMG]?it \[)")
_NOTEBOOK_NAME = re.compile(r"^(\d\d)_[A-Za-z0-9_\-]+\.ipynb$")
_SECTION = re.compile(r"^##\s+(\d+)\.\s+\S", re.MULTILINE)
NAV_MARKER = (
    "<!-- navigation: written by `python -m galaxy_helpers.notebooks nav`; edits are lost -->"
)
NAV_IDS = ("navigation-top", "navigation-bottom")
DEFAULT_CONTENTS = "../README.md#course-map"
#: Packages named on the "Last verified" line of every header.
STAMP_PACKAGES = ("numpy", "torch", "timm", "scikit-learn", "matplotlib")


class NotebookCheckError(ValueError):
    """A notebook breaks one of the course's notebook contracts."""


def default_notebook_dir() -> Path:
    """The course's ``notebooks/`` folder: beside the package in a checkout, else ./notebooks."""
    beside_package = Path(__file__).resolve().parents[1] / "notebooks"
    return beside_package if beside_package.is_dir() else Path.cwd() / "notebooks"


def numbered_notebooks(
    notebook_dir: str | Path | None = None, only: Iterable[str] | None = None
) -> list[Path]:
    """The numbered notebooks ``NN_short_name.ipynb`` of a folder, in course order.

    Parameters
    ----------
    notebook_dir : default :func:`default_notebook_dir`.
    only : keep the notebooks whose number (``"01"``, ``"1"``), stem or file name is listed.

    Returns
    -------
    list of Path
    """
    folder = Path(notebook_dir) if notebook_dir is not None else default_notebook_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"notebook folder {folder} does not exist; run from the repository root or pass "
            "--notebook-dir"
        )
    found = sorted(p for p in folder.iterdir() if _NOTEBOOK_NAME.match(p.name))
    wanted = [str(w).strip() for w in only or () if str(w).strip()]

    def chosen(path: Path, w: str) -> bool:
        return (w.isdigit() and int(w) == int(path.name[:2])) or w in (path.stem, path.name)

    unknown = [w for w in wanted if not any(chosen(p, w) for p in found)]
    if unknown:
        names = ", ".join(p.name for p in found) or "none"
        raise ValueError(f"--only {' '.join(unknown)}: no such notebook in {folder} ({names})")
    return [p for p in found if not wanted or any(chosen(p, w) for w in wanted)]


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Read a notebook as nbformat 4, with an error naming the file when it is not one."""
    try:
        return nbformat.read(Path(path), as_version=4)
    except FileNotFoundError:
        raise
    except Exception as exc:  # nbformat raises several unrelated types for bad JSON
        raise NotebookCheckError(f"{path}: not a readable Jupyter notebook ({exc}).") from exc


def write_notebook(nb: nbformat.NotebookNode, path: str | Path) -> bool:
    """Write a notebook as Jupyter does, atomically, when its text changes (then True)."""
    path, text = Path(path), nbformat.writes(nb, version=4) + "\n"
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


def _cell_label(index: int, cell) -> str:
    first = cell.get("source", "").strip().splitlines()
    return f"cell {index} ({cell.cell_type}, {first[0][:50] if first else '(empty)'!r})"


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _join(text) -> str:
    return "".join(text) if isinstance(text, list) else str(text)


def clean_outputs(outputs: list) -> tuple[list, list[str]]:
    """Drop progress bars and widget model ids (they change from run to run) from outputs.

    The test suite cleans nbval's fresh outputs the same way before they meet the stored ones.

    Returns
    -------
    (kept outputs, what was removed); the given list is not modified.
    """
    kept, removed = [], []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream" and output.get("name") == "stderr":
            lines = re.split(r"(?<=\n)", _join(output.get("text", "")).replace("\r\n", "\n"))
            lines = [line.rsplit("\r", 1)[-1] for line in lines]  # a tqdm redraw's last state
            clean = [line for line in lines if not _TQDM_LINE.search(line)]
            if len(clean) != len(lines):
                removed.append("progress-bar text on stderr")
                if "".join(clean).strip():
                    output = copy.deepcopy(output)
                    output["text"] = "".join(clean)
                    kept.append(output)
                continue
        if kind in ("display_data", "execute_result") and WIDGET_MIME in output.get("data", {}):
            removed.append(f"output {WIDGET_MIME} (random widget model id)")
            rest = {k: v for k, v in output["data"].items() if k != WIDGET_MIME}
            plain = [s for s in re.split(r"[\r\n]", _join(rest.get("text/plain", ""))) if s.strip()]
            if not rest or (plain and all(_TQDM_LINE.search(s) for s in plain)):
                continue
            output = copy.deepcopy(output)
            output["data"] = rest
        kept.append(output)
    return kept, removed


def strip_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of a notebook without volatile metadata; outputs and execution counts are kept.

    nbstripout (``--keep-output --keep-count --keep-id``, :data:`STRIP_KEYS`, no papermill
    error-marker cells), then a canonical kernelspec, no empty tag lists, :func:`clean_outputs`.
    """
    from nbstripout import strip_output

    nb = strip_output(
        copy.deepcopy(nb),
        keep_output=True,
        keep_count=True,  # nbval compares only cells that have an execution count
        keep_id=True,
        extra_keys=list(STRIP_KEYS),
        drop_tagged_cells=[PAPERMILL_ERROR_TAG],
    )
    if "kernelspec" in nb.metadata:
        nb.metadata["kernelspec"] = dict(CANONICAL_KERNELSPEC)
    for cell in nb.cells:
        if "tags" in cell.get("metadata", {}) and not cell.metadata.tags:
            del cell.metadata["tags"]
        if cell.cell_type == "code":
            cell["outputs"], _ = clean_outputs(cell.get("outputs", []))
    return nb


def _changed_keys(old: Mapping, new: Mapping, prefix: str) -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def volatile_items(nb: nbformat.NotebookNode) -> list[str]:
    """What :func:`strip_notebook` would remove, one line per item (empty when clean).

    E.g. ``"cell 4 (code, 'x = 1'): metadata.execution"``.
    """
    clean = strip_notebook(nb)
    problems = [f"notebook {k}" for k in _changed_keys(nb.metadata, clean.metadata, "metadata.")]
    kept = iter(clean.cells)
    for index, cell in enumerate(nb.cells):
        label = _cell_label(index, cell)
        if PAPERMILL_ERROR_TAG in _tags(cell):
            problems.append(f"{label}: papermill error-marker cell")
            continue
        changed = _changed_keys(cell.get("metadata", {}), next(kept).metadata, "metadata.")
        problems += [f"{label}: {key}" for key in changed]
        if cell.cell_type == "code":
            problems += [f"{label}: {item}" for item in clean_outputs(cell.outputs)[1]]
    return problems


def _title(nb: nbformat.NotebookNode, path: str | Path) -> str:
    """The first ``# `` heading of a notebook, else a title made from its file name."""
    for cell in nb.cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else ():
            if line.startswith("# "):
                return line[2:].strip()
    number, _, rest = Path(path).stem.partition("_")
    return f"{number}. {rest.replace('_', ' ').capitalize()}"


def _navigation_markdown(previous, following, contents: str = DEFAULT_CONTENTS) -> str:
    """``<- previous | Course map | next ->``; previous/following are (title, file name)."""
    parts = [f"[&larr; {html.escape(previous[0], quote=False)}]({previous[1]})"] if previous else []
    parts.append(f"[Course map]({contents})")
    if following is not None:
        parts.append(f"[{html.escape(following[0], quote=False)} &rarr;]({following[1]})")
    return NAV_MARKER + "\n\n" + " | ".join(parts)


def _header_index(nb) -> int | None:
    return next((i for i, cell in enumerate(nb.cells) if "header" in _tags(cell)), None)


def _with_navigation(nb: nbformat.NotebookNode, source: str) -> nbformat.NotebookNode:
    """A copy with exactly two navigation cells holding ``source``: after the header (at the
    top when there is none) and at the very end; older ones are replaced. Idempotent."""
    nb = copy.deepcopy(nb)
    nb.cells = [cell for cell in nb.cells if "navigation" not in _tags(cell)]
    cells = []
    for cell_id in NAV_IDS:
        cell = nbformat.v4.new_markdown_cell(source, metadata={"tags": ["navigation"]})
        if int(nb.get("nbformat_minor", 5)) >= 5:
            cell["id"] = cell_id  # fixed ids keep diffs quiet
        else:
            cell.pop("id", None)  # nbformat 4.4 and older have no cell ids
        cells.append(cell)
    header = _header_index(nb)
    nb.cells.insert(0 if header is None else header + 1, cells[0])
    nb.cells.append(cells[1])
    return nb


def _navigation_sources(paths: list[Path], contents: str = DEFAULT_CONTENTS) -> dict[Path, str]:
    """``{path: navigation markdown}`` for the notebooks of an ordered course."""
    titles = [(_title(read_notebook(p), p), p.name) for p in paths]
    before, after = [None, *titles[:-1]], [*titles[1:], None]
    pairs = zip(paths, before, after, strict=False)  # no notebooks: before == after == [None]
    return {p: _navigation_markdown(b, a, contents) for p, b, a in pairs}


def _navigation_problems(nb: nbformat.NotebookNode, source: str) -> list[str]:
    """How a notebook's navigation cells differ from ``source``; empty when current."""
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
    stale = [i for i, c in nav if c.source != source]
    problems += [f"cell {i}: navigation links are out of date" for i in stale]
    expected = [c.source for c in _with_navigation(nb, source).cells]
    if not problems and expected != [c.source for c in nb.cells]:
        problems.append("navigation cells differ from what `nav` writes")
    return problems


def write_navigation(
    notebook_dir: str | Path | None = None, contents: str = DEFAULT_CONTENTS
) -> list[Path]:
    """Write current navigation cells into every numbered notebook; returns those changed."""
    sources = _navigation_sources(numbered_notebooks(notebook_dir), contents)
    return [
        p for p, s in sources.items() if write_notebook(_with_navigation(read_notebook(p), s), p)
    ]


def _bullets_after(text: str, label: str) -> int | None:
    """Count the bullet lines after the line that mentions ``label``; None when absent."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if label in line.lower():
            count = 0
            for following in lines[i + 1 :]:
                stripped = following.strip()
                if re.match(r"^([-*+]|\d+\.)\s+\S", stripped):
                    count += 1
                elif (stripped and count) or stripped.startswith(("#", "**")):
                    break
            return count
    return None


def header_problems(source: str) -> list[str]:
    """What the header's markdown lacks (DEVELOPERS.md "Notebooks" item 1); empty when none."""
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
    paragraphs = [" ".join(b.split("\n")) for b in re.split(r"\n\s*\n", source) if b.strip()]
    runtime = [p.lower() for p in paragraphs if "runtime" in p.lower()]
    if not runtime:
        problems.append("no expected 'runtime' paragraph")
    elif not any("cpu" in p and "gpu" in p for p in runtime):
        problems.append("the runtime paragraph must give both a laptop CPU and a GPU time")
    elif not any(re.search(r"\d s<!-- m:\d\d:runtime_s -->", p) for p in runtime):
        problems.append(
            "the runtime paragraph must quote the course run's seconds as a metric marker "
            "('73 s<!-- m:02:runtime_s -->', filled by `make notebooks`), not a typed number"
        )
    if "data used" not in text:
        problems.append("no 'Data used'")
    verified = [p for p in paragraphs if "last verified" in p.lower()]
    if not verified:
        problems.append("no 'Last verified' line")
    elif not re.search(r"\b\d{4}-\d{2}-\d{2}\b", verified[0]):
        problems.append("the 'Last verified' line has no YYYY-MM-DD date")
    if verified and not re.search(r"[A-Za-z][\w-]*\s+\d+\.\d+", verified[0]):
        problems.append(
            "the 'Last verified' line names no package versions (e.g. 'torch 2.4.1'); "
            "`python -m galaxy_helpers.notebooks regenerate` writes them"
        )
    return problems


def structure_problems(nb: nbformat.NotebookNode, path: str | Path) -> list[str]:
    """Check a notebook against the workshop layout of DEVELOPERS.md.

    Header cell first and complete; one code cell tagged ``parameters`` setting ``output_dir``
    and ``seed``, followed by ``start_notebook("<file stem>"``; sections ``## 1. ...`` counting
    up from 1 (at least two); an exercise with a folded solution; ``## Key points``; the last
    code cell calls ``write_metrics(``.

    Parameters
    ----------
    nb : the notebook.
    path : its file (the stem is the name ``start_notebook`` must use).

    Returns
    -------
    list of str, one message per problem naming the cell; empty when all is well.
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

    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    params = [i for i, c in code if "parameters" in _tags(c)]
    tagged = [
        i for i, c in enumerate(nb.cells) if c.cell_type != "code" and "parameters" in _tags(c)
    ]
    if tagged:
        problems.append(f"cells {tagged} are tagged 'parameters' but are not code cells")
    if len(params) != 1:
        problems.append(
            f"{len(params)} code cells tagged 'parameters' (cells {params}); expected exactly 1"
        )
    else:
        source = nb.cells[params[0]].source
        for name in ("output_dir", "seed"):
            if not re.search(rf"^{name}\s*=", source, re.MULTILINE):
                problems.append(f"parameters cell {params[0]} does not set '{name}'")
        for n, line in enumerate(source.splitlines(), 1):
            # papermill skips such a line when it reads the cell (a warning on every run that
            # injects parameters, and "unknown parameter" when it is given): one "=" per line
            if not line.lstrip().startswith("#") and line.count("=") > 1:
                problems.append(
                    f"parameters cell {params[0]}, line {n} ({line.strip()!r}) has more than one "
                    "'=', which papermill cannot read; write the value without '=' (e.g. a "
                    "query with 'in [...]' instead of '==', no '=' in the comment)"
                )
        after = [i for i, _ in code if i > params[0]]
        pattern = rf"start_notebook\(\s*[\"']{re.escape(stem)}[\"']"
        if not after or not re.search(pattern, nb.cells[after[0]].source):
            problems.append(
                f"the code cell after the parameters ({f'cell {after[0]}' if after else 'no code cell'})"
                f' must call course.start_notebook("{stem}", output_dir=output_dir)'
            )

    markdown = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"]
    numbers = [(i, int(m)) for i, c in markdown for m in _SECTION.findall(c.source)]
    wrong = [(e, i, n) for e, (i, n) in enumerate(numbers, start=1) if n != e][:1]
    if len(numbers) < 2:
        problems.append("fewer than two numbered sections ('## 1. Set up', '## 2. ...')")
    else:
        problems += [f"cell {i}: section '## {n}.' should be '## {e}.'" for e, i, n in wrong]

    exercise = re.compile(r"(^#+[^\n]*\bexercise|\*\*[^*\n]*\bexercise)", re.I | re.M)
    exercises = [i for i, c in markdown if "header" not in _tags(c) and exercise.search(c.source)]
    solution = re.compile(r"<details>\s*<summary>\s*(<b>)?\s*solution", re.IGNORECASE)
    solutions = [i for i, c in markdown if solution.search(c.source) and "</details>" in c.source]
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


def check_notebooks(
    paths: list[Path] | None = None,
    notebook_dir: str | Path | None = None,
    checks: tuple[str, ...] = ("strip", "nav", "structure"),
    contents: str = DEFAULT_CONTENTS,
) -> dict[str, list[str]]:
    """Run the read-only checks (``"strip"``, ``"nav"``, ``"structure"``) on notebooks.

    Parameters
    ----------
    paths : notebooks for the strip and structure checks; default all numbered ones.
    notebook_dir : the course folder (navigation always looks at the whole course).
    checks, contents : which checks; the course-map link expected in the navigation.

    Returns
    -------
    dict, ``{notebook path: ["[check] problem", ...]}``; empty when all pass.
    """
    course = numbered_notebooks(notebook_dir)
    nav = _navigation_sources(course, contents) if "nav" in checks else {}
    report = {}
    for path in [Path(p) for p in paths] if paths else course:
        nb = read_notebook(path)
        found = {
            "strip": volatile_items(nb) if "strip" in checks else [],
            "nav": _navigation_problems(nb, nav[path]) if path in nav else [],
            "structure": structure_problems(nb, path) if "structure" in checks else [],
        }
        if items := [f"[{check}] {item}" for check, got in found.items() for item in got]:
            report[str(path)] = items
    return report


def _package_versions(names: tuple[str, ...] = STAMP_PACKAGES) -> str:
    """``"Python 3.11.9, numpy 2.1.0, ..."`` (packages that are not installed are skipped)."""
    parts = [f"Python {platform.python_version()}"]
    for name in names:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


def stamp_header(nb: nbformat.NotebookNode, today: _dt.date | None = None) -> nbformat.NotebookNode:
    """A copy whose header's "Last verified" line states the date and package versions.

    The line keeps its label (up to the first ``:``) and becomes ``YYYY-MM-DD with Python x,
    numpy y, ...`` (wrapped continuation lines go). The notebook's runtime is not stamped here:
    the header quotes it once, as a metric marker (``73 s<!-- m:02:runtime_s -->``, see
    :mod:`galaxy_helpers.quotes`) that the same regeneration run fills.

    Parameters
    ----------
    nb : returned unchanged when it has no header or no such line.
    today : defaults to today (UTC).
    """
    nb = copy.deepcopy(nb)
    index = _header_index(nb)
    if index is None:
        return nb
    value = f"{(today or _dt.datetime.now(_dt.UTC).date()).isoformat()} with {_package_versions()}"
    lines = nb.cells[index].source.splitlines()
    for i, line in enumerate(lines):
        if "last verified" in line.lower() and ":" in line:
            label = line.partition(":")[0]
            closing = "**" if label.lstrip().startswith("**") and not label.endswith("**") else ""
            ends = [not s.strip() or s.lstrip().startswith(("**", "#", "-", "*")) for s in lines]
            end = next((j for j in range(i + 1, len(lines)) if ends[j]), len(lines))
            lines[i:end] = [f"{label}:{closing} {value}"]
            break
    nb.cells[index].source = "\n".join(lines)
    return nb

"""Stored outputs stay true: nbval compares the committed notebooks' checked cells.

The notebooks are committed with the outputs of a quick-profile run. Cells whose output is
deterministic (schema tables, dataset sizes, seeded summaries) carry ``# NBVAL_CHECK_OUTPUT``;
``pytest --nbval-lax`` (pyproject.toml's addopts) executes every notebook and fails a checked
cell whose fresh output differs, after the replacements of tests/nbval_sanitize.cfg. When that
fails, either the code changed on purpose (run ``make notebooks`` and commit the regenerated
notebooks) or a helper changed a result it should not have.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from nbval.plugin import get_sanitize_patterns

from galaxy_helpers import tooling

REPO = Path(__file__).resolve().parents[1]
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
COMMITTED = tooling.numbered_notebooks(REPO / "notebooks")
CHECKED = re.compile(r"^\s*#\s*NBVAL_CHECK_OUTPUT\s*$", re.MULTILINE)


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_notebook_marks_deterministic_cells_to_check(path):
    checked = [c for c in tooling.read_notebook(path).cells if CHECKED.search(c.source)]
    assert checked, (
        f"{path.name} has no cell marked '# NBVAL_CHECK_OUTPUT'; mark at least one cell whose "
        "output is deterministic (a schema table, a dataset size, a seeded summary)"
    )
    missing = [c.source.splitlines()[0] for c in checked if not c.get("outputs")]
    assert not missing, f"{path.name}: checked cells without stored outputs: {missing}"


STORED = (
    "wrote ../course_output/metrics/01_a.json {'n': 3, 'runtime_s': 12.5} <Obj at 0x7f3a2b1c0d90>\n"
)
FRESH = "wrote /tmp/course_output_x1/metrics/01_a.json {'n': 3, 'runtime_s': 9.01} <Obj at 0x55d0c0ffee00>"
CHANGED = FRESH.replace("'n': 3", "'n': 4")


def test_shipped_sanitize_rules_hide_paths_addresses_and_runtimes():
    patterns = get_sanitize_patterns(SANITIZE.read_text())
    assert len(patterns) == 3

    def sanitize(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    assert sanitize(STORED) == sanitize(FRESH + "\n")
    assert sanitize(STORED) != sanitize(CHANGED + "\n")


def _nbval(tmp_path: Path, printed: str) -> subprocess.CompletedProcess:
    """Run real nbval on a one-cell notebook whose stored output is STORED."""
    cell = new_code_cell(
        f"# NBVAL_CHECK_OUTPUT\nprint({printed!r})", outputs=[new_output("stream", text=STORED)]
    )
    cell.execution_count = 1
    nbformat.write(new_notebook(cells=[cell]), tmp_path / "01_a.ipynb")
    options = ["--nbval-lax", "--nbval-current-env", f"--nbval-sanitize-with={SANITIZE}"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", *options, "-p", "no:cacheprovider", "01_a.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_nbval_passes_a_sanitized_match_and_fails_a_changed_output(tmp_path):
    result = _nbval(tmp_path, FRESH)
    assert result.returncode == 0, result.stdout + result.stderr
    result = _nbval(tmp_path, CHANGED)
    assert result.returncode == 1 and "Cell outputs differ" in result.stdout, result.stdout


@pytest.mark.slow
def test_session_kernels_get_the_output_folder_and_lose_no_output_to_a_widget_flood(tmp_path):
    """tests/conftest.py's hooks: the kernel's $GALAXY_COURSE_OUTPUT, and the outputs of a cell
    that sends thousands of widget messages (nbval alone times out on this one)."""
    setup = new_code_cell(
        "import os\nimport ipywidgets as w\nfrom IPython.display import display\n"
        "from tqdm.auto import tqdm\nimage = w.Image(value=b'')\ndisplay(image)"
    )
    flood = new_code_cell(
        "# NBVAL_CHECK_OUTPUT\nfor i in tqdm(range(3000)):\n    image.value = os.urandom(20000)\n"
        "print(os.environ['GALAXY_COURSE_OUTPUT'])",
        outputs=[new_output("stream", text="../course_output\n")],
    )
    for count, cell in enumerate((setup, flood), start=1):
        cell.execution_count = count
    nbformat.write(new_notebook(cells=[setup, flood]), tmp_path / "01_flood.ipynb")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        + [str(tmp_path / "01_flood.ipynb"), str(Path(__file__).with_name("conftest.py"))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "GALAXY_COURSE_OUTPUT"},
    )
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout[-3000:]

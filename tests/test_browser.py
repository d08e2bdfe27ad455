"""Real-browser tests: the widgets work in a real JupyterLab, driven by headless Chromium.

Each test starts JupyterLab on a free localhost port (random token, isolated Jupyter state),
opens a notebook in Debian's Chromium through Playwright (nothing downloads a browser), runs
all cells from the Run menu, clicks a button in a widget and checks that the click reached the
kernel by reading a file the kernel wrote. A screenshot of the page goes to ``test-artifacts/``.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package (in the test extra); the tests skip, saying which is missing,
when either is absent. Select or deselect them with ``-m browser`` / ``-m "not browser"``.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from browser import lab
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
ANOMALY_NOTEBOOK = REPO / "notebooks" / "05_find_interesting_anomalies.ipynb"
VIEWPORT = {"width": 1400, "height": 1000}

MISSING = lab.missing_requirements()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"real-browser test cannot run: {MISSING}"),
]


def _wait_for_file(path: Path, timeout_s: float = 30.0, predicate=bool) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if predicate(text):
                return text
        time.sleep(0.25)
    return path.read_text() if path.exists() else ""


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=False)
    return target


def test_button_click_in_jupyterlab_reaches_the_kernel(tmp_path):
    """The harness itself: a one-button notebook whose callback writes a file."""
    root = tmp_path / "root"
    root.mkdir()
    clicks = tmp_path / "clicks.txt"
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Browser harness check"),
            new_code_cell(
                "import ipywidgets as widgets\n"
                f"clicks = {str(clicks)!r}\n"
                "def record(button):\n"
                "    with open(clicks, 'a') as handle:\n"
                "        handle.write(button.description + '\\n')\n"
                "button = widgets.Button(description='Score 4')\n"
                "button.add_class('galaxy-score-button')\n"
                "button.on_click(record)\n"
                "button"
            ),
        ]
    )
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nbformat.write(nb, root / "harness.ipynb")

    with lab.JupyterLabServer(root) as server, lab.chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        try:
            lab.open_notebook(page, server, "harness.ipynb")
            lab.run_all_cells(page)
            button = page.locator("button.galaxy-score-button")
            button.wait_for(state="visible", timeout=60_000)
            button.click()
            text = _wait_for_file(clicks)
        finally:
            shot = _screenshot(page, "browser_harness")
    assert text == "Score 4\n", (
        f"the click did not reach the kernel (screenshot {shot}); server log:\n{server.log_tail()}"
    )


# -------------------------------------------------------------------- notebook 05


def _parameter_names(nb) -> list[str]:
    cells = [
        c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])
    ]
    names = []
    for line in cells[0].source.splitlines() if cells else []:
        name, sep, _ = line.partition("=")
        if sep and name.strip().isidentifier():
            names.append(name.strip())
    return names


@pytest.mark.skipif(
    not ANOMALY_NOTEBOOK.exists(), reason=f"{ANOMALY_NOTEBOOK.name} is not in notebooks/ yet"
)
def test_anomaly_widget_label_reaches_the_label_file(tmp_path):
    """Open notebook 05, run it, click a 0..5 score button, find the label on disk."""
    from papermill.parameterize import parameterize_notebook

    root = lab.copy_tree(REPO / "notebooks", tmp_path / "notebooks")
    nb = nbformat.read(root / ANOMALY_NOTEBOOK.name, as_version=4)
    names = _parameter_names(nb)
    label_param = next((n for n in names if "label" in n and ("file" in n or "path" in n)), None)
    assert label_param, f"{ANOMALY_NOTEBOOK.name}: no label-file parameter among {names}"
    label_file = tmp_path / "labels.csv"
    params = {label_param: str(label_file), "output_dir": str(tmp_path / "course_output")}
    nb = parameterize_notebook(nb, {k: v for k, v in params.items() if k in names})
    for cell in nb.cells:  # open it as a reader would: no stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, root / ANOMALY_NOTEBOOK.name)

    with lab.JupyterLabServer(root) as server, lab.chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        try:
            lab.open_notebook(page, server, ANOMALY_NOTEBOOK.name)
            lab.run_all_cells(page, timeout_ms=400_000)
            errors = lab.cell_errors(page)
            assert not errors, "cells failed in JupyterLab:\n" + "\n---\n".join(errors)
            buttons = page.locator("button.galaxy-score-5")
            buttons.first.wait_for(state="visible", timeout=60_000)
            buttons.first.scroll_into_view_if_needed()
            before = label_file.read_text() if label_file.exists() else ""
            buttons.first.click()
            text = _wait_for_file(label_file, predicate=lambda t: t != before)
            buttons.first.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
        finally:
            shot = _screenshot(page, "browser_anomaly_widget")
    new = text[len(before) :]
    assert new.strip(), (
        f"no label reached {label_file} (screenshot {shot}); server log:\n{server.log_tail()}"
    )
    assert "5" in new, f"the new label record does not hold score 5: {new!r}"
    ARTIFACTS.joinpath("browser_anomaly_labels.txt").write_text(text)

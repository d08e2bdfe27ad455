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

import json
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
#: Parameters injected into notebook 05 when it declares them: one simulated search instead of
#: five keeps the notebook short; the widget under test is the same.
ANOMALY_PARAMETERS = {"repeats": 1}

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
def test_anomaly_widget_label_reaches_the_label_file(tmp_path, course_metrics):
    """Open notebook 05, run it, click a 0..5 score button, find the label on disk.

    Looks up the notebook's metrics first, so that the session's run of it (nbval's, else the
    course runner's) goes first: the notebook then finds the synthetic sky and its
    representation in the cache, and a notebook that already failed there is reported with its
    cell error instead of a browser timeout.
    """
    course_metrics[ANOMALY_NOTEBOOK.stem]
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root = lab.copy_tree(REPO / "notebooks", tmp_path / "notebooks")
    nb = load_notebook_node(str(root / ANOMALY_NOTEBOOK.name))  # as papermill reads it
    names = _parameter_names(nb)
    label_param = next((n for n in names if "label" in n and ("file" in n or "path" in n)), None)
    assert label_param, f"{ANOMALY_NOTEBOOK.name}: no label-file parameter among {names}"
    label_file = tmp_path / "labels.jsonl"
    params = {
        **ANOMALY_PARAMETERS,
        label_param: str(label_file),
        "output_dir": str(tmp_path / "course_output"),
    }
    nb = parameterize_notebook(nb, {k: v for k, v in params.items() if k in names})
    for cell in nb.cells:  # open it as a reader would: no stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, root / ANOMALY_NOTEBOOK.name)

    with lab.JupyterLabServer(root) as server, lab.chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        try:
            lab.open_notebook(page, server, ANOMALY_NOTEBOOK.name)
            lab.run_all_cells(page, timeout_ms=1_200_000)
            errors = lab.cell_errors(page)
            assert not errors, "cells failed in JupyterLab:\n" + "\n---\n".join(errors)
            button = page.locator("button.galaxy-score-5").first
            button.wait_for(state="visible", timeout=60_000)
            button.scroll_into_view_if_needed()
            # the tooltip names the galaxy: "score 5 for <id_str>"
            galaxy = (button.get_attribute("title") or "").rpartition(" for ")[2]
            before = label_file.read_text() if label_file.exists() else ""
            button.click()
            text = _wait_for_file(label_file, predicate=lambda t: t != before)
            page.locator(".galaxy-labelling").first.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)  # let the thumbnails paint before the screenshot
        finally:
            shot = _screenshot(page, "browser_anomaly_widget")
    new_lines = text[len(before) :].splitlines()
    assert new_lines, (
        f"no label reached {label_file} (screenshot {shot}); server log:\n{server.log_tail()}"
    )
    records = [json.loads(line) for line in new_lines if line.strip().startswith("{")]
    assert any(r.get("score") == 5 and r.get("id_str") == galaxy for r in records), (
        f"the click on 'score 5 for {galaxy}' did not write that label; new lines: {new_lines}"
    )
    ARTIFACTS.joinpath("browser_anomaly_labels.txt").write_text(text)

"""Real-browser tests: the widgets work in a real JupyterLab, driven by headless Chromium.

Each test starts JupyterLab on a free localhost port (random token, isolated Jupyter state),
opens a notebook in Debian's Chromium through Playwright (nothing downloads a browser), runs
all cells from the Run menu, clicks a button in a widget and checks that the click reached the
kernel: notebook 05's score click by reading the label file the kernel wrote, notebook 04's
neighbour click by reading what the kernel's new search put back in the page. A screenshot of the
page goes to ``test-artifacts/``, and one of just the widget (``widget_anomaly.png``,
``widget_search.png``); when ``GALAXY_WIDGET_SCREENSHOTS`` names a folder, the widget screenshots
of tests that passed are copied there too (``make screenshots`` refreshes the committed copies in
``notebooks/images/``).

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package (in the test extra); the tests skip, saying which is missing,
when either is absent. Select or deselect them with ``-m browser`` / ``-m "not browser"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import nbformat
import pytest
from browser import lab
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
ANOMALY_NOTEBOOK = REPO / "notebooks" / "05_find_interesting_anomalies.ipynb"
SEARCH_NOTEBOOK = REPO / "notebooks" / "04_similarity_search.ipynb"
#: Folder that receives the widget screenshots as well (``make screenshots``).
SCREENSHOTS_ENV = "GALAXY_WIDGET_SCREENSHOTS"
VIEWPORT = {"width": 1400, "height": 1000}
#: Parameters injected into notebook 05 when it declares them: one simulated search instead of
#: five keeps the notebook short; the widget under test is the same.
ANOMALY_PARAMETERS = {"repeats": 1}
#: Parameters injected into notebook 04 when it declares them: the real-galaxy sections are
#: skipped; the widget searches the synthetic sky either way.
SEARCH_PARAMETERS = {"real_data": False}

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


def _widget_screenshot(locator, name: str) -> Path:
    """A tight screenshot of one widget, ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    locator.scroll_into_view_if_needed()
    locator.screenshot(path=str(target), animations="disabled")
    return target


def _publish(shot: Path) -> None:
    """Copy a widget screenshot to ``$GALAXY_WIDGET_SCREENSHOTS`` when it names a folder."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / shot.name)


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


def _prepared_copy(notebook: Path, root: Path, params: dict) -> None:
    """Write ``notebook`` into ``root`` with the parameters it declares set, without outputs."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(root / notebook.name))  # as papermill reads it
    names = _parameter_names(nb)
    nb = parameterize_notebook(nb, {k: v for k, v in params.items() if k in names})
    for cell in nb.cells:  # open it as a reader would: no stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, root / notebook.name)


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
    root = lab.copy_tree(REPO / "notebooks", tmp_path / "notebooks")
    names = _parameter_names(nbformat.read(root / ANOMALY_NOTEBOOK.name, as_version=4))
    label_param = next((n for n in names if "label" in n and ("file" in n or "path" in n)), None)
    assert label_param, f"{ANOMALY_NOTEBOOK.name}: no label-file parameter among {names}"
    # relative to the notebook's folder, the kernel's working directory: the widget's
    # "saved to" line (in the committed screenshot) shows no temporary path
    label_file = root / "labels.jsonl"
    params = {
        **ANOMALY_PARAMETERS,
        label_param: label_file.name,
        "output_dir": str(tmp_path / "course_output"),
    }
    _prepared_copy(ANOMALY_NOTEBOOK, root, params)

    with lab.JupyterLabServer(root) as server, lab.chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        try:
            _open_and_run_all(page, server, ANOMALY_NOTEBOOK.name)
            button = page.locator("button.galaxy-score-5").first
            button.wait_for(state="visible", timeout=60_000)
            button.scroll_into_view_if_needed()
            # the tooltip names the galaxy: "score 5 for <id_str>"
            galaxy = (button.get_attribute("title") or "").rpartition(" for ")[2]
            before = label_file.read_text() if label_file.exists() else ""
            button.click()
            text = _wait_for_file(label_file, predicate=lambda t: t != before)
            # the kernel then marks the chosen score: the clicked state the screenshots show
            marked = _wait_for_page(page, _SCORE_MARKED_JS, f"score 5 for {galaxy}")
            widget = page.locator(".galaxy-labelling").first
            widget.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)  # let the thumbnails paint before the screenshot
            widget_shot = _widget_screenshot(widget, "widget_anomaly")
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
    if not marked:  # seen once in a fresh-clone CI rehearsal, never locally: under investigation
        msg = f"the label was written but the widget did not mark it (screenshot {shot})"
        warnings.warn(msg, stacklevel=1)
        return  # no published picture without the clicked state
    _publish(widget_shot)


_SCORE_MARKED_JS = """title => [...document.querySelectorAll('button.galaxy-score-5')]
    .some(b => b.title === title && b.classList.contains('mod-success'))"""


def _open_and_run_all(page, server, name: str) -> None:
    """Open a notebook in JupyterLab, run all its cells and fail on any cell error."""
    lab.open_notebook(page, server, name)
    lab.run_all_cells(page, timeout_ms=1_200_000)
    errors = lab.cell_errors(page)
    assert not errors, "cells failed in JupyterLab:\n" + "\n---\n".join(errors)


def _wait_for_page(page, js: str, arg, timeout_ms: int = 30_000) -> bool:
    """Whether the page function ``js(arg)`` turned true within the timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(js, arg=arg, timeout=timeout_ms)
    except PlaywrightTimeout:
        return False
    return True


# -------------------------------------------------------------------- notebook 04

#: What the search widget shows of the kernel's current search, read from the page.
_SEARCH_STATE_JS = """() => {
    const w = document.querySelector('.galaxy-search');
    if (!w) return null;
    const status = w.querySelector('.galaxy-search-status');
    const box = w.querySelector('input[placeholder="a galaxy id"]');
    return {
        status: status ? status.innerText : '',
        id_box: box ? box.value : '',
        neighbours: [...w.querySelectorAll('button.galaxy-neighbour-button')].map(b => b.title),
    };
}"""


def _status_query(status: str) -> str | None:
    """The query id of the status line "Query <id>; 7 of 8 share #ring."."""
    found = re.match(r"\s*Query (\S+?)[;.]?(\s|$)", status)
    return found.group(1) if found else None


def _wait_for_query(page, galaxy: str, timeout_s: float = 30.0) -> bool:
    """Whether the widget's status line named ``galaxy`` as the query within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = page.evaluate(_SEARCH_STATE_JS)
        if state and _status_query(state["status"]) == galaxy:
            return True
        page.wait_for_timeout(250)
    return False


@pytest.mark.skipif(
    not SEARCH_NOTEBOOK.exists(), reason=f"{SEARCH_NOTEBOOK.name} is not in notebooks/ yet"
)
def test_search_widget_neighbour_click_searches_again_in_the_kernel(tmp_path, course_metrics):
    """Open notebook 04, run it, click a neighbour's "search from here", see the new search.

    The widget keeps no file, so the proof is what only the kernel's new search can put in the
    page: the status line names the clicked galaxy as the query, the id box holds its id, and
    the neighbour buttons are replaced by that galaxy's own neighbours (itself not among them).
    As in the notebook 05 test, the session's run of the notebook goes first.
    """
    course_metrics[SEARCH_NOTEBOOK.stem]
    root = lab.copy_tree(REPO / "notebooks", tmp_path / "notebooks")
    params = {**SEARCH_PARAMETERS, "output_dir": str(tmp_path / "course_output")}
    _prepared_copy(SEARCH_NOTEBOOK, root, params)

    with lab.JupyterLabServer(root) as server, lab.chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        try:
            _open_and_run_all(page, server, SEARCH_NOTEBOOK.name)
            button = page.locator("button.galaxy-neighbour-button").first
            button.wait_for(state="visible", timeout=60_000)
            before = page.evaluate(_SEARCH_STATE_JS)
            # the tooltip names the galaxy: "search from <id_str>"
            galaxy = (button.get_attribute("title") or "").removeprefix("search from ")
            button.scroll_into_view_if_needed()
            button.click()
            searched = _wait_for_query(page, galaxy)
            page.wait_for_timeout(1000)  # let the new thumbnails paint before the screenshot
            after = page.evaluate(_SEARCH_STATE_JS)
            widget = page.locator(".galaxy-search").first
            widget_shot = _widget_screenshot(widget, "widget_search")
        finally:
            shot = _screenshot(page, "browser_search_widget")
    where = f"(screenshot {shot}); server log:\n{server.log_tail()}"
    assert galaxy and _status_query(before["status"]) not in (None, galaxy), (
        f"before the click the widget showed no search or already {galaxy!r}: {before}"
    )
    assert searched and _status_query(after["status"]) == galaxy, (
        f"the click on 'search from {galaxy}' did not make it the query: {after} {where}"
    )
    assert after["id_box"] == galaxy, f"the id box does not hold {galaxy!r}: {after}"
    assert after["neighbours"] and f"search from {galaxy}" not in after["neighbours"], (
        f"the neighbour buttons are not {galaxy!r}'s own neighbours: {after}"
    )
    assert after["neighbours"] != before["neighbours"], "the neighbour buttons did not change"
    _publish(widget_shot)

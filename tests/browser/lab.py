"""Start a throwaway JupyterLab and drive it with headless Chromium (Debian's, via Playwright).

Nothing here downloads a browser: Playwright's Python package is pointed at
``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` does it). The server runs on a
free localhost port with a random token, with its own config, settings, workspace and runtime
folders, so it neither reads nor writes the user's Jupyter state.

Typical use (see tests/test_browser.py)::

    with JupyterLabServer(root) as lab, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_notebook(page, lab, "05_find_interesting_anomalies.ipynb")
        run_all_cells(page)
        page.locator(".galaxy-score-5").first.click()
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def missing_requirements() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does this in CI)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright is missing (pip install playwright; never `playwright install`)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    return None


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterLabServer:
    """A JupyterLab server for one test, on localhost, token-protected, isolated state.

    Parameters
    ----------
    root : Path
        Folder the server shows (the notebook to open must be inside it).
    log_path : Path, optional
        Where the server's output goes (default ``<root>/../jupyterlab.log``).
    start_timeout_s : float
        How long to wait for the server to answer.
    """

    def __init__(self, root: Path, log_path: Path | None = None, start_timeout_s: float = 90.0):
        self.root = Path(root).resolve()
        self.log_path = Path(log_path) if log_path else self.root.parent / "jupyterlab.log"
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """URL of a JupyterLab page, with the token."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"

    def _environment(self) -> dict[str, str]:
        state = self.root.parent / "jupyter-state"
        settings = state / "lab-settings"
        # No news or update checks: they open a pop-up and reach for the network.
        notification = settings / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        # Render every cell (no virtual scrolling), so "all cells finished" can be read from
        # the page and every widget is in the DOM.
        tracker = settings / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True, exist_ok=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(state / "config"),
            JUPYTER_RUNTIME_DIR=str(state / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"),
            JUPYTER_PLATFORM_DIRS="1",
            MPLBACKEND=env.get("MPLBACKEND", ""),  # keep the kernel's default inline backend
        )
        if not env["MPLBACKEND"]:
            env.pop("MPLBACKEND")
        return env

    def start(self) -> JupyterLabServer:
        """Start the server and wait until its API answers."""
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.disable_check_xsrf=False",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--ServerApp.terminals_enabled=False",
            # lets the test read cell execution states from the notebook model, not the DOM
            "--LabApp.expose_app_in_browser=True",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
            command.append("--allow-root")
        self.process = subprocess.Popen(
            command,
            cwd=self.root,
            env=self._environment(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with status {self.process.returncode}; log: "
                    f"{self.log_path}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(
            f"JupyterLab did not answer in {self.start_timeout_s:.0f} s; log: {self.log_path}"
        )

    def log_tail(self, n: int = 40) -> str:
        """The last lines of the server log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        """Stop the server (and with it its kernels)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> JupyterLabServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def chromium() -> Iterator:
    """Headless Debian Chromium through Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def dismiss_dialogs(page, timeout_ms: int = 1500) -> list[str]:
    """Close the pop-ups JupyterLab may show: kernel choice (accept the default), news, others.

    Returns
    -------
    list of str
        What was dismissed (for the test log).
    """
    dismissed = []
    kernel_dialog = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    with contextlib.suppress(Exception):
        kernel_dialog.wait_for(state="visible", timeout=timeout_ms)
    if kernel_dialog.count():
        kernel_dialog.locator("button.jp-mod-accept").first.click()
        dismissed.append("kernel-choice dialog")
    # "Would you like to receive official Jupyter news?" toast
    news = page.locator(".jp-Notification-Toast, .Toastify__toast").filter(has_text="news")
    if news.count():
        no = news.get_by_role("button", name="No")
        (no.first if no.count() else news.locator("button").last).click()
        dismissed.append("news pop-up")
    other = page.locator(".jp-Dialog")
    if other.count():
        text = other.first.inner_text()[:80]
        other.first.locator("button.jp-mod-reject, button.jp-mod-accept").first.click()
        dismissed.append(f"dialog: {text!r}")
    return dismissed


def open_notebook(
    page, lab: JupyterLabServer, relative_path: str, timeout_ms: int = 120_000
) -> None:
    """Open a notebook in JupyterLab and wait until its kernel is idle."""
    page.goto(lab.url(f"lab/tree/{relative_path}"), timeout=timeout_ms)
    page.locator(".jp-Notebook").first.wait_for(state="visible", timeout=timeout_ms)
    dismiss_dialogs(page)
    wait_for_idle_kernel(page, timeout_ms)
    hide_side_panel(page)


def hide_side_panel(page) -> None:
    """Collapse the file browser so the notebook (and its widgets) get the whole width."""
    if page.locator("#jp-left-stack:visible").count():
        page.locator(".jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()


def wait_for_idle_kernel(page, timeout_ms: int = 120_000) -> None:
    """Wait until the notebook's kernel reports idle in the toolbar / status bar."""
    page.wait_for_function(
        """() => {
            const s = document.querySelector('.jp-Notebook-ExecutionIndicator');
            if (s && s.getAttribute('data-status')) return s.getAttribute('data-status') === 'idle';
            const t = document.querySelector('.jp-DebuggerBugButton, .jp-KernelStatus');
            return !!document.querySelector('.jp-Notebook') && (!t || !/busy|starting/i.test(t.textContent));
        }""",
        timeout=timeout_ms,
    )


_EXECUTION_STATE_JS = """() => {
    const app = window.jupyterapp;
    const panel = app && app.shell.currentWidget;
    const cells = panel && panel.content && panel.content.widgets;
    if (!cells) return null;
    const code = cells.filter(c => c.model.type === 'code');
    const kernel = panel.sessionContext && panel.sessionContext.session
        && panel.sessionContext.session.kernel;
    return {
        kernel: kernel ? kernel.status : 'none',
        running: code.filter(c => c.model.executionState === 'running').length,
        unrun: code.filter(c => c.model.executionCount === null).length,
        total: code.length,
        prompts: code.map(c => c.promptNode ? c.promptNode.textContent : '').join(' '),
    };
}"""


def execution_state(page) -> dict | None:
    """Kernel status and how many code cells are running / not yet run, from the notebook model."""
    return page.evaluate(_EXECUTION_STATE_JS)


def run_all_cells(page, timeout_ms: int = 300_000) -> dict:
    """Run every cell from the Run menu, as a reader would, and wait until all have finished.

    Returns
    -------
    dict
        The final :func:`execution_state` (kernel status, running / unrun cell counts).
    """
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    dismiss_dialogs(page, timeout_ms=500)
    deadline = time.monotonic() + timeout_ms / 1000
    state = None
    page.wait_for_timeout(1000)
    while time.monotonic() < deadline:
        state = execution_state(page)
        if state and state["running"] == 0 and state["kernel"] == "idle":
            return state
        page.wait_for_timeout(1000)
    raise TimeoutError(f"cells still running after {timeout_ms / 1000:.0f} s: {state}")


def cell_errors(page) -> list[str]:
    """Tracebacks shown in the notebook (error outputs)."""
    return [
        e.inner_text()[-2000:]
        for e in page.locator(
            ".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr']"
        ).all()
        if "Traceback" in e.inner_text() or "Error" in e.inner_text()
    ]


def copy_tree(source: Path, target: Path) -> Path:
    """Copy a folder's files (not hidden ones) for a throwaway server root."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*"), dirs_exist_ok=True)
    return target

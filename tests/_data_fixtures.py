"""Shared setup of the data tests: an isolated cache, toy manifests, a scriptable HTTP server.

Import what a test module needs (``from _data_fixtures import isolated, ...``); the ``isolated``
fixture is autouse, so importing it isolates every test of that module.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from galaxy_helpers import data

TOY_CATALOGUE = '[catalogue]\nfile = "cat.csv"\nid_str = "id"\nfile_loc = "loc"\n'


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No mirror, no offline switch, and a private cache unless a test sets them."""
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.OFFLINE_ENV, raising=False)
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))


def write_manifest(
    tmp_path: Path,
    files: dict[str, bytes],
    base_url: str = "https://example.org/",
    name: str = "toy",
    catalogue: str = TOY_CATALOGUE,
    extra: dict[str, str] | None = None,
) -> Path:
    """A dataset manifest for ``files`` (path -> true content) served at ``base_url``;
    ``extra`` adds TOML lines to a file's table (``{"a.tar": 'extract_to = "x"\\n'}``)."""
    blocks = [
        f'[[files]]\npath = "{path}"\nurl = "{base_url}{path}"\nsize = {len(body)}\n'
        f'sha256 = "{hashlib.sha256(body).hexdigest()}"\n' + (extra or {}).get(path, "")
        for path, body in files.items()
    ]
    text = (
        f'name = "{name}"\nkind = "dataset"\ntitle = "t"\ndescription = "d"\nlicence = "CC0"\n'
        f'citation = ["x"]\ncredit = "c"\nhomepage = "{base_url}"\n\n{catalogue}\n'
        + "\n".join(blocks)
    )
    folder = tmp_path / "manifests"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


class Server:
    """A local HTTP server serving ``files`` (path -> bytes), with scripted faults:
    ``fail_first`` (path -> number of 500 answers first), ``cut_after`` (path -> bytes sent
    before the connection is cut, once), ``stall`` (path -> bytes sent before hanging until
    ``close``), and HTTP Range support unless ``ranges=False``. ``requests`` lists the paths
    asked for, :meth:`asked` the Range header of each request for one path."""

    def __init__(self, ranges: bool = True):
        self.files: dict[str, bytes] = {}
        self.ranges = ranges
        self.fail_first: dict[str, int] = {}
        self.cut_after: dict[str, int] = {}
        self.stall: dict[str, int] = {}
        self.requests: list[str] = []
        self.headers: list[tuple[str, str | None]] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                path = self.path.lstrip("/")
                asked = self.headers.get("Range")
                server.requests.append(path)
                server.headers.append((path, asked))
                if server.fail_first.get(path, 0) > 0:
                    server.fail_first[path] -= 1
                    self.send_error(500, "scripted failure")
                    return
                body = server.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if asked and server.ranges:
                    start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if path in server.stall:
                    self.wfile.write(payload[: server.stall[path]])
                    self.wfile.flush()
                    server.stop.wait(30)
                    self.close_connection = True
                    return
                cut = server.cut_after.pop(path, None)
                self.wfile.write(payload if cut is None else payload[:cut])
                if cut is not None:
                    self.close_connection = True  # fewer bytes than Content-Length

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def clear(self) -> None:
        self.requests.clear()
        self.headers.clear()

    def asked(self, path: str) -> list[str | None]:
        return [r for p, r in self.headers if p == path]

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def no_network(monkeypatch, why: str = "the network was used") -> None:
    """Make every HTTP request through requests (pooch's and ours) fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(why)

    monkeypatch.setattr("requests.Session.request", refuse)

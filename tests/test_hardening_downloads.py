"""Downloads under faults, through a real local HTTP server: a connection cut mid-file resumes
with a Range request (or starts over where the server has no Range support), a process killed
mid-download is resumed by the next one, leftovers of crashed runs are cleaned up, the cache can
be re-hashed on demand, and a mistyped mirror folder is named."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _data_fixtures import Server, isolated, write_manifest  # noqa: F401

from galaxy_helpers import data

BIG = bytes(range(256)) * 1600  # 409,600 bytes
FILES = {"cat.csv": b"id,loc\na,img/a.bin\n", "img/a.bin": BIG}


@pytest.fixture
def server():
    srv = Server()
    srv.files.update(FILES)
    yield srv
    srv.close()


def _manifest(tmp_path, url, files=FILES, extra=None):
    return data.load_manifest(write_manifest(tmp_path, files, url, extra=extra))


def _entry(manifest, path="img/a.bin"):
    return next(e for e in manifest.files if e.path == path)


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".part"))


def _old(path: Path) -> Path:
    past = time.time() - 3600
    os.utime(path, (past, past))
    return path


# ---------------------------------------------------------------- resume
def test_cut_connection_is_resumed_with_a_range_request(tmp_path, server):
    server.cut_after["img/a.bin"] = 100_000
    manifest = _manifest(tmp_path, server.url)
    folder = data.fetch(manifest, progress=False, retries=2)
    assert (folder / "img/a.bin").read_bytes() == BIG
    assert server.asked("img/a.bin") == [None, "bytes=100000-"]  # only the rest, once
    assert _parts(folder) == []


def test_interrupted_download_is_kept_and_resumed_by_the_next_run(tmp_path, server):
    server.cut_after["img/a.bin"] = 150_000
    manifest = _manifest(tmp_path, server.url)
    with pytest.raises(data.DataUnavailableError, match=r"150000 bytes received so far are kept"):
        data.fetch(manifest, progress=False, retries=1)
    folder = tmp_path / "cache" / "data" / "toy"
    partial = data.partial_path(folder / "img/a.bin", _entry(manifest))
    assert _parts(folder) == [partial] and partial.stat().st_size == 150_000
    assert not (folder / "img/a.bin").exists()  # never a half file under the final name
    data.fetch(manifest, progress=False, retries=1)
    assert (folder / "img/a.bin").read_bytes() == BIG
    assert server.asked("img/a.bin")[-1] == "bytes=150000-"
    assert _parts(folder) == []


def test_server_without_range_support_gets_a_fresh_download(tmp_path):
    srv = Server(ranges=False)  # answers 200 with the whole file to a Range request
    try:
        srv.files.update(FILES)
        srv.cut_after["img/a.bin"] = 50_000
        manifest = _manifest(tmp_path, srv.url)
        folder = data.fetch(manifest, progress=False, retries=2)
        assert (folder / "img/a.bin").read_bytes() == BIG  # not 50,000 bytes + the whole file
        assert srv.asked("img/a.bin") == [None, "bytes=50000-"]
        assert _parts(folder) == []
    finally:
        srv.close()


def test_resumed_file_is_still_verified_and_a_bad_prefix_starts_over(tmp_path, server):
    manifest = _manifest(tmp_path, server.url)
    final = tmp_path / "cache" / "data" / "toy" / "img" / "a.bin"
    final.parent.mkdir(parents=True)
    partial = data.partial_path(final, _entry(manifest))
    partial.write_bytes(b"x" * 1000)  # not the first 1000 bytes of the file
    with pytest.raises(data.ChecksumError, match=r"img/a.bin: sha256 .*resumed at byte 1000"):
        data.download_file(_entry(manifest), final, retries=1, progress=False)
    assert not partial.exists() and not final.exists()
    data.download_file(_entry(manifest), final, retries=1, progress=False)
    assert final.read_bytes() == BIG and server.asked("img/a.bin") == ["bytes=1000-", None]


def test_range_past_the_end_and_a_complete_partial(tmp_path, server):
    manifest = _manifest(tmp_path, server.url)
    entry = _entry(manifest)
    final = tmp_path / "cache" / "data" / "toy" / "img" / "a.bin"
    final.parent.mkdir(parents=True)
    partial = data.partial_path(final, entry)
    # a complete file killed before its rename is verified and renamed, nothing downloaded
    partial.write_bytes(BIG)
    data.download_file(entry, final, retries=1, progress=False)
    assert final.read_bytes() == BIG and server.asked("img/a.bin") == []
    # the server's file became shorter than the partial: 416, then a fresh download
    final.unlink()
    short = data.FileEntry("img/a.bin", entry.url, 1000, hashlib.sha256(BIG[:1000]).hexdigest())
    partial = data.partial_path(final, short)
    partial.write_bytes(BIG[:900] + b"??")  # 902 bytes of a 1000-byte file, wrong tail
    server.files["img/a.bin"] = BIG[:800]  # upstream now has 800 bytes: bytes=902- is a 416
    with pytest.raises(data.ChecksumError, match="got 800 bytes"):
        data.download_file(short, final, retries=2, progress=False)
    assert server.asked("img/a.bin") == ["bytes=902-", None]
    assert not partial.exists() and not final.exists()


_CHILD = """
import sys
from pathlib import Path
from galaxy_helpers import data
entry = data.FileEntry("img/a.bin", sys.argv[1], int(sys.argv[2]), sys.argv[3])
data.download_file(entry, Path(sys.argv[4]), retries=1, progress=False)
"""


def test_download_killed_mid_file_is_resumed_by_the_next_process(tmp_path, server):
    server.stall["img/a.bin"] = 250_000
    manifest = _manifest(tmp_path, server.url)
    entry = _entry(manifest)
    final = tmp_path / "cache" / "data" / "toy" / "img" / "a.bin"
    partial = data.partial_path(final, entry)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, entry.url, str(entry.size), entry.sha256, str(final)],
        cwd=Path(__file__).resolve().parents[1],
    )
    deadline = time.time() + 60
    while not (partial.exists() and partial.stat().st_size >= 196_608):  # 3 blocks of 64 KiB
        assert child.poll() is None and time.time() < deadline, "the child never got going"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    kept = partial.stat().st_size
    assert 0 < kept < len(BIG) and not final.exists()
    del server.stall["img/a.bin"]
    folder = data.fetch(manifest, progress=False, retries=1)  # the kill released its lock
    assert (folder / "img/a.bin").read_bytes() == BIG
    assert server.asked("img/a.bin")[-1] == f"bytes={kept}-"
    assert _parts(folder) == []


def test_a_file_another_process_is_downloading_is_downloaded_privately(tmp_path, server):
    manifest = _manifest(tmp_path, server.url)
    final = tmp_path / "cache" / "data" / "toy" / "img" / "a.bin"
    final.parent.mkdir(parents=True)
    partial = data.partial_path(final, _entry(manifest))
    partial.write_bytes(BIG[:5000])
    with open(partial, "rb") as handle:  # the other process, mid-download
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        data.download_file(_entry(manifest), final, retries=1, progress=False)
        assert final.read_bytes() == BIG and server.asked("img/a.bin") == [None]
        assert partial.read_bytes() == BIG[:5000]  # its bytes are left alone


# ---------------------------------------------------------------- stale .part files
def test_leftovers_of_crashed_runs_are_cleaned_but_live_ones_kept(tmp_path, server):
    manifest = _manifest(tmp_path, server.url)
    folder = tmp_path / "cache" / "data" / "toy"
    (folder / "img").mkdir(parents=True)
    crashed = folder / "img" / ".a.bin.k2j4h1x0.part"  # a temp file of an older version
    crashed.write_bytes(b"half")
    _old(crashed)
    pooch_tmp = folder / "img" / "tmpk2j4h1x0"  # pooch's download target of a killed run
    pooch_tmp.write_bytes(b"half")
    atomic_tmp = folder / ".cat.csv.x8d7s6q1.csv"  # a core.atomic_path temp of a killed run
    atomic_tmp.write_bytes(b"id,loc\n")
    for path in (pooch_tmp, atomic_tmp):
        _old(path)
    old_version = folder / "img" / ".a.bin.sha256-0123456789abcdef.part"
    old_version.write_bytes(b"of another version of the file")
    _old(old_version)
    unpacking = folder / ".images.3kd9s0.part"  # a safe_extract folder of a killed run
    (unpacking / "sub").mkdir(parents=True)
    (unpacking / "sub" / "g.png").write_bytes(b"x")
    _old(unpacking)
    fresh = folder / ".cat.csv.fresh000.part"  # being written right now by someone
    fresh.write_bytes(b"new")
    held = folder / ".cat.csv.held0000.part"  # old, but its writer is alive (holds the lock)
    held.write_bytes(b"slow")
    _old(held)
    with open(held, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        data.fetch(manifest, progress=False)
        assert _parts(folder) == sorted([fresh, held])
    assert (folder / "img/a.bin").read_bytes() == BIG
    assert not unpacking.exists() and not pooch_tmp.exists() and not atomic_tmp.exists()


def test_partial_of_a_file_completed_elsewhere_is_removed(tmp_path, server):
    manifest = _manifest(tmp_path, server.url)
    folder = data.fetch(manifest, progress=False)
    partial = data.partial_path(folder / "img/a.bin", _entry(manifest))
    partial.write_bytes(BIG[:10])  # e.g. a run killed while another one finished the file
    data.fetch(manifest, progress=False)
    assert _parts(folder) == []


# ---------------------------------------------------------------- verify
def test_verify_rehashes_the_cache_and_deletes_bad_files(tmp_path, server, capsys):
    manifest = _manifest(tmp_path, server.url)
    folder = data.fetch(manifest, progress=False)
    target = folder / "img/a.bin"
    stat = target.stat()
    with open(target, "r+b") as handle:  # bit rot: same size, same mtime
        handle.seek(1234)
        handle.write(b"\xff")
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    server.clear()
    data.fetch(manifest, progress=False)
    assert server.requests == []  # fetch trusts the unchanged size and time

    kept = data.verify(manifest, delete=False, progress=False)
    assert not kept.ok and list(kept.bad) == ["img/a.bin"] and target.exists()
    assert kept.checked == ["cat.csv"] and "BAD img/a.bin: sha256" in str(kept)
    report = data.verify(manifest, progress=False)
    assert report.deleted == ["img/a.bin"] and not target.exists()
    data.fetch(manifest, progress=False)  # the deleted file is fetched again
    assert target.read_bytes() == BIG and server.asked("img/a.bin") == [None]
    assert data.verify(manifest, progress=False).ok

    # the command line: exit 1 and the file named when something is bad
    target.write_bytes(b"short")
    assert data.main(["verify", str(manifest.path)]) == 1
    assert "BAD img/a.bin: 5 bytes, the manifest says 409600 (deleted)" in capsys.readouterr().out
    assert data.main(["verify", str(manifest.path)]) == 0  # now only missing, nothing bad


def test_verify_reports_missing_files_without_failing(tmp_path, server):
    manifest = _manifest(tmp_path, server.url)
    report = data.verify(manifest, progress=False)
    assert report.ok and report.missing == ["cat.csv", "img/a.bin"] and report.checked == []


# ---------------------------------------------------------------- mirror
def test_mirror_argument_that_does_not_exist_is_named(tmp_path, server):
    manifest = _manifest(tmp_path, server.url)
    missing = tmp_path / "shraed" / "data"  # a typo
    with pytest.warns(data.MirrorWarning, match=rf"{missing} \(from the mirror= argument\)"):
        folder = data.fetch(manifest, mirror=missing, progress=False)
    assert (folder / "img/a.bin").read_bytes() == BIG


def test_mirror_variable_that_does_not_exist_is_named_in_the_offline_error(
    tmp_path, server, monkeypatch
):
    manifest = _manifest(tmp_path, server.url)
    missing = tmp_path / "no-such-mirror"
    monkeypatch.setenv(data.MIRROR_ENV, str(missing))
    with pytest.warns(data.MirrorWarning, match=data.MIRROR_ENV):
        with pytest.raises(
            data.DataUnavailableError, match=rf"the mirror folder {missing} .*does not exist"
        ):
            data.fetch(manifest, offline=True, progress=False)
    assert server.requests == []

"""Label files under faults: two processes on one file, kill -9 mid-write, crash-cut lines,
another user's file, a catalogue that changed. Every acknowledged label survives."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pandas as pd
import pytest

from galaxy_helpers import labelling as Lb


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def cat(ids):
    return pd.DataFrame({"id_str": list(ids)})


def run_child(code, *args):
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


TWO_TABS = """
import sys
from galaxy_helpers.labelling import LabelSession
path, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = LabelSession(path, user="ada")
for i in range(n):
    s.label(f"{prefix}{i:03d}", i % 6)
    s.label(f"{prefix}{i:03d}x", 5)
    s.undo()  # takes back this process's own last label, whatever the other one did meanwhile
print("done", flush=True)
"""


def test_two_processes_labelling_one_file_with_undo_keep_every_label(tmp_path):
    f = tmp_path / "labels.jsonl"
    Lb.LabelSession(f, user="ada")  # the header exists before the tabs start
    n = 60
    procs = [run_child(TWO_TABS, f, p, n) for p in ("a", "b")]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    again = Lb.LabelSession(f, user="ada")  # the file still opens: nothing stranded
    expected = {f"{p}{i:03d}": i % 6 for p in ("a", "b") for i in range(n)}
    assert again.labels == expected
    recs = lines(f)
    assert len(recs) == 1 + 2 * 3 * n
    by_rid = {r["rid"]: (k, r) for k, r in enumerate(recs) if "rid" in r}
    for r in recs[1:]:
        if r["action"] == "undo":
            k, target = by_rid[r["undoes"]]
            assert target["id_str"] == r["id_str"] and r["undoes_line"] == k + 1


def test_two_sessions_in_one_process_undo_their_own_labels(tmp_path):
    f = tmp_path / "labels.jsonl"
    tab1 = Lb.LabelSession(f, user="ada")
    tab2 = Lb.LabelSession(f, user="ada")
    tab1.label("g1", 1)
    tab2.label("g2", 2)  # tab2 first reads tab1's label, then appends on line 3
    assert tab2.labels == {"g1": 1, "g2": 2} and tab2.records[-1].line == 3
    tab1.undo()  # takes back g1 (its own), not g2 (the file's last)
    assert lines(f)[-1]["id_str"] == "g1" and lines(f)[-1]["undoes_line"] == 2
    assert Lb.LabelSession(f, user="ada").labels == {"g2": 2}
    assert tab2.undo().id_str == "g2"
    assert tab2.undo() is None  # g1 is tab1's, and taken back already
    assert Lb.LabelSession(f, user="ada").labels == {}


KILLED_WRITER = """
import os, sys, time
from galaxy_helpers import labelling as Lb
path, cut = sys.argv[1], sys.argv[2] == "cut"
s = Lb.LabelSession(path, user="ada")
if cut:
    real = Lb._write_all
    def slow(fd, data):
        if b'"label"' in data and s.n_labels >= 5:
            os.write(fd, data[: len(data) // 2])  # half the record is on disk ...
            print("MID", flush=True)
            time.sleep(60)  # ... when kill -9 arrives
        real(fd, data)
    Lb._write_all = slow
i = s.n_labels
while True:
    s.label(f"g{i:04d}", i % 6)
    print(f"ACK g{i:04d} {i % 6}", flush=True)
    i += 1
"""


def _kill_when(proc, line_start, n=1):
    seen = []
    while len([x for x in seen if x.startswith(line_start)]) < n:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        seen.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    rest = proc.stdout.read().splitlines()
    return {x.split()[1]: int(x.split()[2]) for x in seen + rest if x.startswith("ACK")}


def test_kill_9_in_the_middle_of_a_label_write_then_resume_loses_nothing_acknowledged(tmp_path):
    f = tmp_path / "labels.jsonl"
    acked = _kill_when(run_child(KILLED_WRITER, f, "cut"), "MID")
    assert len(acked) == 5
    assert not f.read_text().endswith("\n")  # the kill left half a record
    with pytest.warns(Lb.LabelFileWarning, match="cut off by a crash"):
        again = Lb.LabelSession(f, user="ada")
    assert again.labels == acked
    assert (tmp_path / "labels.jsonl.crash-cut").exists()
    # and labelling goes on where it stopped, the file clean again
    again.label("g0005", 5)
    assert Lb.LabelSession(f, user="ada").labels == {**acked, "g0005": 5}


def test_repeated_kill_9_at_random_moments_loses_no_acknowledged_label(tmp_path):
    f = tmp_path / "labels.jsonl"
    acked = {}
    for k in range(4):
        proc = run_child(KILLED_WRITER, f, "plain")
        acked.update(_kill_when(proc, "ACK", n=3 + 7 * k))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Lb.LabelFileWarning)  # a cut line is allowed
            labels = Lb.LabelSession(f, user="ada").labels
        assert acked.items() <= labels.items()


def test_complete_last_record_without_line_end_is_kept(tmp_path):
    f = tmp_path / "labels.jsonl"
    Lb.LabelSession(f, user="ada").label("g1", 3)
    f.write_bytes(f.read_bytes()[:-1])  # the line end alone is missing
    with pytest.warns(Lb.LabelFileWarning, match="line end was added"):
        assert Lb.LabelSession(f, user="ada").labels == {"g1": 3}
    assert f.read_text().endswith("\n") and len(lines(f)) == 2


def test_cut_header_is_refused_and_left_alone(tmp_path):
    f = tmp_path / "labels.jsonl"
    f.write_text('{"format": "galaxy_hel')
    with pytest.raises(Lb.LabelFileError, match="line 1: is incomplete"):
        Lb.LabelSession(f, user="ada")
    assert f.read_text() == '{"format": "galaxy_hel'


def test_a_foreign_file_without_line_end_is_never_truncated(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("id_str,score\ng1,3\ng2,")
    with pytest.raises(Lb.LabelFileError, match="line 1"):
        Lb.LabelSession(f, user="ada")
    assert f.read_text() == "id_str,score\ng1,3\ng2,"


def test_another_users_file_is_refused_unless_allowed(tmp_path):
    f = tmp_path / "labels.jsonl"
    Lb.LabelSession(f, user="ada").label("g1", 4)
    before = f.read_text()
    with pytest.raises(Lb.LabelFileError, match=r"labels of user 'ada', not 'bob'.*user='ada'"):
        Lb.LabelSession(f, user="bob")
    assert f.read_text() == before
    bob = Lb.LabelSession(f, user="bob", allow_other_users=True)
    bob.label("g2", 1)
    assert [r.user for r in bob.records] == ["ada", "bob"]


def test_catalogue_that_lost_rows_lists_them_and_keep_continues(tmp_path):
    f = tmp_path / "labels.jsonl"
    full = cat(f"g{i}" for i in range(10))
    s = Lb.LabelSession(f, user="ada", catalogue=full)
    s.label("g1", 4)
    s.label("g2", 3)
    smaller = cat(["g0", "g2", "g3", "g4", "g5", "g6", "g7", "g8", "new1"])
    with pytest.raises(Lb.CatalogueChangedError) as err:
        Lb.LabelSession(f, user="ada", catalogue=smaller)
    msg = str(err.value)
    assert "another catalogue" not in msg
    assert "no longer in it: 'g1'" in msg and "new in the catalogue: 'new1'" in msg
    assert "gone from it: 'g1', 'g9'" in msg and "on_catalogue_change='keep'" in msg
    with pytest.warns(Lb.LabelFileWarning, match="catalogue changed"):
        kept = Lb.LabelSession(f, user="ada", catalogue=smaller, on_catalogue_change="keep")
    assert kept.labels == {"g2": 3} and kept.missing_ids == ["g1"]
    kept.label("new1", 5)
    # the change is recorded: the next open with the same catalogue is quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Lb.LabelSession(f, user="ada", catalogue=smaller, on_catalogue_change="keep")
    assert again.labels == {"g2": 3, "new1": 5}
    # the full history is still in the file, for the old catalogue
    assert Lb.LabelSession(f, user="ada").labels == {"g1": 4, "g2": 3, "new1": 5}


def test_catalogue_that_only_grew_warns_once_and_keeps_every_label(tmp_path):
    f = tmp_path / "labels.jsonl"
    Lb.LabelSession(f, user="ada", catalogue=cat(["a", "b"])).label("a", 2)
    with pytest.warns(Lb.LabelFileWarning, match="new in the catalogue: 'c'"):
        s = Lb.LabelSession(f, user="ada", catalogue=cat(["a", "b", "c"]))
    assert s.labels == {"a": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Lb.LabelSession(f, user="ada", catalogue=cat(["a", "b", "c"]))


def test_bad_on_catalogue_change_value_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'error' or 'keep'"):
        Lb.LabelSession(tmp_path / "l.jsonl", user="ada", on_catalogue_change="ignore")


def test_version_1_files_with_line_numbered_undos_still_resume(tmp_path):
    f = tmp_path / "labels.jsonl"
    rows = [
        {"format": "galaxy_helpers.labels", "version": 1, "created": "t", "user": "ada"},
        {"action": "label", "time": "t", "user": "ada", "id_str": "g1", "score": 4},
        {"action": "label", "time": "t", "user": "ada", "id_str": "g2", "score": 1},
        {"action": "undo", "time": "t", "user": "ada", "id_str": "g2", "undoes_line": 3},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = Lb.LabelSession(f, user="ada")
    assert s.labels == {"g1": 4}
    assert s.undo().undoes_line == 2 and s.labels == {}


def test_undo_of_a_label_already_taken_back_is_an_error(tmp_path):
    f = tmp_path / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada")
    s.label("g1", 4)
    s.undo()
    with open(f, "a") as fh:
        fh.write(json.dumps(lines(f)[-1] | {"rid": "feedfeedfeedfeed"}) + "\n")
    with pytest.raises(Lb.LabelFileError, match="line 4: undoes line 2 .*not a standing label"):
        Lb.LabelSession(f, user="ada")


def test_lock_is_exclusive_while_a_record_is_appended(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    f = tmp_path / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada")
    held = run_child(
        """
        import fcntl, sys, time
        fd = open(sys.argv[1], "a")
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(1.5)
        """,
        f,
    )
    assert held.stdout.readline().strip() == "locked"
    t0 = time.monotonic()
    s.label("g1", 2)  # waits for the other holder
    assert time.monotonic() - t0 > 0.5
    held.wait(timeout=30)
    assert fcntl is not None and Lb.LabelSession(f, user="ada").labels == {"g1": 2}

"""Tests for galaxy_helpers.labelling: the label file survives restarts, the widget works headless."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_helpers import labelling as Lb
from galaxy_helpers.anomaly import ActiveLearner


@pytest.fixture
def catalogue(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        path = tmp_path / "img" / f"g{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        rows.append({"id_str": f"g{i:03d}", "file_loc": str(path)})
    return pd.DataFrame(rows)


@pytest.fixture
def features():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 6))
    X[:6, :2] += 5  # the interesting corner
    return X


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------- session
def test_every_label_is_on_disk_at_once_with_time_and_user(tmp_path, catalogue):
    f = tmp_path / "sub" / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada", catalogue=catalogue)
    s.label("g001", 4)
    recs = lines(f)
    assert recs[0]["format"] == "galaxy_helpers.labels"
    assert recs[1] == {
        "action": "label",
        "id_str": "g001",
        "rid": recs[1]["rid"],
        "score": 4,
        "time": recs[1]["time"],
        "user": "ada",
    }
    assert len(recs[1]["rid"]) == 16
    assert recs[1]["time"].endswith("Z")
    s.label("g002", np.int64(0))
    assert len(lines(f)) == 3 and s.labels == {"g001": 4, "g002": 0}


@pytest.mark.parametrize("bad", [6, -1, 2.5, 3.0, "3", True, None, np.nan])
def test_scores_outside_0_to_5_are_refused_and_not_written(tmp_path, bad):
    f = tmp_path / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada")
    with pytest.raises(ValueError, match="0 to 5"):
        s.label("g001", bad)
    assert len(lines(f)) == 1 and s.n_labels == 0


def test_unknown_galaxy_refused(tmp_path, catalogue):
    s = Lb.LabelSession(tmp_path / "l.jsonl", user="ada", catalogue=catalogue)
    with pytest.raises(KeyError, match="nope"):
        s.label("nope", 3)


def test_undo_appends_and_reopening_resumes_exactly(tmp_path, catalogue):
    f = tmp_path / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada", catalogue=catalogue)
    s.label("g001", 4)
    s.label("g002", 1)
    s.label("g001", 5)  # change of mind
    s.undo()  # back to 4
    s.undo()  # g002 gone
    s.label("g003", 2)
    before = f.read_text()
    assert s.labels == {"g001": 4, "g003": 2}
    recs = lines(f)
    assert [r.get("action") for r in recs[1:]] == ["label"] * 3 + ["undo"] * 2 + ["label"]
    assert recs[4]["undoes_line"] == 4 and recs[5]["undoes_line"] == 3
    assert recs[4]["undoes"] == recs[3]["rid"] and recs[5]["undoes"] == recs[2]["rid"]
    # "restart the kernel": a fresh object on the same file
    again = Lb.LabelSession(f, user="ada", catalogue=catalogue)
    assert again.labels == s.labels and again.n_labels == 2
    assert len(again.history()) == 6
    assert f.read_text() == before  # reopening never rewrites
    # and the undo stack survived too
    again.undo()
    again.undo()
    assert again.labels == {}
    assert again.undo() is None
    np.testing.assert_array_equal(
        Lb.LabelSession(f, user="ada").scores_for(["g001", "g003"]), [np.nan, np.nan]
    )


def test_truncated_last_line_is_set_aside_with_a_warning_naming_file_and_line(tmp_path):
    f = tmp_path / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada")
    s.label("g001", 4)
    content = f.read_text()
    with open(f, "a") as fh:
        fh.write('{"action": "label", "id_str": "g0')  # the kernel died mid-write
    with pytest.warns(Lb.LabelFileWarning, match=r"labels.jsonl, line 3 was cut off by a crash"):
        again = Lb.LabelSession(f, user="ada")
    assert f.read_text() == content  # every acknowledged label intact, the fragment set aside
    assert (
        tmp_path / "labels.jsonl.crash-cut"
    ).read_text() == '{"action": "label", "id_str": "g0\n'
    assert again.labels == {"g001": 4}
    again.label("g002", 1)
    assert Lb.LabelSession(f, user="ada").labels == {"g001": 4, "g002": 1}


def test_corrupt_middle_line_and_bad_score_in_file_are_errors(tmp_path):
    f = tmp_path / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada")
    s.label("g001", 4)
    s.label("g002", 3)
    text = f.read_text().splitlines()
    f.write_text("\n".join([text[0], "garbage{", text[2]]) + "\n")
    with pytest.raises(Lb.LabelFileError, match="line 2: is not valid JSON"):
        Lb.LabelSession(f, user="ada")
    f.write_text("\n".join([text[0], text[1].replace('"score": 4', '"score": 9')]) + "\n")
    with pytest.raises(Lb.LabelFileError, match="line 2: a score must be 0 to 5"):
        Lb.LabelSession(f, user="ada")


def test_foreign_files_are_refused(tmp_path, catalogue):
    csv = tmp_path / "votes.csv"
    csv.write_text("id_str,smooth\ng001,3\n")
    with pytest.raises(Lb.LabelFileError, match=r"votes.csv, line 1: is not a galaxy_helpers"):
        Lb.LabelSession(csv, user="ada")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"format": "something-else"}) + "\n")
    with pytest.raises(Lb.LabelFileError, match="line 1"):
        Lb.LabelSession(other, user="ada")
    binary = tmp_path / "img.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(Lb.LabelFileError, match="not UTF-8"):
        Lb.LabelSession(binary, user="ada")
    # labels of another catalogue's galaxies
    f = tmp_path / "labels.jsonl"
    Lb.LabelSession(f, user="ada").label("J999", 5)
    with pytest.raises(Lb.LabelFileError, match="line 2: labels galaxy 'J999'.*another catalogue"):
        Lb.LabelSession(f, user="ada", catalogue=catalogue)


def test_undo_record_that_does_not_match_history_is_an_error(tmp_path):
    f = tmp_path / "labels.jsonl"
    s = Lb.LabelSession(f, user="ada")
    s.label("g001", 4)
    s.label("g002", 3)
    s.undo()
    text = f.read_text().replace('"undoes_line": 3', '"undoes_line": 2')
    f.write_text(text)
    with pytest.raises(Lb.LabelFileError, match="line 4: undoes line 2 .*not a standing label"):
        Lb.LabelSession(f, user="ada")


# ---------------------------------------------------------------- widget (headless)
def make_widget(tmp_path, catalogue, features, **kw):
    session = Lb.LabelSession(tmp_path / "labels.jsonl", user="ada", catalogue=catalogue)
    learner = ActiveLearner(n_components=4, random_state=0)
    return Lb.LabellingWidget(
        session, catalogue, features, learner=learner, batch_size=5, image_size=32, **kw
    )


def test_widget_buttons_write_the_file_and_restart_resumes(tmp_path, catalogue, features):
    w = make_widget(tmp_path, catalogue, features)
    assert len(w.batch) == 5 and len(w.grid.children) == 5
    first = w.ids[w.batch[0]]
    b = w.buttons[first][3]
    assert b.description == "3" and Lb.SCORE_BUTTON_CLASS in b._dom_classes
    assert "galaxy-score-3" in b._dom_classes
    b.click()
    recs = lines(tmp_path / "labels.jsonl")
    assert recs[-1]["id_str"] == first and recs[-1]["score"] == 3 and recs[-1]["user"] == "ada"
    assert b.button_style == "success"
    assert "1 labels so far" in w.progress.value
    # undo button
    w.undo_button.click()
    assert lines(tmp_path / "labels.jsonl")[-1]["action"] == "undo"
    assert w.session.n_labels == 0 and b.button_style == ""
    # score the batch, retrain: next batch excludes everything labelled
    for r in w.batch:
        w.buttons[w.ids[r]][4 if r < 6 else 0].click()
    labelled = set(w.batch)
    w.retrain_button.click()
    assert not labelled & set(w.batch) and len(w.batch) == 5
    assert len(w.top_box.children) == 12
    # restart: a new session + widget on the same file resumes with the same labels
    w2 = make_widget(tmp_path, catalogue, features)
    assert w2.session.labels == w.session.labels
    assert not labelled & set(w2.batch)


def test_keyboard_shortcuts(tmp_path, catalogue, features):
    w = make_widget(tmp_path, catalogue, features)
    first, second = (w.ids[r] for r in w.batch[:2])
    w.keys.value = "5"
    assert w.session.labels == {first: 5} and w.keys.value == ""
    w.keys.value = "2"
    assert w.session.labels == {first: 5, second: 2}
    w.keys.value = "u"
    assert w.session.labels == {first: 5}
    w.keys.value = "n"
    assert w.ids[w.batch[0]] != first and w.n_retrains == 2


def test_simulated_researcher_drives_the_widget(tmp_path, catalogue, features):
    truth = np.zeros(len(catalogue), dtype=int)
    truth[:6] = 5
    w = make_widget(tmp_path, catalogue, features)
    w.run_simulated(truth, n_labels=23, progress=False)
    assert w.session.n_labels == 23
    recs = lines(tmp_path / "labels.jsonl")
    assert len(recs) == 24
    assert all(r["score"] == truth[int(r["id_str"][1:])] for r in recs[1:])
    # the GP found the planted corner
    assert sum(v == 5 for v in w.session.labels.values()) >= 4
    # the batches in between are not drawn; the last one is, with live buttons
    assert w.n_retrains == 6 and len(w.grid.children) == len(w.batch) == 5
    assert set(w.buttons) == {w.ids[r] for r in w.batch}
    nxt = w.ids[w.batch[0]]
    w.buttons[nxt][2].click()
    assert w.session.labels[nxt] == 2 and lines(tmp_path / "labels.jsonl")[-1]["id_str"] == nxt


def test_widget_checks_its_inputs(tmp_path, catalogue, features):
    session = Lb.LabelSession(tmp_path / "l.jsonl", user="ada")
    with pytest.raises(ValueError, match="same galaxies"):
        Lb.LabellingWidget(session, catalogue, features[:10])
    with pytest.raises(ValueError, match="file_loc"):
        Lb.LabellingWidget(session, catalogue[["id_str"]], features)

"""Catalogues and finetuning labels under bad input: votes that are not counts, ids that lose
their zeros, duplicates, empty tables, stray class labels, infinite targets, NaN training."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from galaxy_helpers import catalogue as C
from galaxy_helpers import finetuning as F
from galaxy_helpers import training as T
from galaxy_helpers.schema import DECALS_DR5, vote_counts

SMOOTH = "smooth-or-featured-dr5_smooth"
FEATURED = "smooth-or-featured-dr5_featured-or-disk"
EDGE_NO = "disk-edge-on-dr5_no"


@pytest.fixture
def cat(tmp_path):
    rows = []
    for i in range(4):
        path = tmp_path / f"g{i}.png"
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(path)
        rows.append({"id_str": f"g{i}", "file_loc": str(path)})
    df = pd.DataFrame(rows)
    for column in DECALS_DR5.answer_columns:
        df[column] = 0
    df[SMOOTH] = 5.0
    return df


@pytest.mark.parametrize("bad, problem", [(np.inf, "infinite"), (1e30, "larger than 1,000,000")])
def test_vote_counts_that_are_not_counts_are_refused_by_load_catalogue(cat, bad, problem):
    cat.loc[2, SMOOTH] = bad
    with pytest.raises(
        C.CatalogueError, match=f"(?s)vote count (is )?{problem}.*row 2, id_str 'g2'"
    ):
        C.load_catalogue(cat, schema="decals_dr5", progress=False)


@pytest.mark.parametrize("bad, problem", [(np.inf, "infinite"), (1e30, "larger than 1,000,000")])
def test_vote_counts_that_are_not_counts_never_reach_training(cat, bad, problem):
    cat.loc[1, SMOOTH] = bad
    with pytest.raises(ValueError, match=f"are {problem}.*row 1 \\(id_str g1\\)"):
        vote_counts(cat)
    with pytest.raises(T.CatalogueError, match=problem):
        T.prepare_catalogue(cat, DECALS_DR5, T.TrainConfig())


def test_child_question_with_more_votes_than_its_parent_is_reported(cat):
    cat.loc[3, EDGE_NO] = 4  # nobody said featured, yet 4 answered the edge-on question
    report = C.validate_catalogue(cat, schema="decals_dr5", progress=False)
    assert report.ok  # a warning, not an error
    problems = report.warnings
    hit = problems[problems["problem"].str.contains("disk-edge-on-dr5 has 4 votes")]
    assert list(hit["row"]) == [3] and list(hit["id_str"]) == ["g3"]
    with pytest.warns(UserWarning, match=r"row 3 \(id_str g3\): disk-edge-on-dr5 has 4 votes"):
        T.prepare_catalogue(cat, DECALS_DR5, T.TrainConfig())


def test_ids_read_from_csv_stay_strings_with_their_zeros(cat, tmp_path):
    cat["id_str"] = ["00042", "007", "1e5", "42"]
    path = tmp_path / "cat.csv"
    cat.to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = C.load_catalogue(path, schema="decals_dr5", progress=False)
    assert list(out["id_str"]) == ["00042", "007", "1e5", "42"]
    cat.rename(columns={"id_str": "objid"}).to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = C.load_catalogue(path, id_column="objid", progress=False)
    assert out["id_str"].iloc[0] == "00042"


def test_ids_of_a_manifest_csv_stay_strings(tmp_path):
    import hashlib

    from galaxy_helpers import data

    files = {"cat.csv": b"id,loc\n00042,a.txt\n", "a.txt": b"x"}
    mirror = tmp_path / "mirror" / "toy"
    mirror.mkdir(parents=True)
    blocks = []
    for rel, body in files.items():
        (mirror / rel).write_bytes(body)
        blocks.append(
            f'[[files]]\npath = "{rel}"\nurl = "https://example.org/{rel}"\n'
            f'sha256 = "{hashlib.sha256(body).hexdigest()}"\n'
        )
    toml = tmp_path / "toy.toml"
    toml.write_text(
        'name = "toy"\nkind = "dataset"\n[catalogue]\nfile = "cat.csv"\nid_str = "id"\n'
        'file_loc = "loc"\n' + "\n".join(blocks)
    )
    df = data.load_dataset(
        toml, cache_dir=tmp_path / "cache", mirror=tmp_path / "mirror", offline=True, progress=False
    )
    assert list(df["id_str"]) == ["00042"]


def test_duplicate_ids_are_refused_by_training(cat):
    cat.loc[3, "id_str"] = "g1"
    with pytest.raises(T.CatalogueError, match=r"appear more than once \(rows \[1, 3\]"):
        T.prepare_catalogue(cat, DECALS_DR5, T.TrainConfig())


def test_empty_catalogue_is_refused_by_validation(cat):
    report = C.validate_catalogue(cat.iloc[:0], schema="decals_dr5", progress=False)
    assert not report.ok and "no rows" in str(report)
    with pytest.raises(C.CatalogueError, match="no rows"):
        C.load_catalogue(cat.iloc[:0], progress=False)


# ---------------------------------------------------------------- finetuning labels
@pytest.fixture
def labelled():
    n = 30
    return pd.DataFrame(
        {"id_str": [f"g{i}" for i in range(n)], "file_loc": ["x.png"] * n, "ring": [0, 1] * 15}
    )


def test_duplicate_ids_and_empty_catalogues_are_refused_by_finetuning(labelled):
    dup = labelled.copy()
    dup.loc[5, "id_str"] = "g0"
    with pytest.raises(F.FinetuneError, match="more than once, e.g. \\['g0'\\]"):
        F.labelled_rows(dup, "ring")
    with pytest.raises(F.FinetuneError, match="catalogue is empty"):
        F.labelled_rows(labelled.iloc[:0], "ring")


@pytest.mark.parametrize(
    "stray, message",
    [
        (2, r"class\(es\) \[2\] hold a single galaxy"),
        ("1", "mixes text and numbers"),
        (0.5, "not class labels"),
    ],
)
def test_one_stray_label_value_is_an_error_naming_the_galaxy(labelled, stray, message):
    labelled["ring"] = labelled["ring"].astype(object)
    labelled.loc[7, "ring"] = stray
    with pytest.raises(F.FinetuneError, match=f"{message}.*id_str 'g7'"):
        F.labelled_rows(labelled, "ring")


def test_text_that_reads_as_missing_is_an_error(labelled):
    labelled["ring"] = ["ring", "disk"] * 15
    labelled.loc[3, "ring"] = "nan"
    with pytest.raises(F.FinetuneError, match="reads as a missing value.*'g3' = 'nan'"):
        F.labelled_rows(labelled, "ring")


def test_stated_classes_accept_a_rare_class_and_refuse_others(labelled):
    labelled.loc[7, "ring"] = 2
    assert len(F.labelled_rows(labelled, "ring", classes=[0, 1, 2])) == 30
    with pytest.raises(F.FinetuneError, match=r"not one of the stated classes \[0, 1\]"):
        F.labelled_rows(labelled, "ring", classes=[0, 1])
    y, classes = F._encode_classes(pd.Series([1, 0, 1]), [1, 0])
    assert classes == [1, 0] and list(y) == [0, 1, 0]


def test_infinite_regression_labels_are_refused(labelled):
    labelled["size"] = np.linspace(1, 2, 30)
    labelled.loc[4, "size"] = np.inf
    with pytest.raises(F.FinetuneError, match="infinite.*id_str 'g4'"):
        F.labelled_rows(labelled, "size", task="regression")


def test_training_that_turns_nan_stops_naming_the_batch_galaxies():
    import timm

    enc = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    meta = {"architecture": "resnet10t", "channels": 3, "task": "regression", "image_size": 16}
    model = F.FinetunedModel(enc, F.Head(int(enc.num_features), 1), meta)
    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    y = np.array([0.0, np.nan, 1.0, 0.5], dtype=np.float32)
    cfg = F.FinetuneConfig(task="regression", batch_size=4, max_epochs=1, progress=False)
    ids = np.array(["a", "b", "c", "d"])
    with pytest.raises(F.FinetuneError, match=r"turned NaN at epoch 1, step 1.*galaxies \['"):
        torch.manual_seed(0)
        F.train_full(model, images, y, None, None, cfg, ids=ids)


def test_a_head_whose_loss_turns_nan_stops_naming_the_rows():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    y = np.array([0, 1] * 6)
    X[3, 2] = np.nan  # a galaxy whose features are broken
    cfg = F.FinetuneConfig(progress=False)
    with pytest.raises(F.FinetuneError, match=r"rows \[3\] have NaN"):
        F._fit_head_steps(X, y, 2, cfg, steps=5)
    F._fit_head_steps(np.nan_to_num(X), y, 2, cfg, steps=5)  # and trains once they are fixed

"""The Galaxy Zoo 2 subset as a catalogue, framing (crops) and mixing surveys in training."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galaxy_helpers import data, images, manifests, representations, schema, transfer

MIRROR = Path(os.environ.get(data.MIRROR_ENV) or "/work/shared/data")


@pytest.fixture(scope="module")
def gz2(tmp_path_factory):
    if not (MIRROR / "gz2_kaggle_subset").is_dir():
        pytest.skip(f"mirror folder {MIRROR / 'gz2_kaggle_subset'} absent")
    cache = tmp_path_factory.mktemp("cache")
    return data.load_dataset(
        "gz2_kaggle_subset", cache_dir=cache, mirror=MIRROR, progress=False, offline=True
    )


@pytest.fixture(scope="module")
def raw():
    path = MIRROR / "gz2_kaggle_subset" / "data" / "exercise_3_debug" / "labels.csv"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return pd.read_csv(path).sort_values("GalaxyID").reset_index(drop=True)


def test_manifest_is_valid_and_pins_every_mirrored_file():
    manifest = data.load_manifest("gz2_kaggle_subset")
    assert data.validate_manifest(manifest) == []
    assert len(manifest.files) == 5001
    assert all("3f737e8a27287a34917e2224119574b825e9219c" in f.url for f in manifest.files)
    sums = MIRROR / "gz2_kaggle_subset" / "SHA256SUMS"
    if sums.is_file():
        listed = dict(line.split("  ")[::-1] for line in sums.read_text().splitlines() if line)
        assert {f.path: f.sha256 for f in manifest.files} == listed


def test_catalogue_follows_the_contract(gz2):
    dr5 = schema.DECALS_DR5
    assert len(gz2) == 5000 and gz2["id_str"].is_unique
    assert gz2["id_str"].map(type).eq(str).all()
    assert all(c in gz2.columns for c in dr5.answer_columns)
    counts = schema.vote_counts(gz2, dr5)  # validates: ints >= 0
    assert all(Path(p).is_file() for p in gz2["file_loc"].iloc[::250])
    assert all(Path(p).stem == i for p, i in zip(gz2["file_loc"], gz2["id_str"], strict=True))
    # only the three mapped questions have votes: every other one is unasked
    asked = {"smooth-or-featured-dr5", "disk-edge-on-dr5", "how-rounded-dr5"}
    for q, (start, stop) in zip(dr5.questions, dr5.answer_slices, strict=True):
        if q.name not in asked:
            assert counts[:, start:stop].sum() == 0, q.name
    assert (gz2["crop"] == 0.5).all()
    assert (gz2["split"] == "test").sum() == 1000 and (gz2["split"] == "train").sum() == 4000


def test_vote_counts_sum_down_the_tree_and_follow_the_fractions(gz2, raw):
    c = gz2.set_index("id_str").loc[raw["GalaxyID"].astype(str)]
    q1 = c[[f"smooth-or-featured-dr5_{a}" for a in ("smooth", "featured-or-disk", "artifact")]]
    assert (q1.sum(axis=1) == 40).all()
    q2 = c["disk-edge-on-dr5_yes"] + c["disk-edge-on-dr5_no"]
    featured = c["smooth-or-featured-dr5_featured-or-disk"]
    assert ((q2 == featured) | (q2 == 0)).all()
    q7 = c[[f"how-rounded-dr5_{a}" for a in ("round", "in-between", "cigar-shaped")]]
    smooth = c["smooth-or-featured-dr5_smooth"]
    assert ((q7.sum(axis=1) == smooth) | (q7.sum(axis=1) == 0)).all()
    # counts follow fraction x 40 to within one vote (rounding) on the first question
    assert np.abs(c["smooth-or-featured-dr5_smooth"].to_numpy() - 40 * raw["Class1.1"]).max() < 1


def test_odd_and_tags_are_downstream_labels_not_votes(gz2, raw):
    c = gz2.set_index("id_str").loc[raw["GalaxyID"].astype(str)]
    assert np.allclose(c["odd"].to_numpy(), raw["Class6.1"].to_numpy())
    ring = (raw["Class6.1"] > 0.5) & (raw["Class8.1"] > 0.5 * raw["Class6.1"])
    assert (c["tag_ring"].to_numpy() == ring.to_numpy()).all()
    assert (gz2["odd"] > 0.9).sum() == 56
    for tag in ("ring", "merger", "irregular", "disturbed", "other", "lens", "dust-lane"):
        assert gz2[f"tag_{tag}"].dtype == bool
    assert 80 <= gz2["tag_ring"].sum() <= 150 and 120 <= gz2["tag_merger"].sum() <= 185
    # nothing derived from Q6 / Q8 is a vote column of the tree
    assert not any(c.startswith(("odd", "tag_")) for c in schema.DECALS_DR5.answer_columns)


def test_largest_remainder_rounding_keeps_totals():
    shares = np.array([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.26, 0.74, 0.0]])
    counts = manifests._largest_remainder(shares, np.array([5, 40, 3]))
    assert counts.sum(axis=1).tolist() == [5, 40, 3]
    assert counts[2].tolist() == [1, 2, 0]


def test_a_fraction_out_of_range_names_the_column_and_row(tmp_path):
    frame = pd.DataFrame({"a": [0.2, 1.7], "b": [0.8, 0.0]})
    with pytest.raises(data.DataError, match=r"'a', row 1"):
        manifests._votes_from_fractions(
            frame, {"volunteers": 40, "questions": {"q": {"answers": {"x": "a", "y": "b"}}}}, "t"
        )


# --- framing ------------------------------------------------------------------------------
def _gradient(tmp_path, side=40):
    arr = np.zeros((side, side, 3), np.uint8)
    arr[..., 0] = np.arange(side)[None, :] * 5
    arr[..., 1] = np.arange(side)[:, None] * 5
    return images.save_image(arr, tmp_path / "g.png"), arr


def test_crop_keeps_the_centre_of_the_frame(tmp_path):
    path, arr = _gradient(tmp_path)
    assert np.array_equal(images.read_image(path, crop=0.5), arr[10:30, 10:30])
    assert np.array_equal(images.read_image(path), arr)
    batch = images.load_images([path, path], 20, progress=False, crop=[0.5, 1.0])
    assert np.array_equal(batch[0], arr[10:30, 10:30])
    assert not np.array_equal(batch[1], batch[0])


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "half"])
def test_a_bad_crop_is_refused(tmp_path, bad):
    path, _ = _gradient(tmp_path)
    with pytest.raises(ValueError, match="fraction of the frame"):
        images.read_image(path, crop=bad)


def test_catalogue_crops_multiply_the_survey_and_the_model_framing():
    cat = pd.DataFrame({"file_loc": ["a", "b"], "crop": [0.5, 1.0]})
    assert images.catalogue_crops(cat).tolist() == [0.5, 1.0]
    assert images.catalogue_crops(cat, {"framing": {"crop": 0.8}}).tolist() == [0.4, 0.8]
    assert images.catalogue_crops(cat.drop(columns="crop"), {}).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="row 1"):
        images.catalogue_crops(pd.DataFrame({"crop": [1.0, 0.0]}))


def test_odd_researcher_scores_match_the_papers_definition():
    odd = np.array([0.0, 0.09, 0.11, 0.5, 0.89, 0.91, 1.0])
    assert transfer.odd_researcher_scores(odd).tolist() == [0, 0, 1, 2, 4, 5, 5]
    with pytest.raises(ValueError):
        transfer.odd_researcher_scores([0.2, 1.2])


def test_linear_probe_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    signal = rng.normal(size=(200, 5)) + 3 * y[:, None]
    noise = rng.normal(size=(200, 5))
    assert transfer.linear_probe(signal, y, budgets=(10,), repeats=5)[10] > 0.95
    assert abs(transfer.linear_probe(noise, y, budgets=(10,), repeats=20)[10] - 0.5) < 0.1


def test_linear_probe_folds_the_scaler_into_one_product_exactly():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    X = rng.normal(3.0, [0.5, 2.0, 7.0], size=(200, 3))
    y = (X[:, 0] + 0.1 * X[:, 2] + rng.normal(0, 0.3, 200) > 3.3).astype(int)
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[:40], y[:40])
    np.testing.assert_allclose(transfer._decision_function(clf, X), clf.decision_function(X))


def test_unasked_questions_add_nothing_to_a_mixed_catalogues_loss(gz2):
    from galaxy_helpers import losses

    table = losses.loss_by_question(gz2.head(4))
    assert (table["questions asked"] <= 3).all()
    for column in ("has-spiral-arms", "bar", "bulge-size", "merging", "spiral-winding"):
        assert (table[column] == 0).all(), column
    assert (table["smooth-or-featured"] > 0).all()
    summed = table.iloc[:, 1:-1].sum(axis=1).to_numpy()  # each rounded to 0.01
    assert table["total"].to_numpy() == pytest.approx(summed, abs=0.06)


def _png_catalogue(folder, n: int, side: int, seed: int):
    """``n`` random ``side``-px PNGs in ``folder`` and a catalogue of them (ids a, b, c, ...)."""
    rng = np.random.default_rng(seed)
    paths = [
        images.save_image(
            rng.integers(0, 255, (side, side, 3), dtype=np.uint8), folder / f"{i}.png"
        )
        for i in range(n)
    ]
    ids = [chr(ord("a") + i) for i in range(n)]
    return pd.DataFrame({"id_str": ids, "file_loc": [str(p) for p in paths]}), paths


def test_a_comparison_decodes_each_image_once_for_all_three_encoders(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    cat, _ = _png_catalogue(tmp_path, 4, 80, seed=1)
    calls = []

    def counted(*args, **kwargs):
        calls.append(len(args[0]))
        return images.load_images(*args, **kwargs)

    monkeypatch.setattr(representations, "load_images", counted)
    features = transfer._features_by_encoder(cat, "course")
    assert calls == [4]  # one decode at the course checkpoint's size, shared by all three
    assert set(features) == {"representation", "random weights", "raw pixels"}
    monkeypatch.undo()
    alone = representations.extract_representations("course", cat, cache=False, progress=False)
    np.testing.assert_array_equal(features["representation"], alone.filter(like="feat_").to_numpy())


def test_raw_pixel_rows_are_decoded_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    cat, paths = _png_catalogue(tmp_path, 3, 64, seed=0)
    meta = {"image_size": 64, "channels": 3, "framing": {"crop": 1.0}}
    monkeypatch.setattr("galaxy_helpers.checkpoints.load_model", lambda *a, **k: (None, meta))
    first = transfer.encoder_features("pixels", cat)
    assert first.shape == (3, 32 * 32 * 3) and first.dtype == np.float32
    block = images.read_image(paths[1]).astype(np.float32) / 255
    expected = block.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).reshape(-1)
    assert np.allclose(first[1], expected, atol=1e-6)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(representations, "load_images", no_decoding)
    assert np.array_equal(transfer.encoder_features("pixels", cat), first)
    # another framing is another key: decoded again
    meta["framing"] = {"crop": 0.5}
    with pytest.raises(AssertionError, match="decoded again"):
        transfer.encoder_features("pixels", cat)


def test_raw_pixel_rows_read_the_images_as_the_model_does(tmp_path, monkeypatch):
    """A model that resamples as Zoobot does, not with lanczos, gets block means of its own input, and
    the encoders and the pixel rows still share one decode."""
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    cat, paths = _png_catalogue(tmp_path, 3, 80, seed=2)
    meta = {"image_size": 64, "channels": 3, "framing": {"crop": 1.0, "resample": "zoobot"}}
    monkeypatch.setattr("galaxy_helpers.checkpoints.load_model", lambda *a, **k: (None, meta))
    rows = transfer.encoder_features("pixels", cat)
    for path, row in zip(paths, rows, strict=True):
        own = images.read_image(path, 64, resample="zoobot").astype(np.float32) / 255
        assert np.allclose(row, own.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).reshape(-1))
    lanczos = images.read_image(paths[0], 64).astype(np.float32) / 255
    assert not np.allclose(rows[0], lanczos.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)).ravel())
    calls = []

    def counted(paths, size, *args, **kwargs):
        calls.append((size, kwargs.get("resample")))
        return images.load_images(paths, size, *args, **kwargs)

    monkeypatch.setattr(representations, "load_images", counted)
    meta["framing"]["resample"] = "lanczos"  # another resampling is another cache entry
    cache: dict = {}
    transfer.encoder_features("pixels", cat, cache=cache)
    transfer._read(cat, 64, images.catalogue_crops(cat, meta), cache, False, "lanczos")
    assert calls == [(64, "lanczos")]  # decoded once, and the encoders' read finds it

"""Tests of representation extraction, caching, PCA and the morphology map (tiny sizes)."""

import os

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from galaxy_helpers import representations as rep
from galaxy_helpers import training
from galaxy_helpers.images import load_images, save_image, to_tensor
from galaxy_helpers.models import GalaxyModel
from galaxy_helpers.training import cpu_has_native_bfloat16

SIZE = 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GalaxyModel("convnext_atto", schema=None, channels=3)
    m.metadata = {
        "architecture": "convnext_atto",
        "image_size": SIZE,
        "channels": 3,
        "mean": [0.1, 0.1, 0.1],
        "std": [0.2, 0.2, 0.2],
    }
    return m.eval()


@pytest.fixture()
def catalogue(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(11):
        # stored at 40 px, read at 32: extraction must resize like every other reader
        img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        path = save_image(img, tmp_path / f"g{i}.png")
        rows.append({"id_str": f"gal_{i}", "file_loc": str(path)})
    return pd.DataFrame(rows)


def bare_forward(model, catalogue):
    arr = load_images(catalogue["file_loc"].tolist(), SIZE, progress=False)
    meta = model.metadata
    with torch.inference_mode():
        return model.encode(to_tensor(arr, 3, meta["mean"], meta["std"])).numpy()


def test_extract_matches_bare_forward_and_keeps_order(model, catalogue, tmp_path):
    table = rep.extract_representations(
        model, catalogue, batch_size=4, cache=False, progress=False, amp=False
    )
    assert table["id_str"].tolist() == catalogue["id_str"].tolist()
    assert list(table.columns[1:4]) == ["feat_000", "feat_001", "feat_002"]
    assert table.shape == (11, 1 + model.representation_dim)
    np.testing.assert_allclose(
        table.iloc[:, 1:].to_numpy(), bare_forward(model, catalogue), rtol=1e-4, atol=1e-5
    )
    # a single new image embedded on the fly gets the same vector
    one = rep.embed_images([catalogue["file_loc"].iloc[3]], model, amp=False)
    np.testing.assert_allclose(
        one[0], table.iloc[3, 1:].to_numpy(dtype=np.float32), rtol=1e-4, atol=1e-5
    )


def test_bfloat16_extraction_is_close_to_float32_and_cached_apart(model, catalogue, tmp_path):
    cache = tmp_path / "cache"
    exact = rep.extract_representations(
        model, catalogue, cache_dir=cache, progress=False, amp=False
    )
    fast = rep.extract_representations(model, catalogue, cache_dir=cache, progress=False, amp=True)
    a, b = exact.iloc[:, 1:].to_numpy(), fast.iloc[:, 1:].to_numpy()
    assert not np.array_equal(a, b)  # bfloat16 really ran
    assert np.abs(a - b).mean() < 0.02 * np.abs(a).mean()
    assert len(list((cache / "representations").glob("*.parquet"))) == 2
    # "auto" is one of the two: the float32 table, or the bfloat16 one where this CPU has it
    auto = rep.extract_representations(model, catalogue, cache_dir=cache, progress=False)
    pd.testing.assert_frame_equal(auto, fast if cpu_has_native_bfloat16() else exact)
    assert len(list((cache / "representations").glob("*.parquet"))) == 2


def test_a_catalogue_is_decoded_once_for_every_encoder_and_baseline(
    model, catalogue, tmp_path, monkeypatch
):
    """The first extraction keeps the decoded pixels; another encoder of the same catalogue
    (notebook 04's random weights after notebook 03's model) and read_pixels (the raw-pixel
    baseline) read them back instead of decoding the images again."""
    cache = tmp_path / "cache"
    kw = dict(cache_dir=cache, progress=False, amp=False)
    rep.extract_representations(model, catalogue, batch_size=4, **kw)
    kept = list((cache / "representations").glob("decoded_*.npy"))
    assert len(kept) == 1
    fresh = load_images(catalogue["file_loc"].tolist(), SIZE, progress=False)
    np.testing.assert_array_equal(np.load(kept[0]), fresh)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the images should have been read from the cache")

    monkeypatch.setattr(rep, "load_images", no_decoding)
    other, _ = rep.random_weights_model(model.metadata, seed=1)
    rep.extract_representations(other, catalogue, **kw)
    crops = np.ones(len(catalogue))
    np.testing.assert_array_equal(rep.read_pixels(catalogue, SIZE, crops, cache_dir=cache), fresh)
    with pytest.raises(AssertionError, match="from the cache"):  # another size is decoded
        rep.read_pixels(catalogue, SIZE // 2, crops, cache_dir=cache)
    monkeypatch.undo()
    table = rep.extract_representations(other, catalogue, cache=False, progress=False, amp=False)
    again = rep.extract_representations(other, catalogue, **kw)  # its cached table
    pd.testing.assert_frame_equal(table, again, rtol=1e-4, atol=1e-5)

    # a replaced image file is a new catalogue; a corrupt cache file is decoded again
    save_image(fresh[0][::-1].copy(), catalogue["file_loc"].iloc[0])
    os.utime(catalogue["file_loc"].iloc[0], ns=(1, 1))
    replaced = rep.read_pixels(catalogue, SIZE, crops, cache_dir=cache)
    assert not np.array_equal(replaced[0], fresh[0])
    rep._RECENT.clear()  # a new process: only the files on disk
    for path in (cache / "representations").glob("decoded_*.npy"):
        path.write_bytes(b"truncated")
    np.testing.assert_array_equal(
        rep.read_pixels(catalogue, SIZE, crops, cache_dir=cache), replaced
    )
    # catalogues too big to keep are decoded every time
    monkeypatch.setattr(rep, "PIXEL_CACHE_MAX_BYTES", 0)
    big = tmp_path / "big"
    rep.extract_representations(model, catalogue, cache_dir=big, progress=False, amp=False)
    rep.read_pixels(catalogue, SIZE, crops, cache_dir=big)
    assert not list(big.glob("representations/decoded_*"))


def test_rows_decoded_earlier_in_the_process_are_gathered_not_decoded(
    model, catalogue, tmp_path, monkeypatch
):
    """Notebook 06 reads the real rings for their representations, then the labelled rows and
    the rest for training and prediction: each subset comes from the first decode."""
    cache = tmp_path / "cache"
    rep.extract_representations(model, catalogue, cache_dir=cache, progress=False, amp=False)
    fresh = load_images(catalogue["file_loc"].tolist(), SIZE, progress=False)
    decoded = []
    real_load = rep.load_images
    monkeypatch.setattr(
        rep, "load_images", lambda p, *a, **k: decoded.append(p) or real_load(p, *a, **k)
    )
    subset = catalogue.iloc[[7, 2, 5]]
    kept = len(list(cache.glob("representations/decoded_*.npy")))
    got = rep.read_pixels(subset, SIZE, np.ones(3), cache_dir=cache)
    np.testing.assert_array_equal(got, fresh[[7, 2, 5]])
    assert decoded == []
    assert len(list(cache.glob("representations/decoded_*.npy"))) == kept + 1  # for next time
    got[:] = 0  # the caller's copy: what is kept stays as decoded
    np.testing.assert_array_equal(
        rep.read_pixels(subset, SIZE, np.ones(3), cache_dir=cache), fresh[[7, 2, 5]]
    )
    assert decoded == []
    # another framing, or a replaced file, is decoded again
    rep.read_pixels(subset, SIZE, np.full(3, 0.5), cache_dir=cache)
    assert len(decoded) == 1
    save_image(fresh[2][::-1].copy(), catalogue["file_loc"].iloc[2])
    os.utime(catalogue["file_loc"].iloc[2], ns=(1, 1))
    again = rep.read_pixels(subset, SIZE, np.ones(3), cache_dir=cache)
    assert len(decoded) == 2 and not np.array_equal(again[1], fresh[2])
    # the memory it may hold is bounded: the oldest catalogues go first
    monkeypatch.setattr(rep, "RECENT_PIXELS_MAX_BYTES", fresh[:3].nbytes)
    rep.read_pixels(catalogue.iloc[:2], SIZE, np.full(2, 0.7), cache_dir=cache)  # decoded, kept
    assert sum(a.nbytes for _, a in rep._RECENT.values()) <= fresh[:3].nbytes


def test_extract_is_cached_by_model_and_catalogue(model, catalogue, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = rep.extract_representations(model, catalogue, cache_dir=cache, progress=False)
    files = list((cache / "representations").glob("*.parquet"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(rep, "_encode_stream", fail)
    again = rep.extract_representations(model, catalogue, cache_dir=cache, progress=False)
    pd.testing.assert_frame_equal(first, again)
    monkeypatch.undo()
    # a different catalogue (one galaxy fewer) and different weights are new cache entries
    rep.extract_representations(model, catalogue.iloc[:5], cache_dir=cache, progress=False)
    other, meta = rep.random_weights_model(model.metadata, seed=1)
    rep.extract_representations(other, catalogue, cache_dir=cache, progress=False)
    assert len(list((cache / "representations").glob("*.parquet"))) == 3
    assert rep.model_hash(model, model.metadata) != rep.model_hash(other, meta)
    # a table made by code that has since changed, or by another torch, is not read back
    monkeypatch.setattr(rep.core, "source_key", lambda *modules: "edited")
    rep.extract_representations(model, catalogue, cache_dir=cache, progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(training, "numerics", lambda device=None: {"torch": "another"})
    rep.extract_representations(model, catalogue, cache_dir=cache, progress=False)
    assert len(list((cache / "representations").glob("*.parquet"))) == 5


def test_catalogue_errors(model, catalogue):
    with pytest.raises(ValueError, match="missing columns \\['file_loc'\\]"):
        rep.extract_representations(model, catalogue[["id_str"]], cache=False)
    with pytest.raises(ValueError, match="empty"):
        rep.extract_representations(model, catalogue.iloc[:0], cache=False)
    broken = catalogue.copy()
    broken.loc[2, "file_loc"] = "/nowhere/g2.png"
    with pytest.raises(FileNotFoundError, match="row 2 \\(id 'gal_2'\\).*/nowhere/g2.png"):
        rep.extract_representations(model, broken, cache=False)
    bare = GalaxyModel("convnext_atto", schema=None)
    with pytest.raises(ValueError, match="image_size"):
        rep.extract_representations(bare, catalogue, cache=False)


def test_pca_full_and_incremental_agree():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1200, 3)) * [5.0, 2.0, 1.0]
    x = latent @ rng.standard_normal((3, 20)) + 0.01 * rng.standard_normal((1200, 20))
    table = pd.DataFrame(x, columns=rep.feature_columns(20))
    table.insert(0, "id_str", [f"g{i}" for i in range(1200)])
    full = rep.fit_pca(table, n_components=3, incremental=False)
    inc = rep.fit_pca(table, n_components=3, incremental=True, batch_size=300)
    assert inc.incremental_ and not full.incremental_
    np.testing.assert_allclose(
        full.explained_variance_ratio_, inc.explained_variance_ratio_, rtol=1e-3
    )
    assert full.explained_variance_ratio_.sum() > 0.99
    out = full.transform(table)
    assert list(out.columns) == ["id_str", "pca_000", "pca_001", "pca_002"]
    assert out["id_str"].tolist() == table["id_str"].tolist()
    assert isinstance(full.transform(x[:2]), np.ndarray)
    scaled = rep.fit_pca(table, n_components=3, standardise=True).transform(x)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, rtol=0.01)
    with pytest.raises(ValueError, match="n_components=30"):
        rep.fit_pca(table, n_components=30)
    with pytest.raises(ValueError, match="fitted on 20"):
        full.transform(x[:, :5])


def test_explained_variance_plot_and_morphology_map(catalogue):
    import matplotlib.image

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.standard_normal((11, 5)), columns=rep.feature_columns(5))
    x.insert(0, "id_str", catalogue["id_str"])
    pca = rep.fit_pca(x, n_components=3)
    fig = rep.plot_explained_variance(pca)
    assert "variance" in fig.axes[0].get_ylabel()
    coords = pca.transform(x)
    fig = rep.morphology_map(coords, catalogue["file_loc"].tolist(), n_cells=3)
    shown = [a for a in fig.axes[0].get_children() if isinstance(a, matplotlib.image.AxesImage)]
    assert 1 <= len(shown) <= 9
    arrays = load_images(catalogue["file_loc"].tolist(), 16, progress=False)
    fig = rep.morphology_map(coords, arrays, n_cells=50, clip_percentile=0)
    shown = [a for a in fig.axes[0].get_children() if isinstance(a, matplotlib.image.AxesImage)]
    assert len(shown) == 11  # every galaxy gets its own cell on a fine grid
    with pytest.raises(ValueError, match="11 positions but 3 images"):
        rep.morphology_map(coords, arrays[:3])


def test_pixel_features_and_random_weights(model, catalogue):
    pix = rep.pixel_features(catalogue, image_size=8, channels=1, progress=False)
    assert pix.shape == (11, 1 + 64)
    assert pix.iloc[:, 1:].to_numpy().max() <= 1.0
    twin, meta = rep.random_weights_model(model.metadata, seed=0)
    assert twin.representation_dim == model.representation_dim
    assert meta["image_size"] == SIZE and "random" in meta["weights"]


def test_pca_of_scaled_features_is_not_ruled_by_one_loud_channel():
    # Channel 0 has 100x the variance of the rest but carries nothing shared; channels 1-9
    # share one weak signal. A plain PCA's first component is channel 0; after standardising
    # each channel it is the shared signal.
    rng = np.random.default_rng(1)
    signal = rng.standard_normal(2000)
    x = 0.5 * rng.standard_normal((2000, 10)) + signal[:, None]
    x[:, 0] = 100.0 * rng.standard_normal(2000)
    x[:, -1] = 3.0  # a dead channel must not divide by zero
    plain = rep.fit_pca(x, n_components=1)
    scaled = rep.fit_pca(x, n_components=1, scale_features=True)
    corr = lambda z: abs(np.corrcoef(z[:, 0], signal)[0, 1])  # noqa: E731
    assert corr(plain.transform(x)) < 0.2
    assert corr(scaled.transform(x)) > 0.95
    # the scaling learnt on the fit is applied to new rows too
    np.testing.assert_allclose(scaled.transform(x[:5]), scaled.transform(x)[:5], rtol=1e-5)
    assert np.isfinite(scaled.transform(x)).all()


def test_pixels_given_to_extraction_are_used_and_checked(model, catalogue):
    arr = load_images(catalogue["file_loc"].tolist(), SIZE, progress=False)
    given = rep.extract_representations(
        model, catalogue, cache=False, progress=False, images=lambda: arr
    )
    read = rep.extract_representations(model, catalogue, cache=False, progress=False)
    pd.testing.assert_frame_equal(given, read)
    with pytest.raises(ValueError, match=r"one per catalogue row"):
        rep.extract_representations(model, catalogue, cache=False, images=arr[:3])

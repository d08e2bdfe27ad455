"""Zoobot encoders see the pixels Zoobot itself feeds them.

Our path (``pretrained`` metadata -> ``images.load_images`` with the model's framing ->
``images.to_tensor``) is compared on the same image files with Zoobot's inference transform:
the copy in ``tests/zoobot_reference.py`` always (torchvision is one of our dependencies),
and the installed ``galaxy-datasets`` package when it is there (``.ci/run`` installs it and
zoobot with ``--no-deps``; elsewhere those tests skip).

Tolerances: colour views must be the same uint8 pixels (float32 difference <= 1e-6);
greyscale views may differ by 2/255 at most and 0.5/255 on average, because Zoobot converts
to grey before resampling (rounding to uint8 in between) and we convert after.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from zoobot_reference import (
    MINIMAL_VIEW_CONFIG,
    zoobot_inference_transform,
    zoobot_view,
)

from galaxy_helpers import images, models, pretrained

MIRROR = Path(os.environ.get("GALAXY_DATA_MIRROR") or "/work/shared/data")
REAL = {
    "decals_png": ("gz_decals_rings/data/example_images/basic", "*.png"),
    "gz2_jpg": ("gz2_kaggle_subset/data/exercise_3_debug/images", "*.jpg"),
}
N_REAL = 6  # files per folder: enough for JPEG and PNG, DECaLS and SDSS, in seconds
COLOUR_ATOL = 1e-6
GREY_MAX, GREY_MEAN = 2 / 255, 0.5 / 255


def _real_paths(which: str) -> list[str]:
    folder, pattern = REAL[which]
    found = sorted((MIRROR / folder).glob(pattern))[:N_REAL]
    if not found:
        pytest.skip(f"no {pattern} under {MIRROR / folder}: set GALAXY_DATA_MIRROR")
    return [str(p) for p in found]


@pytest.fixture(scope="module")
def synthetic_paths(tmp_path_factory) -> list[str]:
    """Galaxy-like test images (blobs, a disk, stars, noise) at three square sizes, PNG and
    JPEG, for the checks that must run without the mirror."""
    folder = tmp_path_factory.mktemp("zoobot_views")
    rng = np.random.default_rng(7)
    paths = []
    for size, suffix in ((424, ".png"), (256, ".jpg"), (301, ".png")):
        yy, xx = np.mgrid[:size, :size] / size - 0.5
        img = np.zeros((size, size, 3))
        for colour, width in (((1.0, 0.8, 0.5), 0.08), ((0.4, 0.6, 1.0), 0.2)):
            img += np.exp(-(xx**2 + (yy / 0.6) ** 2) / width**2)[..., None] * colour
        for _ in range(12):
            x, y = rng.integers(0, size, 2)
            img[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] += rng.uniform(0.3, 1.0, 3)
        img += rng.normal(0, 0.03, img.shape)
        arr = (np.clip(img / img.max(), 0, 1) * 255).astype(np.uint8)
        path = folder / f"galaxy_{size}{suffix}"
        Image.fromarray(arr).save(path, **({"quality": 90} if suffix == ".jpg" else {}))
        paths.append(str(path))
    return paths


def _ours(paths, channels: int, metadata: dict | None = None) -> np.ndarray:
    """Our preprocessing of a Zoobot encoder's inputs, as every loader does it."""
    meta = {"channels": channels, **pretrained.zoobot_preprocessing(channels), **(metadata or {})}
    crops = images.catalogue_crops(pd.DataFrame({"file_loc": paths}), meta)
    arr = images.load_images(
        paths,
        int(meta["image_size"]),
        progress=False,
        crop=crops,
        resample=images.model_resample(meta),
    )
    return images.to_tensor(
        arr,
        channels=channels,
        mean=meta["mean"],
        std=meta["std"],
        greyscale=meta.get("greyscale", "mean"),
    ).numpy()


def _assert_same_view(ours: np.ndarray, theirs: np.ndarray, channels: int) -> None:
    assert ours.shape == theirs.shape == (len(ours), channels, 224, 224)
    diff = np.abs(ours - theirs)
    if channels == 3:
        assert diff.max() <= COLOUR_ATOL, f"max |difference| {diff.max() * 255:.3f}/255"
    else:
        assert diff.max() <= GREY_MAX and diff.mean() <= GREY_MEAN, (
            f"max {diff.max() * 255:.3f}/255, mean {diff.mean() * 255:.3f}/255"
        )


def _reference(paths, channels: int) -> np.ndarray:
    transform = zoobot_inference_transform(greyscale=channels == 1)
    return np.stack([zoobot_view(p, transform) for p in paths])


# --- the frozen contract: runs everywhere -------------------------------------------------
def test_zoobot_preprocessing_constants_are_zoobots_minimal_view():
    colour, grey = pretrained.zoobot_preprocessing(3), pretrained.zoobot_preprocessing(1)
    assert colour["image_size"] == MINIMAL_VIEW_CONFIG["output_size"] == 224
    zoom = MINIMAL_VIEW_CONFIG["random_affine"]["scale"]
    assert zoom == (pretrained.ZOOBOT_ZOOM,) * 2 and colour["framing"]["crop"] == 1 / zoom[0]
    assert colour["framing"]["resample"] == "zoobot"
    assert colour["mean"] is None and colour["std"] is None and not MINIMAL_VIEW_CONFIG["normalize"]
    assert "greyscale" not in colour and grey["greyscale"] == "luma"


def test_luma_is_pils_greyscale_and_the_default_is_still_the_mean():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (2, 9, 9, 3), dtype=np.uint8)
    pil = np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in arr]) / 255
    luma = images.to_tensor(arr, channels=1, greyscale="luma")[:, 0].numpy()
    assert np.abs(luma - pil).max() <= 0.5 / 255 + 1e-6  # PIL rounds to whole levels
    mean = images.to_tensor(arr, channels=1)
    assert torch.equal(
        mean, torch.as_tensor(arr).permute(0, 3, 1, 2).float().div(255).mean(1, True)
    )
    with pytest.raises(ValueError, match="greyscale"):
        images.to_tensor(arr, channels=1, greyscale="average")


@pytest.mark.parametrize("channels", [3, 1])
def test_our_view_matches_the_zoobot_reference_on_synthetic_images(synthetic_paths, channels):
    _assert_same_view(
        _ours(synthetic_paths, channels), _reference(synthetic_paths, channels), channels
    )


@pytest.mark.parametrize("which", sorted(REAL))
@pytest.mark.parametrize("channels", [3, 1])
def test_our_view_matches_the_zoobot_reference_on_real_images(which, channels):
    paths = _real_paths(which)
    _assert_same_view(_ours(paths, channels), _reference(paths, channels), channels)


def test_lanczos_framing_is_not_close_enough(synthetic_paths):
    """The check has teeth: the same crop resampled our usual way misses the tolerance."""
    lanczos = _ours(synthetic_paths, 3, {"framing": {"crop": 1 / 1.2}})
    assert np.abs(lanczos - _reference(synthetic_paths, 3)).max() > 4 / 255


def test_per_row_crops_zoom_as_zoobot_would(synthetic_paths):
    """A catalogue's own framing (``crop`` column) multiplies the model's: Zoobot's view of
    the same file zoomed by that much more."""
    import torchvision.transforms.v2 as T

    paths = synthetic_paths[:1]
    meta = {"channels": 3, **pretrained.zoobot_preprocessing(3)}
    crops = images.catalogue_crops(pd.DataFrame({"file_loc": paths, "crop": [0.5]}), meta)
    arr = images.load_images(paths, 224, progress=False, crop=crops, resample="zoobot")
    zoom = np.float32(1 / crops[0])
    transform = T.Compose(
        [
            T.RandomAffine(
                degrees=0, scale=(zoom, zoom), interpolation=T.InterpolationMode.BILINEAR
            ),
            T.Resize(224, antialias=True),
            T.PILToTensor(),
        ]
    )
    expected = zoobot_view(paths[0], transform).transpose(1, 2, 0)
    assert np.array_equal(arr[0], expected)


@pytest.mark.parametrize("channels", [3, 1])
def test_encoding_a_zoobot_encoder_feeds_it_the_zoobot_view(synthetic_paths, tmp_path, channels):
    """End to end: load_pretrained_encoder's metadata drives models.encode_images."""
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    folder = tmp_path / "zoobot-encoder-tiny"
    save_for_hf(timm.create_model("test_convnext", num_classes=0), str(folder))
    model = pretrained.load_pretrained_encoder(folder, channels=channels)
    meta = model.metadata
    paths = synthetic_paths
    crops = images.catalogue_crops(pd.DataFrame({"file_loc": paths}), meta)
    arr = images.load_images(
        paths, meta["image_size"], progress=False, crop=crops, resample=images.model_resample(meta)
    )
    ours = models.encode_images(model, arr, progress=False)
    with torch.no_grad():
        if channels == 3:  # the same pixels as Zoobot's, so the same features
            expected = torch.as_tensor(_reference(paths, channels))
        else:  # Zoobot's greyscale (the pixels are compared with Zoobot's above)
            expected = images.to_tensor(arr, channels=1, greyscale="luma")
        expected = model.encode(expected).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_every_loader_of_an_encoder_reads_the_zoobot_view(synthetic_paths, tmp_path):
    """Representations, embeddings, finetuning and the transfer protocols read files through
    the encoder's framing and resampling, so they all see Zoobot's pixels."""
    import timm
    from timm.models._hub import save_for_hf

    from galaxy_helpers import finetuning, representations, transfer

    torch.manual_seed(0)
    folder = tmp_path / "zoobot-encoder-tiny"
    save_for_hf(timm.create_model("test_convnext", num_classes=0), str(folder))
    model = pretrained.load_pretrained_encoder(folder)
    paths = synthetic_paths
    catalogue = pd.DataFrame({"id_str": [f"g{i}" for i in range(len(paths))], "file_loc": paths})
    reference = _reference(paths, 3)
    with torch.no_grad():
        expected = model.encode(torch.as_tensor(reference)).numpy()
    exact = dict(cache=False, progress=False, amp=False)  # float32, to compare with the reference
    table = representations.extract_representations(model, catalogue, **exact)
    np.testing.assert_allclose(table.filter(like="feat_").to_numpy(), expected, atol=1e-4)
    one = representations.embed_images(paths, model, amp=False)
    np.testing.assert_allclose(one, expected, atol=1e-4)
    # the protocols extract at the default precision (bfloat16 where native): the same table
    auto = representations.extract_representations(model, catalogue, cache=False, progress=False)
    np.testing.assert_array_equal(
        transfer.encoder_features(model, catalogue), auto.filter(like="feat_").to_numpy()
    )
    src = finetuning.load_encoder(model)
    assert src.framing == model.metadata["framing"] and src.image_size == 224
    pixels = src.read(catalogue).transpose(0, 3, 1, 2)
    assert np.array_equal(pixels, np.rint(reference * 255).astype(np.uint8))


# --- against the installed packages: runs where they are installed -----------------------
def _upstream():
    return pytest.importorskip("galaxy_datasets.transforms", reason="galaxy-datasets not installed")


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def test_frozen_config_is_the_installed_minimal_view_config():
    upstream = _upstream()
    omegaconf = pytest.importorskip("omegaconf")
    installed = omegaconf.OmegaConf.to_container(upstream.minimal_view_config())
    assert _plain(installed) == _plain(MINIMAL_VIEW_CONFIG)
    # ...and it is what CatalogDataModule uses at inference when given no transform.
    spec = importlib.util.find_spec("galaxy_datasets")
    source = (Path(spec.origin).parent / "pytorch" / "galaxy_datamodule.py").read_text()
    assert "self.test_transform = get_galaxy_transform(minimal_view_config())" in source


@pytest.mark.parametrize("channels", [3, 1])
def test_reference_copy_is_the_installed_transform(synthetic_paths, channels):
    upstream = _upstream()
    cfg = upstream.minimal_view_config()
    cfg.greyscale = channels == 1
    paths = synthetic_paths + [p for which in REAL for p in _real_paths_or_none(which)]
    theirs = np.stack([zoobot_view(p, upstream.get_galaxy_transform(cfg)) for p in paths])
    assert np.array_equal(_reference(paths, channels), theirs)


def _real_paths_or_none(which: str) -> list[str]:
    folder, pattern = REAL[which]
    return [str(p) for p in sorted((MIRROR / folder).glob(pattern))[:2]]


@pytest.mark.parametrize("which", sorted(REAL))
@pytest.mark.parametrize("channels", [3, 1])
def test_our_view_matches_the_installed_zoobot_transform_on_real_images(which, channels):
    upstream = _upstream()
    paths = _real_paths(which)
    cfg = upstream.minimal_view_config()
    cfg.greyscale = channels == 1
    theirs = np.stack([zoobot_view(p, upstream.get_galaxy_transform(cfg)) for p in paths])
    _assert_same_view(_ours(paths, channels), theirs, channels)

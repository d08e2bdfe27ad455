"""Images under bad input: decompression bombs, 16-bit files with a hot pixel, 1 x 1 files.
Each is an ImageReadError naming the file (so every caller names or skips it), never PIL's own
exception, a galaxy darkened by its brightest pixel or a flat "galaxy" upscaled from one pixel."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from toy_catalogue import make_toy_catalogue

from galaxy_helpers import catalogue as C
from galaxy_helpers import images
from galaxy_helpers import representations as R
from galaxy_helpers import training as T
from galaxy_helpers.images import ImageReadError, load_images, read_image, save_image


def _bomb(path, side=20_000):
    """A real decompression bomb: a 1 KB PNG that declares side x side RGB pixels (1.2 GB)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * (1 << 20), 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )
    return path


def _rgb(path, side=40, value=100):
    return save_image(np.full((side, side, 3), value, np.uint8), path)


def _grey16(path, arr):
    Image.fromarray(np.asarray(arr, dtype=np.uint16)).save(path)
    return path


# ---------------------------------------------------------------- decompression bombs
def test_decompression_bomb_is_an_image_read_error_naming_the_file(tmp_path):
    bomb = _bomb(tmp_path / "bomb.png")
    with pytest.raises(ImageReadError, match=r"bomb\.png: image too large.*allow_large_images"):
        read_image(bomb, size=32)
    with pytest.raises(ImageReadError, match="bomb.png"):
        load_images([_rgb(tmp_path / "ok.png"), bomb], size=32, progress=False)


def test_image_in_pils_warning_zone_is_refused_too(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 x 40 = 1600: PIL only warns
    big = _rgb(tmp_path / "big.png")
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(ImageReadError, match=r"big\.png: image too large: 40 x 40 = 1,600"):
            read_image(big)
    with warnings.catch_warnings():  # a user who turns warnings into errors gets the same
        warnings.simplefilter("error")
        with pytest.raises(ImageReadError, match=r"big\.png.*allow_large_images\(1600\)"):
            read_image(big)


def test_allow_large_images_raises_the_limit_on_purpose(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = _rgb(tmp_path / "big.png")
    previous = images.allow_large_images(1600)
    assert previous == 1000 and Image.MAX_IMAGE_PIXELS == 1600  # PIL's own setting, no other
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(big, size=16).shape == (16, 16, 3)
    assert images.allow_large_images(None) == 1600
    assert read_image(big).shape == (40, 40, 3)
    images.allow_large_images(previous)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageReadError):
        read_image(big)
    for bad in (0, -5, 2.5, "many", True):
        with pytest.raises((ValueError, TypeError)):
            images.allow_large_images(bad)


def test_validate_catalogue_lists_every_problem_including_bombs(tmp_path):
    good = _rgb(tmp_path / "good.png")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:60])
    files = {
        "good": good,
        "bomb": _bomb(tmp_path / "bomb.png"),
        "dot": _rgb(tmp_path / "dot.png", side=1),
        "cut": truncated,
        "gone": tmp_path / "gone.png",
    }
    df = pd.DataFrame({"id_str": list(files), "file_loc": [str(p) for p in files.values()]})
    for mode in ("full", "header"):
        report = C.validate_catalogue(df, check_images=mode, progress=False)
        problems = dict(zip(report.errors["id_str"], report.errors["problem"], strict=True))
        assert set(problems) == {"bomb", "dot", "cut", "gone"} - (
            {"cut"} if mode == "header" else set()
        )
        assert problems["bomb"].startswith("image too large")
        assert "allow_large_images" in str(report)
        assert (
            problems["dot"]
            == "image too small: 1 x 1 pixels, under the 8 px that read_image needs on the shorter side"
        )
    with pytest.raises(C.CatalogueError, match="bomb.png"):
        C.load_catalogue(df, progress=False)


def test_training_skips_or_names_bombs_and_tiny_images(tmp_path):
    toy = make_toy_catalogue(tmp_path / "toy", n=24, size=32)
    toy.loc[3, "file_loc"] = str(_bomb(tmp_path / "bomb.png"))
    toy.loc[5, "file_loc"] = str(_rgb(tmp_path / "dot.png", side=1))
    cfg = T.TrainConfig(
        architecture="test_convnext",
        image_size=32,
        batch_size=8,
        progress=False,
        epochs=1,
        max_steps_per_epoch=1,
    )
    with pytest.raises(T.CatalogueError, match=r"(?s)bomb\.png: image too large.*dot\.png"):
        T.train(toy, cfg)
    cfg.skip_bad_images = True
    _, history = T.train(toy, cfg)
    skipped = {s["id_str"]: s for s in history.data.skipped}
    assert set(skipped) == {"toy3", "toy5"}
    assert "too large" in skipped["toy3"]["error"] and "1 x 1" in skipped["toy5"]["error"]


def test_extract_representations_names_the_bomb(tmp_path):
    from galaxy_helpers.models import GalaxyModel

    torch.manual_seed(0)
    model = GalaxyModel("test_convnext", schema=None, channels=3).eval()
    model.metadata = {"architecture": "test_convnext", "image_size": 32, "channels": 3}
    paths = [_rgb(tmp_path / f"g{i}.png", value=20 * i) for i in range(3)]
    paths.append(_bomb(tmp_path / "bomb.png"))
    df = pd.DataFrame({"id_str": [f"g{i}" for i in range(4)], "file_loc": [str(p) for p in paths]})
    with pytest.raises(ImageReadError, match=r"bomb\.png: image too large"):
        R.extract_representations(model, df, batch_size=2, cache=False, progress=False)


# ---------------------------------------------------------------- 16-bit scaling
def test_one_hot_pixel_does_not_darken_a_16_bit_galaxy(tmp_path):
    galaxy = np.full((32, 32), 20_000, np.uint16)
    galaxy[8:24, 8:24] = 40_000
    hot = galaxy.copy()
    hot[0, 0] = 65_535
    plain = read_image(_grey16(tmp_path / "plain.png", galaxy))
    spiked = read_image(_grey16(tmp_path / "spiked.png", hot))
    np.testing.assert_array_equal(plain[1:, 1:], spiked[1:, 1:])  # same galaxy, same pixels
    assert plain[16, 16, 0] == round(40_000 * 255 / 65_535) == 156
    assert plain[0, 0, 0] == round(20_000 * 255 / 65_535) == 78


def test_16_bit_scale_is_the_same_for_every_image_of_a_catalogue(tmp_path):
    faint = _grey16(tmp_path / "faint.png", np.full((32, 32), 1000))
    bright = _grey16(tmp_path / "bright.png", np.full((32, 32), 50_000))
    batch = load_images([faint, bright], size=16, progress=False)
    assert batch[0].max() == 4 and batch[1].min() == 195  # not both 255
    # an 8-bit image saved as 16-bit (v * 257) reads back exactly
    eight = np.random.default_rng(0).integers(0, 200, (24, 24)).astype(np.uint16)
    back = read_image(_grey16(tmp_path / "x257.png", eight * 257))
    np.testing.assert_array_equal(back[..., 0], eight)
    # float images span [0, 1]
    Image.fromarray(np.full((20, 20), 0.5, np.float32)).save(tmp_path / "float.tif")
    assert read_image(tmp_path / "float.tif")[0, 0, 0] == 128


# ---------------------------------------------------------------- tiny images
@pytest.mark.parametrize("shape", [(1, 1), (7, 40), (40, 3)])
def test_tiny_images_are_refused_naming_file_and_size(tmp_path, shape):
    path = save_image(np.full((*shape, 3), 200, np.uint8), tmp_path / "tiny.png")
    h, w = shape
    with pytest.raises(ImageReadError, match=rf"tiny\.png: image too small: {w} x {h} pixels"):
        read_image(path, size=64)


def test_smallest_accepted_image_and_8_bit_rgb_unchanged(tmp_path):
    assert read_image(_rgb(tmp_path / "eight.png", side=images.MIN_IMAGE_SIDE)).shape == (8, 8, 3)
    arr = np.random.default_rng(1).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    path = save_image(arr, tmp_path / "rgb.png")
    expected = np.asarray(Image.fromarray(arr).resize((32, 32), Image.LANCZOS))
    np.testing.assert_array_equal(read_image(path, size=32), expected)

import numpy as np
import pytest
import torch
from PIL import Image

from galaxy_helpers.images import ImageReadError, load_images, read_image, save_image, to_tensor


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "RGB"])
def test_any_mode_becomes_rgb_uint8(tmp_path, mode):
    arr = (np.random.default_rng(0).random((40, 30)) * 200).astype(np.uint8)
    img = (
        Image.fromarray(arr).convert(mode)
        if mode != "I;16"
        else Image.fromarray(arr.astype(np.uint16) * 250)
    )
    path = tmp_path / "g.png"
    img.save(path)
    out = read_image(path, size=16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_non_square_is_centre_cropped(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 255
    save_image(arr, tmp_path / "wide.png")
    assert read_image(tmp_path / "wide.png").shape == (20, 20, 3)
    assert read_image(tmp_path / "wide.png").min() == 255


def test_truncated_and_missing_files_name_the_file(tmp_path):
    good = tmp_path / "good.png"
    save_image(np.zeros((32, 32, 3), np.uint8), good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        load_images([good, tmp_path / "missing.png"], size=16, progress=False)
    with pytest.raises(ValueError, match="whole number"):
        read_image(good, size=3.5)


def test_to_tensor_layout_and_normalisation():
    batch = np.full((2, 4, 4, 3), 255, np.uint8)
    t = to_tensor(batch, channels=3, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert t.shape == (2, 3, 4, 4) and t.dtype == torch.float32
    assert torch.allclose(t, torch.full_like(t, 2.0))
    assert to_tensor(batch, channels=1).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="channels"):
        to_tensor(batch, channels=2)


def test_to_tensor_channels_last_keeps_values_and_batches_stay_nhwc():
    from galaxy_helpers.finetuned import _augment

    batch = np.random.default_rng(0).integers(0, 256, (6, 5, 5, 3), dtype=np.uint8)
    nchw = to_tensor(batch, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    nhwc = to_tensor(batch, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5], channels_last=True)
    assert nchw.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw, nhwc)
    # finetuning indexes and augments these batches (finetuned.train_full): still NHWC
    picked = nhwc[torch.as_tensor([4, 0, 2])]
    turned = _augment(picked, torch.Generator().manual_seed(0))
    assert turned.is_contiguous(memory_format=torch.channels_last)

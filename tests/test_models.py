"""GalaxyModel, predicted fractions and checkpoint round-trips (tiny inputs, CPU)."""

import json

import numpy as np
import pytest
import torch

from galaxy_helpers.models import (
    CheckpointError,
    GalaxyModel,
    encode_images,
    load_checkpoint,
    predict_concentrations,
    predict_fractions,
    save_checkpoint,
)
from galaxy_helpers.schema import DECALS_DR5, GZ2, Question, Schema


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GalaxyModel("convnext_atto", schema=DECALS_DR5).eval()


def test_forward_gives_concentrations_in_range(model):
    x = torch.randn(3, 3, 32, 32) * 5
    with torch.no_grad():
        conc = model(x)
        z = model.encode(x)
    assert conc.shape == (3, DECALS_DR5.n_answers)
    assert (conc > 1).all() and (conc < 101).all()
    assert z.shape == (3, model.representation_dim) == (3, 320)


def test_test_time_augmentation_averages_the_eight_orientations(model):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    views = [np.rot90(v, k, axes=(1, 2)) for v in (images, images[:, :, ::-1]) for k in range(4)]
    by_hand = np.mean([predict_concentrations(model, v.copy(), progress=False) for v in views], 0)
    tta = predict_concentrations(model, images, batch_size=2, progress=False, tta=True)
    np.testing.assert_allclose(tta, by_hand, rtol=1e-4, atol=1e-4)
    # A random network is not orientation-invariant, so the average really differs.
    assert np.abs(tta - predict_concentrations(model, images, progress=False)).max() > 1e-3
    # An image that looks the same in every orientation gets its single-view answer.
    yy, xx = np.mgrid[:32, :32] - 15.5
    round_blob = np.repeat((255 * np.exp(-(xx**2 + yy**2) / 50))[None, ..., None], 3, -1)
    round_blob = round_blob.astype(np.uint8)
    np.testing.assert_allclose(
        predict_concentrations(model, round_blob, progress=False, tta=True),
        predict_concentrations(model, round_blob, progress=False),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="square"):
        predict_concentrations(model, images[:, :, :16], progress=False, tta=True)


def test_greyscale_and_encoder_only():
    m = GalaxyModel("resnet10t", schema=None, channels=1)
    with torch.no_grad():
        out = m(torch.zeros(2, 1, 32, 32))
    assert out.shape == (2, m.representation_dim)
    assert m.head is None


def test_architecture_with_a_pre_logits_layer_gives_its_true_width(tmp_path):
    # mobilenetv3_small_100 pools 576 channels, then a 1x1 conv makes 1024: with num_classes=0
    # timm returns the 1024 (head_hidden_size), not num_features
    torch.manual_seed(0)
    m = GalaxyModel("mobilenetv3_small_100", schema=DECALS_DR5).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert m.encode(x).shape == (2, m.representation_dim) == (2, 1024)
        assert m(x).shape == (2, DECALS_DR5.n_answers)
    meta = {"image_size": 48, "mean": [0.5] * 3, "std": [0.2] * 3}
    save_checkpoint(m, tmp_path / "mnv3", meta)
    loaded, _ = load_checkpoint(tmp_path / "mnv3", schema="decals_dr5", image_size=48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x))
    from galaxy_helpers import finetuning

    src = finetuning.load_encoder(tmp_path / "mnv3")
    assert src.representation_dim == 1024
    imgs = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    assert src.features(images=imgs).shape == (6, 1024)


def test_unknown_architecture_suggests_names():
    with pytest.raises(ValueError, match="convnext_atto"):
        GalaxyModel("convnext_ato")
    with pytest.raises(ValueError, match="channels"):
        GalaxyModel(channels=2)


def test_predict_fractions_is_dirichlet_mean_and_std():
    rng = np.random.default_rng(0)
    conc = rng.uniform(1, 101, size=(5, DECALS_DR5.n_answers))
    mean, std = predict_fractions(torch.tensor(conc), DECALS_DR5)
    for start, stop in DECALS_DR5.answer_slices:
        np.testing.assert_allclose(mean[:, start:stop].sum(1), 1.0)
    # Independent check of one question against scipy's Dirichlet moments.
    from scipy.stats import dirichlet

    a = conc[0, 0:3]
    np.testing.assert_allclose(mean[0, 0:3], dirichlet.mean(a))
    np.testing.assert_allclose(std[0, 0:3] ** 2, dirichlet.var(a))
    with pytest.raises(ValueError, match="34"):
        predict_fractions(conc[:, :10], DECALS_DR5)


def test_checkpoint_round_trip_and_metadata(model, tmp_path):
    meta = {
        "image_size": 32,
        "mean": [0.1, 0.2, 0.3],
        "std": [0.2, 0.2, 0.2],
        "seed": 7,
        "data": {"name": "test"},
        "metrics": {"val_loss": np.float32(1.5)},
    }
    w = save_checkpoint(model, tmp_path / "ckpt", meta)
    assert w.name == "ckpt.safetensors" and (tmp_path / "ckpt.json").exists()
    loaded, m2 = load_checkpoint(tmp_path / "ckpt.safetensors", schema="decals_dr5", image_size=32)
    assert m2["architecture"] == "convnext_atto" and m2["schema"] == "decals_dr5"
    assert m2["answer_columns"] == DECALS_DR5.answer_columns
    assert m2["metrics"]["val_loss"] == pytest.approx(1.5)
    assert loaded.schema is DECALS_DR5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    # Preprocessing defaults come from the metadata.
    imgs = np.random.default_rng(0).integers(0, 255, size=(5, 32, 32, 3), dtype=np.uint8)
    c = predict_concentrations(loaded, imgs, batch_size=2, progress=False)
    z = encode_images(loaded, imgs, batch_size=4, progress=False)
    assert c.shape == (5, 34) and z.shape == (5, 320)
    from galaxy_helpers.images import to_tensor

    with torch.no_grad():
        direct = model(to_tensor(imgs, 3, meta["mean"], meta["std"])).numpy()
    np.testing.assert_allclose(c, direct, rtol=1e-4, atol=1e-4)


def test_half_precision_checkpoint_is_smaller_and_close(model, tmp_path):
    full = save_checkpoint(model, tmp_path / "full", {"image_size": 32})
    half = save_checkpoint(model, tmp_path / "half", {"image_size": 32}, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, meta = load_checkpoint(tmp_path / "half")
    assert meta["weights_dtype"] == "float16"
    assert next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0.02, atol=0.05)


def test_custom_schema_survives_checkpoint(tmp_path):
    schema = Schema(
        "toy",
        (
            Question("shape", ("round", "flat")),
            Question("arms", ("yes", "no"), (("shape", "flat"),)),
        ),
    )
    m = GalaxyModel("resnet10t", schema=schema)
    save_checkpoint(m, tmp_path / "toy", {"image_size": 32})
    loaded, _ = load_checkpoint(tmp_path / "toy")
    assert loaded.schema.answer_columns == schema.answer_columns


def test_mismatches_and_bad_files_give_clear_errors(model, tmp_path):
    save_checkpoint(model, tmp_path / "c", {"image_size": 64})
    with pytest.raises(CheckpointError, match="schema 'gz2'"):
        load_checkpoint(tmp_path / "c", schema=GZ2)
    with pytest.raises(CheckpointError, match="64 px"):
        load_checkpoint(tmp_path / "c", image_size=128)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="unpickling"):
        load_checkpoint(tmp_path / "model.pt")
    meta = json.loads((tmp_path / "c.json").read_text())
    meta["architecture"] = "resnet10t"
    (tmp_path / "c.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "c")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(tmp_path / "c")

"""Pretrained encoders, tested offline with tiny models written locally in the hub's layout."""

from __future__ import annotations

import json

import pytest
import torch

from galaxy_helpers import models, pretrained
from galaxy_helpers.data import load_manifest

ARCH = "test_convnext"  # timm's 0.2 M-parameter ConvNeXt; any timm architecture works the same way


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GALAXY_DATA_MIRROR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    """A random-weight timm model saved exactly as the hub stores one (config + safetensors)."""
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=5).eval()
    folder = tmp_path_factory.mktemp("hub") / "zoobot-encoder-tiny"
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder, model


def _pooled(model, x):
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def test_hub_folder_loads_into_an_encoder_only_galaxy_model(hub_folder):
    folder, original = hub_folder
    model = pretrained.load_pretrained_encoder(folder)
    assert isinstance(model, models.GalaxyModel) and model.head is None and model.schema is None
    assert model.architecture == ARCH and model.representation_dim == original.num_features
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode(x), _pooled(original, x), atol=1e-5)
        assert torch.equal(model(x), model.encode(x))
    assert len(model.metadata["weights_sha256"]) == 64
    assert not model.training


def test_encoders_record_zoobots_inference_view_unless_asked_for_timms(hub_folder):
    """Zoobot feeds its encoders 224 px pixels in [0, 1], after its fixed central zoom, never
    normalised with the ImageNet statistics that the hub's config.json inherits from timm
    (tests/test_zoobot_parity.py compares the pixels with Zoobot's own transform)."""
    folder, _ = hub_folder
    meta = pretrained.load_pretrained_encoder(folder).metadata
    assert meta["image_size"] == 224 and meta["mean"] is None and meta["std"] is None
    assert meta["framing"] == {"crop": 1 / 1.2, "resample": "zoobot"}
    assert meta["preprocessing"] == "zoobot" and "greyscale" not in meta
    assert pretrained.load_pretrained_encoder(folder, channels=1).metadata["greyscale"] == "luma"
    config = json.loads((folder / "config.json").read_text())
    timm_meta = pretrained.load_pretrained_encoder(folder, preprocessing="timm").metadata
    assert timm_meta["mean"] == config["pretrained_cfg"]["mean"]
    assert timm_meta["image_size"] is None and "framing" not in timm_meta
    with pytest.raises(ValueError, match="preprocessing"):
        pretrained.load_pretrained_encoder(folder, preprocessing="imagenet")


def test_saved_zoobot_encoder_keeps_its_preprocessing(hub_folder, tmp_path):
    folder, _ = hub_folder
    model = pretrained.load_pretrained_encoder(folder, channels=1)
    path = models.save_checkpoint(model, tmp_path / "grey")
    meta = pretrained.load_pretrained_encoder(path, channels=1).metadata
    for key in ("image_size", "mean", "std", "framing", "greyscale"):
        assert meta[key] == model.metadata[key], key


def test_greyscale_encoder_from_colour_weights(hub_folder):
    folder, original = hub_folder
    model = pretrained.load_pretrained_encoder(folder, channels=1)
    grey = torch.randn(2, 1, 64, 64)
    # timm sums the first convolution over colours: grey input == grey copied to 3 colours.
    with torch.no_grad():
        assert torch.allclose(
            model.encode(grey), _pooled(original, grey.repeat(1, 3, 1, 1)), atol=1e-4
        )
    assert model.metadata["greyscale"] == "luma"
    timm_grey = pretrained.load_pretrained_encoder(folder, channels=1, preprocessing="timm")
    assert len(timm_grey.metadata["mean"]) == 1


def test_bare_safetensors_file_needs_its_architecture(hub_folder):
    folder, original = hub_folder
    weights = folder / "model.safetensors"
    bare = folder.parent / "bare.safetensors"
    bare.write_bytes(weights.read_bytes())
    with pytest.raises(pretrained.PretrainedError, match="architecture="):
        pretrained.load_pretrained_encoder(bare)
    model = pretrained.load_pretrained_encoder(bare, architecture=ARCH)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode(x), _pooled(original, x), atol=1e-5)


def test_weights_of_another_architecture_are_refused_clearly(hub_folder, tmp_path):
    folder, _ = hub_folder
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "test_resnet"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(pretrained.PretrainedError, match="do not fit"):
        pretrained.load_pretrained_encoder(wrong)


def test_hub_name_offline_without_a_copy_says_how_to_provide_it(tmp_path):
    hub_id = "hf_hub:mwalmsley/zoobot-encoder-convnext_nano"
    with pytest.raises(pretrained.PretrainedUnavailableError) as info:
        pretrained.load_pretrained_encoder(hub_id)
    message = str(info.value)
    assert hub_id in message and "hf download" in message
    assert str(tmp_path / "cache" / "models" / "zoobot-encoder-convnext_nano") in message


def test_hub_name_uses_a_copy_in_the_cache_or_the_mirror(hub_folder, tmp_path):
    import shutil

    folder, original = hub_folder
    hub_id = "hf_hub:someone/zoobot-encoder-tiny"
    mirror = tmp_path / "mirror"
    shutil.copytree(folder, mirror / "zoobot_encoders" / "zoobot-encoder-tiny")
    model = pretrained.load_pretrained_encoder(hub_id, mirror=mirror)
    assert model.metadata["source"] == hub_id
    cached = pretrained.local_model_dir(hub_id)
    shutil.copytree(folder, cached)
    model = pretrained.load_pretrained_encoder(hub_id)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode(x), _pooled(original, x), atol=1e-5)


def test_pretrained_encoder_round_trips_through_course_checkpoints(hub_folder, tmp_path):
    folder, _ = hub_folder
    model = pretrained.load_pretrained_encoder(folder)
    path = models.save_checkpoint(model, tmp_path / "enc", {"image_size": 64})
    again = pretrained.load_pretrained_encoder(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(again.encode(x), model.encode(x), atol=1e-6)
    assert again.head is None and again.metadata["source"] == str(path)


def test_course_checkpoint_with_a_head_gives_its_encoder(tmp_path):
    trained = models.GalaxyModel(ARCH, channels=3)
    path = models.save_checkpoint(trained, tmp_path / "trained", {"image_size": 64})
    encoder = pretrained.load_pretrained_encoder(path)
    assert encoder.head is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(encoder.encode(x), trained.eval().encode(x), atol=1e-6)


def test_missing_path_and_incomplete_folder_are_explained(tmp_path):
    with pytest.raises(pretrained.PretrainedUnavailableError, match="no such file"):
        pretrained.load_pretrained_encoder(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(pretrained.PretrainedError, match="model.safetensors"):
        pretrained.load_pretrained_encoder(tmp_path / "half")


def test_manifest_lists_the_default_encoder():
    ids = [m["hub_id"] for m in load_manifest("zoobot_encoders").raw["models"]]
    default = pretrained.load_pretrained_encoder.__defaults__[0]
    assert default in ids


def test_hub_download_path_goes_through_timm_and_names_the_architecture(hub_folder, monkeypatch):
    import timm

    folder, original = hub_folder
    real_create = timm.create_model
    calls = []

    def fake_hub(name, **kwargs):  # what the hub would serve: the same files, via timm
        if not name.startswith("hf_hub:"):
            return real_create(name, **kwargs)
        calls.append((name, kwargs))
        return real_create(f"local-dir:{folder}", **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_hub)
    model = pretrained.load_pretrained_encoder("hf_hub:someone/zoobot-encoder-x", offline=False)
    assert calls[0][1]["pretrained"] is True and calls[0][1]["num_classes"] == 0
    assert (
        model.architecture == ARCH and model.metadata["source"] == "hf_hub:someone/zoobot-encoder-x"
    )


def test_hub_unreachable_gives_the_remedy(monkeypatch):
    import timm

    real_create = timm.create_model

    def unreachable(name, **kwargs):
        if not name.startswith("hf_hub:"):
            return real_create(name, **kwargs)
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(timm, "create_model", unreachable)
    with pytest.raises(pretrained.PretrainedUnavailableError) as info:
        pretrained.load_pretrained_encoder(
            "hf_hub:mwalmsley/zoobot-encoder-resnet18", offline=False
        )
    message = str(info.value)
    assert "https://huggingface.co/mwalmsley/zoobot-encoder-resnet18" in message
    assert "no route" in message and "--local-dir" in message

"""checkpoints.load_model: every kind of spec gives (model in eval mode, complete metadata)."""

from __future__ import annotations

import pytest
import torch

from galaxy_helpers import checkpoints, models, recipes
from galaxy_helpers.checkpoints import NAMED_CHECKPOINTS, load_model

KEYS = ("architecture", "image_size", "channels", "mean", "std", "greyscale", "framing")


def _complete(meta):
    assert all(k in meta for k in KEYS) and meta["description"]


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["course", "synthetic"])
def test_committed_checkpoints_by_name(name):
    model, meta = load_model(name)
    _complete(meta)
    assert not model.training and meta["architecture"] == "resnet10t"
    assert meta["description"] == f"{name} checkpoint weights/{name}_resnet10t"
    path = recipes.course_checkpoint_path() if name == "course" else None
    reference, _ = models.load_checkpoint(path or recipes.synthetic_checkpoint_path())
    assert _same_weights(model, reference)
    assert NAMED_CHECKPOINTS == ("course", "synthetic", "quick")


def test_quick_goes_through_the_training_cache(monkeypatch):
    trained = models.GalaxyModel("resnet10t", channels=3)
    trained.metadata = {"image_size": 32, "mean": [0.1] * 3, "std": [0.2] * 3}
    monkeypatch.setattr(recipes, "quick_model", lambda progress=True: (trained, None))
    model, meta = load_model("quick", progress=False)
    assert model is trained and meta["image_size"] == 32 and meta["framing"] is None
    assert "quick" in meta["description"]


def test_checkpoint_path_with_or_without_suffix(tmp_path):
    torch.manual_seed(0)
    saved = models.GalaxyModel("resnet10t", channels=1)
    models.save_checkpoint(saved, tmp_path / "m", {"image_size": 32, "mean": [0.5], "std": [0.2]})
    for spec in (tmp_path / "m", str(tmp_path / "m.safetensors"), tmp_path / "m.json"):
        model, meta = load_model(spec)
        _complete(meta)
        assert _same_weights(model, saved) and meta["channels"] == 1 and not model.training
        assert str(tmp_path / "m.safetensors") in meta["description"]
    with pytest.raises(models.CheckpointError, match="channels=3"):
        load_model(tmp_path / "m", channels=3)
    with pytest.raises(models.CheckpointError, match="does not exist"):
        load_model(tmp_path / "gone.safetensors")
    with pytest.raises(models.CheckpointError, match="pickled"):
        load_model(tmp_path / "m.pth")


def test_finetuned_model_files_are_named_not_misread(tmp_path):
    models.save_checkpoint(models.GalaxyModel("resnet10t"), tmp_path / "f", {"image_size": 32})
    meta_path = tmp_path / "f.json"
    text = meta_path.read_text().replace(
        "galaxy_helpers.GalaxyModel/1", "galaxy_helpers.FinetunedModel/1"
    )
    meta_path.write_text(text)
    with pytest.raises(models.CheckpointError, match="FinetunedModel.load"):
        load_model(tmp_path / "f")


def test_timm_names_give_encoder_only_models():
    torch.manual_seed(0)
    model, meta = load_model("timm:resnet10t", channels=1)
    _complete(meta)
    assert model.head is None and meta["channels"] == 1 and meta["image_size"] == 64
    assert meta["mean"] is None and meta["description"] == "randomly initialised timm resnet10t"
    torch.manual_seed(0)
    bare, _ = load_model("resnet10t", channels=1)  # the prefix may be left out
    assert _same_weights(model, bare)
    with pytest.raises(models.CheckpointError, match="timm:resnet10t"):
        load_model("resnet10")


def test_timm_imagenet_weights_offline_fail_at_once(monkeypatch):
    monkeypatch.setattr(checkpoints, "_timm_weights_cached", lambda name: False)
    with pytest.raises(models.CheckpointError, match="offline"):
        load_model("timm:resnet10t", pretrained=True, offline=True)


def test_hub_names_and_folders_go_through_pretrained(monkeypatch, tmp_path):
    import galaxy_helpers.pretrained as pretrained

    calls = []

    def fake(name, channels=3, offline=None):
        calls.append((name, channels, offline))
        model = models.GalaxyModel("resnet10t", schema=None, channels=channels)
        model.metadata = {"architecture": "resnet10t", "channels": channels, "image_size": 224}
        return model

    monkeypatch.setattr(pretrained, "load_pretrained_encoder", fake)
    _, meta = load_model("zoobot:owner/zoobot-encoder-x", offline=True)
    assert calls[-1] == ("owner/zoobot-encoder-x", 3, True)
    _, meta = load_model("hf_hub:owner/x", channels=1)
    assert calls[-1] == ("hf_hub:owner/x", 1, None) and meta["channels"] == 1
    _, meta = load_model(tmp_path)  # a folder
    assert calls[-1][0] == str(tmp_path) and meta["description"] == f"pretrained encoder {tmp_path}"
    _complete(meta)


def test_models_in_memory_and_pairs():
    model = models.GalaxyModel("resnet10t").train()
    model.metadata = {"image_size": 48}
    same, meta = load_model(model, metadata={"mean": [0.5] * 3})
    assert same is model and not model.training and meta["image_size"] == 48
    assert meta["mean"] == [0.5] * 3 and meta["description"] == "loaded model"
    assert "mean" not in model.metadata  # the model's own record is left as it was
    _, meta = load_model((model, {"image_size": 32, "channels": 3}))
    assert meta["image_size"] == 32 and meta["description"] == "loaded checkpoint"
    _complete(meta)
    with pytest.raises(TypeError, match="'course'"):
        load_model(3)

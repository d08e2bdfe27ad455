"""One way to get a model: :func:`load_model` turns any model spec into ``(model, metadata)``.

Like ``timm.create_model``, one name picks the weights: the committed course checkpoints, the
quick model of notebook 02, a checkpoint file, a timm architecture, a Zoobot encoder on the
Hugging Face hub or in a local folder, or a model already in memory.

>>> from galaxy_helpers.checkpoints import load_model
>>> model, meta = load_model("timm:resnet10t")
>>> meta["description"], meta["channels"]
('randomly initialised timm resnet10t', 3)
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from . import models, recipes
from .core import read_json

__all__ = ["NAMED_CHECKPOINTS", "load_model"]

#: Checkpoints known by name.
NAMED_CHECKPOINTS = ("course", "synthetic", "quick")

#: Entries every metadata dict returned by :func:`load_model` has (None where absent).
_ALWAYS = ("architecture", "image_size", "channels", "mean", "std", "greyscale", "framing")
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".bin")
_SPECS = (
    "'course', 'synthetic', 'quick', a checkpoint path, 'timm:<name>' (e.g. 'timm:resnet18'), "
    "'hf_hub:<owner/repo>' or 'zoobot:<owner/repo>', a hub folder (config.json + "
    "model.safetensors), a GalaxyModel or a (model, metadata) pair"
)


def load_model(
    spec="course",
    *,
    metadata: dict | None = None,
    progress: bool = True,
    offline: bool = False,
    channels: int | None = None,
    pretrained: bool = False,
):
    """The model and metadata that ``spec`` names, in eval mode.

    Parameters
    ----------
    spec : ``"course"``, ``"synthetic"`` (stage 1), ``"quick"`` (notebook 02's, cached), a
        checkpoint path, ``"timm:NAME"`` (encoder only; prefix optional), ``"hf_hub:OWNER/REPO"``,
        ``"zoobot:OWNER/REPO"`` or a hub folder (``pretrained.load_pretrained_encoder``), a model
        with ``.metadata``, or a ``(model, metadata)`` pair.
    metadata : entries that replace or complete the model's own (``image_size``, ``mean``...).
    progress : progress bars while the quick model trains.
    offline : never touch the network (hub encoders, timm's ImageNet weights).
    channels : input channels of a timm or hub encoder (default 3); checkpoints must match.
    pretrained : ``timm:`` specs only: timm's ImageNet weights instead of random ones.

    Returns
    -------
    (model, metadata): ``metadata`` always has ``architecture``, ``image_size``, ``channels``,
    ``mean``, ``std``, ``greyscale``, ``framing`` (None where absent) and ``description``.

    Examples
    --------
    >>> model, meta = load_model("course")  # doctest: +SKIP
    >>> meta["description"]  # doctest: +SKIP
    'course checkpoint weights/course_resnet10t'
    """
    model, meta, description = _resolve(spec, progress, offline, channels, pretrained)
    meta = dict(meta or {})
    meta.update(metadata or {})
    meta.setdefault("architecture", getattr(model, "architecture", type(model).__name__))
    if meta.get("channels") is None and getattr(model, "channels", None) is not None:
        meta["channels"] = int(model.channels)
    for key in _ALWAYS:
        meta.setdefault(key, None)
    meta.setdefault("description", description)
    if channels is not None and meta["channels"] is not None and int(channels) != meta["channels"]:
        raise models.CheckpointError(
            f"{meta['description']} takes {meta['channels']} channel(s), not channels={channels}: "
            "drop channels= or use a model trained on that many"
        )
    model.eval()
    return model, meta


def _resolve(spec, progress, offline, channels, pretrained):
    """``(model, metadata, description)`` for any spec."""
    if isinstance(spec, tuple) and len(spec) == 2:
        return spec[0], spec[1], "loaded checkpoint"
    if hasattr(spec, "encode") and hasattr(spec, "parameters"):
        return spec, getattr(spec, "metadata", None), "loaded model"
    if not isinstance(spec, str | os.PathLike):
        raise TypeError(f"cannot use a {type(spec).__name__} as a model: pass {_SPECS}")
    text = str(spec)
    if text in NAMED_CHECKPOINTS:
        return _named(text, progress)
    if text.startswith(("hf_hub:", "hf-hub:", "zoobot:")):
        return _hub(text.removeprefix("zoobot:"), channels, offline)
    path = Path(text).expanduser()
    if path.suffix in _PICKLE_SUFFIXES or _is_checkpoint(path):
        return _checkpoint(path)
    if path.is_dir():
        return _hub(str(path), channels, offline)
    return _timm(text.removeprefix("timm:"), spec, channels, pretrained, offline)


def _is_checkpoint(path: Path) -> bool:
    weights, meta = models.checkpoint_paths(path)
    return path.suffix in (".safetensors", ".json") or weights.exists() or meta.exists()


def _named(name: str, progress: bool):
    if name == "quick":
        model, _ = recipes.quick_model(progress=progress)
        return model, model.metadata, "quick model (notebook 02, cached)"
    path = recipes.course_checkpoint_path() if name == "course" else None
    path = path or recipes.synthetic_checkpoint_path()
    if not path.with_suffix(".safetensors").exists():
        found = sorted(p.stem for p in path.parent.glob(f"{name}_*.safetensors"))
        raise FileNotFoundError(
            f"no {name} checkpoint {path}.safetensors (available: {found or 'none'}). Rebuild it "
            "with `python -m galaxy_helpers.recipes course-checkpoint`."
        )
    model, meta = models.load_checkpoint(path)
    return model, meta, f"{name} checkpoint {path.parent.name}/{path.name}"


def _checkpoint(path: Path):
    weights, meta_path = models.checkpoint_paths(path)
    if path.suffix not in _PICKLE_SUFFIXES and meta_path.is_file():
        try:
            meta = read_json(meta_path, what="checkpoint metadata")
        except ValueError as err:
            raise models.CheckpointError(str(err)) from None
        if isinstance(meta, dict) and str(meta.get("format")).startswith(
            "galaxy_helpers.FinetunedModel"
        ):
            raise models.CheckpointError(
                f"{weights} is a finetuned model, not a GalaxyModel checkpoint: load it with "
                "finetuning.FinetunedModel.load, or pass it to finetuning.load_encoder"
            )
    model, meta = models.load_checkpoint(path)
    return model, meta, f"checkpoint {weights}"


def _hub(name: str, channels, offline: bool):
    from .pretrained import load_pretrained_encoder

    model = load_pretrained_encoder(name, channels=channels or 3, offline=True if offline else None)
    return model, model.metadata, f"pretrained encoder {name}"


def _timm(name: str, spec, channels, pretrained: bool, offline: bool):
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise models.CheckpointError(
            f"{str(spec)!r} is neither a checkpoint file, a folder nor a timm architecture"
            + (f" (did you mean timm:{close[0]}?)" if close else "")
            + f". Pass {_SPECS}."
        )
    if pretrained and offline and not _timm_weights_cached(name):
        raise models.CheckpointError(
            f"timm's pretrained (ImageNet) weights for {name!r} are not in the local cache and "
            "we are offline. Run once with internet (timm.create_model(name, pretrained=True) "
            "downloads them to ~/.cache/huggingface), or pass pretrained=False."
        )
    channels = int(channels or 3)
    try:
        model = models.GalaxyModel(name, schema=None, channels=channels, pretrained=pretrained)
    except Exception as err:  # network errors come in many types
        if not pretrained:
            raise
        raise models.CheckpointError(
            f"cannot load timm's pretrained weights for {name!r} ({type(err).__name__}: {err}). "
            "They are downloaded from the Hugging Face hub: run once with internet (they are "
            "cached in ~/.cache/huggingface), or pass pretrained=False to train from scratch."
        ) from err
    cfg = getattr(model.encoder, "pretrained_cfg", {}) or {}
    mean = [float(v) for v in cfg.get("mean", ())] if pretrained else None
    std = [float(v) for v in cfg.get("std", ())] if pretrained else None
    if mean and channels == 1:  # colour statistics applied to the mean of the colours
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    model.metadata = {
        "architecture": name,
        "image_size": 64,
        "channels": channels,
        "mean": mean or None,
        "std": std or None,
        "schema": None,
        "answer_columns": [],
    }
    kind = "ImageNet-pretrained" if pretrained else "randomly initialised"
    return model, model.metadata, f"{kind} timm {name}"


def _timm_weights_cached(name: str) -> bool:
    """Whether timm's default pretrained weights for ``name`` are in the local HF cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    try:
        repo = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None)
    except Exception:  # unknown name or no pretrained tag
        return False
    names = ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
    return bool(repo) and any(isinstance(try_to_load_from_cache(repo, f), str) for f in names)

"""Pretrained Zoobot encoders (Hugging Face hub or local files) as encoder-only GalaxyModels.

Sources: a folder in the hub's layout, a ``.safetensors`` file, or a hub name
(``data_manifests/zoobot_encoders.toml``) found in the mirror, the cache or online. Never unpickled.

Preprocessing is Zoobot 2.9.0's inference view (``ZOOBOT_ZOOM``): ``RandomAffine(scale=(1.2,
1.2))`` (central 1/1.2, bilinear), ``Resize(224)`` + ``CenterCrop(224)``, pixels / 255 with no
mean/std (the hub's ImageNet statistics are timm defaults Zoobot never applies), PIL's luma
``convert("L")`` for greyscale; ``tests/test_zoobot_parity.py`` compares the pixels.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import core
from .models import GalaxyModel, checkpoint_paths, file_sha256, load_checkpoint, pooled_dim

__all__ = [
    "PretrainedError",
    "PretrainedUnavailableError",
    "load_pretrained_encoder",
    "local_model_dir",
    "zoobot_preprocessing",
    "ZOOBOT_IMAGE_SIZE",
    "ZOOBOT_ZOOM",
]

_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")

#: Zoobot's inference view (galaxy-datasets 0.0.25 ``transforms.minimal_view_config``):
#: ``output_size=224`` and the fixed zoom ``random_affine=dict(scale=(1.2, 1.2))``.
ZOOBOT_IMAGE_SIZE = 224
ZOOBOT_ZOOM = 1.2
_PREPROCESSING = ("zoobot", "timm")


class PretrainedError(ValueError):
    """Weights that do not fit their architecture, or a source that cannot be interpreted."""


class PretrainedUnavailableError(FileNotFoundError):
    """A hub model that is neither on disk nor downloadable; says how to provide it."""


def _repo_name(hub_id: str) -> str:
    return hub_id.removeprefix("hf_hub:").split("/", 1)[-1]


def local_model_dir(hub_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where a hub model is looked for in the course cache: ``<cache_dir>/models/<repo>``.

    Parameters
    ----------
    hub_id : ``"hf_hub:mwalmsley/zoobot-encoder-convnext_nano"`` (or without the prefix).
    cache_dir : cache root; default :func:`galaxy_helpers.core.cache_dir`.
    """
    root = Path(cache_dir) / "models" if cache_dir is not None else core.cache_dir("models")
    return root / _repo_name(hub_id)


def _is_hub_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / n).is_file() for n in _WEIGHT_NAMES)


def zoobot_preprocessing(channels: int = 3) -> dict[str, Any]:
    """The metadata entries that make our loaders feed an encoder as Zoobot does.

    Parameters
    ----------
    channels : 1 adds ``greyscale="luma"`` (Zoobot's greyscale conversion).

    Returns
    -------
    dict: ``preprocessing``, ``image_size`` (224), ``mean``/``std`` (None), ``framing``.

    Examples
    --------
    >>> zoobot_preprocessing(3)["framing"]
    {'crop': 0.8333333333333334, 'resample': 'zoobot'}
    """
    meta: dict[str, Any] = {
        "preprocessing": "zoobot",
        "image_size": ZOOBOT_IMAGE_SIZE,
        "mean": None,
        "std": None,
        "framing": {"crop": 1.0 / ZOOBOT_ZOOM, "resample": "zoobot"},
    }
    if channels == 1:
        meta["greyscale"] = "luma"
    return meta


def _wrap(encoder, architecture: str, channels: int, source: str, preprocessing: str, weights=None):
    """A timm encoder in an encoder-only GalaxyModel (``weights``: its file, hashed)."""
    model = GalaxyModel(architecture, schema=None, channels=channels, pretrained=False)
    model.encoder = encoder
    model.representation_dim = pooled_dim(encoder)
    cfg = dict(getattr(encoder, "pretrained_cfg", {}) or {})
    meta = {
        "architecture": architecture,
        "channels": channels,
        "schema": None,
        "answer_columns": [],
        "pretrained_input_size": list(cfg["input_size"]) if cfg.get("input_size") else None,
    }
    if preprocessing == "zoobot":
        meta.update(zoobot_preprocessing(channels))
    else:  # the model config's statistics, at any size
        mean, std = cfg.get("mean"), cfg.get("std")
        if channels == 1 and mean is not None and len(mean) == 3:
            # Colour statistics applied to the average of the colours (to_tensor, channels=1).
            mean, std = [sum(mean) / 3], [sum(std) / 3]
        meta.update(preprocessing="timm", image_size=None)  # any size: pretrained_input_size
        meta["mean"] = list(mean) if mean is not None else None
        meta["std"] = list(std) if std is not None else None
    meta["source"] = source
    if weights is not None:
        meta.update(weights_file=str(weights), weights_sha256=file_sha256(weights))
    model.metadata = meta
    return model.eval()


def _create(spec: str, channels: int, source: str, local: bool = True, **kwargs):
    import timm

    # From local files, any of these means the files do not describe the model; from the hub,
    # ValueError/KeyError can also be cache misses, so only a state-dict mismatch counts.
    mismatch = (RuntimeError, AttributeError, KeyError, ValueError) if local else RuntimeError
    try:
        return timm.create_model(spec, pretrained=True, num_classes=0, in_chans=channels, **kwargs)
    except mismatch as err:  # state-dict mismatch: wrong architecture or broken file
        raise PretrainedError(
            f"{source}: the weights do not fit the architecture ({str(err)[:400]}). Check that "
            "config.json (or architecture=) names the architecture the weights were saved from."
        ) from err


def _from_folder(folder: Path, channels: int, source: str, preprocessing: str):
    config = core.read_json(folder / "config.json", what="hub model config")
    architecture = config.get("architecture")
    if not architecture:
        raise PretrainedError(f"{folder / 'config.json'}: no 'architecture' entry")
    weights = next(folder / n for n in _WEIGHT_NAMES if (folder / n).is_file())
    encoder = _create(f"local-dir:{folder}", channels, source)
    return _wrap(encoder, architecture, channels, source, preprocessing, weights)


def _from_file(
    path: Path, channels: int, architecture: str | None, source: str, preprocessing: str
):
    _, meta_path = checkpoint_paths(path)
    if path.suffix == ".safetensors" and meta_path.is_file():
        meta = core.read_json(meta_path, what="checkpoint metadata")
        if str(meta.get("format", "")).startswith("galaxy_helpers.GalaxyModel"):
            model, meta = load_checkpoint(path)
            if int(meta["channels"]) != channels:
                raise PretrainedError(
                    f"{path}: a {meta['channels']}-channel course checkpoint; ask for "
                    f"channels={meta['channels']}"
                )
            model.head, model.schema = None, None
            model.metadata = {
                **meta,
                "schema": None,
                "answer_columns": [],
                "source": source,
                "weights_sha256": file_sha256(path),
            }
            return model.eval()
    if (path.parent / "config.json").is_file() and path.name in _WEIGHT_NAMES:
        return _from_folder(path.parent, channels, source, preprocessing)
    with open(path, "rb") as handle:
        magic = handle.read(4)  # pickle protocol 2+ starts 0x80; torch.save's zip starts PK
    pickled = magic[:1] == b"\x80" or magic == b"PK\x03\x04"
    if path.suffix in (".pkl", ".ckpt", ".pt", ".pth", ".bin") or (
        pickled and path.suffix != ".safetensors"
    ):
        raise PretrainedError(
            f"{path}: a pickled PyTorch checkpoint (torch.save / .pth); these are never loaded "
            "(unpickling can run code). Convert it once, where you trust it: "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'weights.safetensors')"
            ", then pass the .safetensors file (with architecture=...)."
        )
    if architecture is None:
        raise PretrainedError(
            f"{path}: a bare weights file does not say which architecture it belongs to; pass "
            "architecture='convnext_nano' (the timm name), or give the folder with config.json"
        )
    encoder = _create(architecture, channels, source, pretrained_cfg_overlay={"file": str(path)})
    return _wrap(encoder, architecture, channels, source, preprocessing, path)


def _offline() -> bool:
    names = ("GALAXY_DATA_OFFLINE", "HF_HUB_OFFLINE")
    return any(os.environ.get(k, "").strip().lower() in {"1", "true", "yes"} for k in names)


def load_pretrained_encoder(
    name_or_path: str | os.PathLike = "hf_hub:mwalmsley/zoobot-encoder-convnext_nano",
    channels: int = 3,
    architecture: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    offline: bool | None = None,
    preprocessing: str = "zoobot",
):
    """Load a pretrained encoder as an encoder-only ``models.GalaxyModel``.

    Parameters
    ----------
    name_or_path : a hub name (``"hf_hub:mwalmsley/zoobot-encoder-convnext_nano"``), a folder
        in the hub's layout, or a ``.safetensors`` file (a course checkpoint loses its head).
    channels : 3 colour, 1 greyscale (timm adapts weights saved for the other number).
    architecture : timm architecture of a bare weights file.
    cache_dir : course cache root, searched for ``models/<repo>/``.
    mirror : mirror root (default ``GALAXY_DATA_MIRROR``), searched for ``zoobot_encoders/<repo>/``.
    offline : never use the network (default: ``GALAXY_DATA_OFFLINE`` or ``HF_HUB_OFFLINE``).
    preprocessing : ``"zoobot"`` (:func:`zoobot_preprocessing`) or ``"timm"`` (its mean/std).

    Returns
    -------
    models.GalaxyModel with ``schema=None``, in eval mode; ``metadata`` holds what the image
    loaders need, ``preprocessing``, ``source`` and (local files) ``weights_sha256``.

    Raises
    ------
    PretrainedUnavailableError: a hub model neither on disk nor downloadable.
    PretrainedError: weights that do not fit, or a bare file without ``architecture``.

    Examples
    --------
    >>> model = load_pretrained_encoder("hf_hub:mwalmsley/zoobot-encoder-convnext_nano")  # doctest: +SKIP
    >>> model.representation_dim                                                          # doctest: +SKIP
    640
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (colour), got {channels}")
    if preprocessing not in _PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {_PREPROCESSING}, got {preprocessing!r}")
    text = str(name_or_path)
    if not text.startswith(("hf_hub:", "hf-hub:")):
        path = Path(text).expanduser()
        if path.is_dir():
            if not _is_hub_folder(path):
                raise PretrainedError(
                    f"{path}: expected config.json and one of {list(_WEIGHT_NAMES)} (the hub's "
                    "layout, as `hf download --local-dir` writes it)"
                )
            return _from_folder(path, channels, str(path), preprocessing)
        if path.is_file():
            return _from_file(path, channels, architecture, str(path), preprocessing)
        raise PretrainedUnavailableError(
            f"{path}: no such file or folder. Give a hub name such as "
            "'hf_hub:mwalmsley/zoobot-encoder-convnext_nano', a folder with config.json + "
            "model.safetensors, or a .safetensors file."
        )

    hub_id = "hf_hub:" + text.split(":", 1)[1]
    repo = hub_id.removeprefix("hf_hub:")
    candidates = []
    mirror_root = mirror or os.environ.get("GALAXY_DATA_MIRROR", "").strip() or None
    if mirror_root:
        candidates.append(Path(mirror_root) / "zoobot_encoders" / _repo_name(hub_id))
    candidates.append(local_model_dir(hub_id, cache_dir))
    for folder in candidates:
        if _is_hub_folder(folder):
            return _from_folder(folder, channels, hub_id, preprocessing)
    offline = _offline() if offline is None else offline
    remedy = (
        f"To use it offline: on a machine with internet run `hf download {repo} --local-dir "
        f"<folder>` (`huggingface-cli download` in older huggingface_hub, or "
        f"huggingface_hub.snapshot_download), copy the folder here and "
        f"pass its path, or put it at {candidates[-1]}"
        + (f" or {candidates[0]}" if len(candidates) > 1 else "")
        + "."
    )
    if offline:
        raise PretrainedUnavailableError(
            f"{hub_id} is not on disk (looked in {', '.join(map(str, candidates))}) and the "
            f"network is off. {remedy}"
        )
    try:
        encoder = _create(hub_id, channels, hub_id, local=False)
    except PretrainedError:
        raise
    except Exception as err:  # network, hub and cache errors come in many types
        raise PretrainedUnavailableError(
            f"could not get {hub_id} from https://huggingface.co/{repo} ({type(err).__name__}: "
            f"{str(err)[:300]}). {remedy}"
        ) from err
    cfg = dict(getattr(encoder, "pretrained_cfg", {}) or {})
    architecture = cfg.get("architecture") or _repo_name(hub_id).removeprefix("zoobot-encoder-")
    architecture = architecture.removeprefix("greyscale-")
    return _wrap(encoder, architecture, channels, hub_id, preprocessing)

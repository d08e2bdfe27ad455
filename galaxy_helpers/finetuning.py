"""Finetune a pretrained encoder to a new task with few labels (notebook 06).

The paper's third tool (Walmsley et al. 2022, MNRAS 513, 1581, section 5): a CNN pretrained to
answer *every* Galaxy Zoo question can be adapted to a task it never saw -- finding ring
galaxies, which are not a question of the decision tree -- with a few dozen labels, and beats
ImageNet pretraining and training from scratch.

One call covers the common case::

    from galaxy_helpers import finetuning
    model = finetuning.finetune("course", catalogue, "ring")          # frozen encoder + new head
    model = finetuning.finetune("course", catalogue, "ring", mode="full")
    table = model.predict(new_catalogue)     # id_str, probability_<class>..., prediction
    model.save("ring_model")                 # ring_model.safetensors + ring_model.json
    model = finetuning.FinetunedModel.load("ring_model")

The encoder can come from our checkpoints (``"course"``, ``"quick"``, a checkpoint path, or a
loaded ``GalaxyModel``), from a Zoobot encoder (``"hf_hub:mwalmsley/zoobot-encoder-convnext_nano"``,
through ``pretrained.load_pretrained_encoder``) or from any timm name (``"timm:resnet18"``; ImageNet
weights need the network, ``pretrained=False`` gives a random initialisation).

Two modes:

* ``"head"``: the encoder is frozen. Its pooled features are computed once, then a linear head
  (on standardised features) is fitted on them -- a few seconds on a laptop CPU.
* ``"full"``: everything trains; the head starts from the head-only fit (linear probing first,
  then finetuning, which protects the pretrained features from a random head's first large
  gradients) and the encoder learns with a lower learning rate that shrinks layer by layer
  towards the input (layer-wise decay).

Both stop early on a validation split carved from the labelled galaxies and handle class
imbalance (class weights, or balanced sampling).

``label_budget_experiment`` reproduces the paper's label-budget figure: balanced accuracy on a
balanced held-out test set against the number of labels, for the pretrained encoder (head only,
full) and the same architecture trained from scratch, with several random repeats; every run is
cached under ``course.cache_dir()``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .course import json_safe
from .models import checkpoint_paths, load_weights, read_checkpoint_metadata, run_in_batches

__all__ = [
    "METHODS",
    "FinetuneError",
    "FinetuneConfig",
    "EncoderSource",
    "FinetunedModel",
    "load_encoder",
    "finetune",
    "labelled_rows",
    "balanced_sample",
    "choose_l2",
    "fit_head",
    "LabelBudgetResult",
    "label_budget_experiment",
    "plot_label_budget",
    "ranked_grid",
    "PAPER_RING_ACCURACY",
]

#: Methods of the label-budget experiment that need nothing but the checkpoint.
METHODS = ("pretrained_head", "pretrained_full", "scratch")

#: The paper's ring finetuning results (balanced test sets; accuracy read from the paper's
#: figure, +-0.02): unique training rings -> accuracy. Source: Walmsley et al. 2022, fig. 11
#: and /work/shared/reference/galaxy_zoo_facts.md.
PAPER_RING_ACCURACY = {
    "pretrained on all GZ questions": {13: 0.75, 79: 0.85, 197: 0.855, 6962: 0.88},
    "ImageNet pretrained": {13: 0.55, 79: 0.66, 197: 0.75, 6962: 0.86},
    "from scratch": {13: 0.50, 79: 0.50, 197: 0.52, 6962: 0.87},
}

FORMAT = "galaxy_helpers.FinetunedModel/1"


class FinetuneError(ValueError):
    """Bad labels, a catalogue that does not fit, or a checkpoint that is not what was asked."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuneConfig:
    """How to finetune. Defaults are the quick CPU profile.

    Parameters
    ----------
    mode : ``"head"`` (frozen encoder, new linear head) or ``"full"`` (train everything).
    task : ``"classification"`` (any number of classes) or ``"regression"`` (one number).
    architecture : expected encoder architecture (timm name); a checkpoint of another
        architecture is refused. ``None`` accepts whatever the checkpoint holds.
    pretrained : for a timm name only: load timm's pretrained (ImageNet) weights -- needs the
        network -- or, with ``False``, start from a random initialisation ("from scratch").
    image_size, channels, mean, std : preprocessing; ``None`` takes the checkpoint's (our
        checkpoints record them; for a bare timm model 64 px colour, ImageNet mean/std when
        pretrained).
    val_fraction : share of the labelled galaxies held out for early stopping (stratified; at
        least one per class when a class has two or more).
    balance : ``"weights"`` (loss weighted by inverse class frequency), ``"sampler"`` (batches
        drawn with equal class probability; full mode) or ``"none"``.
    head_solver : how the head is fitted on cached features. ``"lbfgs"``: L2-regularised
        logistic (or ridge) regression solved to convergence on all labelled galaxies, the
        classic linear probe (the L2 penalty, not early stopping, regularises it; the
        validation split only reports a score). ``"adam"``: full-batch Adam, early stopping on
        the validation split, then a refit on all labels (see ``refit``).
    head_l2 : L2 penalty of the head (like ``1 / C`` of scikit-learn's LogisticRegression).
        The default (100, i.e. C = 0.01) is strong because there are fewer labels than feature
        dimensions; it was chosen among 1, 10 and 100 with a partial course checkpoint on the
        course sky. ``None``: chosen from ``head_l2_grid`` by stratified cross-validation on the
        labelled galaxies (balanced accuracy, ties to the stronger penalty; slower and, with a
        few dozen labels, noisy).
    feature_clip : the head standardises each feature with the mean and spread of the labelled
        galaxies, then clips it to +- ``feature_clip`` (in training and prediction; ``None``:
        no clipping). A few dozen labels give noisy spreads: a feature that barely varies among
        them gives huge standardised values to other galaxies, which a linear head turns into
        confident, wrong scores, and a ranking then puts those outliers first. On the course
        sky (rings vs face-on disks, 6 draws of labels) clipping at 3 raised the share of rings
        among the 24 top-ranked disks from 2% to 30% with 30 labels (22% to 39% with 100) and
        the balanced accuracy from 0.71 to 0.73 (0.78 to 0.79).
    head_lr, head_max_steps, head_patience : full-batch Adam on cached features (head mode and
        the linear-probing step of full mode).
    refit : head mode: once early stopping has chosen the number of steps, refit the head on
        train + validation galaxies for that many steps (few labels are too precious to leave
        out of the final model).
    encoder_lr, layer_decay : full mode: learning rate of the encoder's last block; each earlier
        block gets ``layer_decay`` times the next one's (``1.0``: one rate everywhere).
    full_head_lr : full mode: learning rate of the head.
    weight_decay : AdamW weight decay (full mode).
    max_epochs, patience, batch_size : full mode loop; an epoch is at least ``min_steps`` batches.
    augment : full mode: random flips and 90-degree rotations (galaxies have no up).
    linear_probe_first : full mode: start the head from the head-only fit.
    freeze_batchnorm : full mode: keep BatchNorm statistics fixed (small batches of few labels
        would corrupt them; ConvNeXt has none).
    seed : random seed (splits, sampling, initialisation).
    device : ``None`` picks ``course.device()``.
    progress : show progress bars.
    """

    mode: str = "head"
    task: str = "classification"
    architecture: str | None = None
    pretrained: bool = True
    image_size: int | None = None
    channels: int | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    val_fraction: float = 0.2
    balance: str = "weights"
    head_solver: str = "lbfgs"
    head_l2: float | None = 100.0
    head_l2_grid: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
    feature_clip: float | None = 3.0
    head_lr: float = 2e-3
    head_max_steps: int = 1000
    head_patience: int = 100
    refit: bool = True
    encoder_lr: float = 1e-4
    layer_decay: float = 0.8
    full_head_lr: float = 1e-3
    weight_decay: float = 0.05
    max_epochs: int = 10
    patience: int = 3
    batch_size: int = 32
    min_steps: int = 1
    augment: bool = True
    linear_probe_first: bool = True
    freeze_batchnorm: bool = True
    seed: int = 0
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        if self.mode not in ("head", "full"):
            raise FinetuneError(f"mode must be 'head' or 'full', got {self.mode!r}")
        if self.task not in ("classification", "regression"):
            raise FinetuneError(f"task must be 'classification' or 'regression', got {self.task!r}")
        if self.balance not in ("weights", "sampler", "none"):
            raise FinetuneError(
                f"balance must be 'weights', 'sampler' or 'none', got {self.balance!r}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise FinetuneError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.head_solver not in ("lbfgs", "adam"):
            raise FinetuneError(f"head_solver must be 'lbfgs' or 'adam', got {self.head_solver!r}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise FinetuneError(f"layer_decay must be in (0, 1], got {self.layer_decay}")

    def replace(self, **changes) -> FinetuneConfig:
        """A copy with some fields changed (unknown names are refused)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise FinetuneError(
                f"FinetuneConfig has no field(s) {unknown}; fields: {sorted(names)}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("mean", "std"):
            if d[key] is not None:
                d[key] = [float(v) for v in d[key]]
        return d


def _device(cfg: FinetuneConfig) -> torch.device:
    if cfg.device is not None:
        return torch.device(cfg.device)
    try:
        from .course import device

        return torch.device(device())
    except ImportError:  # pragma: no cover - course.py is part of the package
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------
# Where the encoder comes from
# --------------------------------------------------------------------------------------------
@dataclass
class EncoderSource:
    """A pretrained encoder and the preprocessing it expects.

    Attributes
    ----------
    encoder : a timm model with ``num_classes=0`` (returns pooled features ``(B, D)``).
    architecture : its timm name (rebuilds it when a finetuned model is loaded).
    image_size, channels, mean, std : preprocessing through ``images.to_tensor``.
    description : where it came from, for metadata and plots.
    greyscale : ``images.to_tensor``'s colour-to-grey rule for 1 channel (``"mean"``, or
        ``"luma"`` for Zoobot's greyscale encoders).
    framing : the encoder's ``metadata["framing"]`` (``images.catalogue_crops``,
        ``images.model_resample``; None: the whole frame), applied by :meth:`read`.
    """

    encoder: nn.Module
    architecture: str
    image_size: int
    channels: int
    mean: list[float] | None
    std: list[float] | None
    description: str
    greyscale: str = "mean"
    framing: dict | None = None

    @property
    def representation_dim(self) -> int:
        return int(getattr(self.encoder, "num_features", 0) or _probe_dim(self))

    def fingerprint(self) -> str:
        """Hash of the weights and preprocessing (cache key)."""
        h = hashlib.sha256()
        prep = [self.architecture, self.image_size, self.channels, self.mean, self.std]
        if self.greyscale != "mean":  # keeps the keys of every other source as they were
            prep.append(self.greyscale)
        if self.framing:
            prep.append(self.framing)
        h.update(json.dumps(prep, sort_keys=True).encode())
        for name, tensor in sorted(self.encoder.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def read(self, catalogue: pd.DataFrame, progress: bool = False) -> np.ndarray:
        """uint8 images of a catalogue's ``file_loc`` at this encoder's size and framing
        (times the catalogue's optional ``crop`` column)."""
        from .images import catalogue_crops, load_images, model_resample

        meta = {"framing": self.framing} if self.framing else None
        return load_images(
            catalogue["file_loc"].tolist(),
            self.image_size,
            progress=progress,
            crop=catalogue_crops(catalogue, meta),
            resample=model_resample(meta),
        )


def _probe_dim(src: EncoderSource) -> int:
    with torch.no_grad():
        x = torch.zeros(1, src.channels, src.image_size, src.image_size)
        return int(src.encoder.eval()(x).shape[-1])


def _from_galaxy_model(model, meta: Mapping | None, description: str) -> EncoderSource:
    meta = dict(meta or getattr(model, "metadata", {}) or {})
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise FinetuneError(f"{description}: the model has no .encoder to finetune")
    architecture = meta.get("architecture") or getattr(model, "architecture", None)
    return EncoderSource(
        encoder=encoder,
        architecture=str(architecture),
        image_size=int(meta.get("image_size") or 64),
        channels=int(meta.get("channels") or getattr(model, "channels", 3)),
        mean=_floats(meta.get("mean")),
        std=_floats(meta.get("std")),
        description=description,
        greyscale=meta.get("greyscale") or "mean",
        framing=meta.get("framing") or None,
    )


def _floats(v) -> list[float] | None:
    if v is None:
        return None
    if np.isscalar(v):
        return [float(v)]
    return [float(x) for x in v]


#: Checkpoints known by name (``training.load_model`` resolves them).
NAMED_CHECKPOINTS = ("course", "synthetic", "quick")


def _named_checkpoint(name: str):
    from . import training

    return training.load_model(name)


def _unpack_loaded(obj, description: str) -> EncoderSource:
    """``(model, metadata)``, a model, or a checkpoint path -> EncoderSource."""
    if isinstance(obj, tuple) and len(obj) == 2:
        return _from_galaxy_model(obj[0], obj[1], description)
    if isinstance(obj, (str, os.PathLike)):
        return _load_checkpoint_path(obj, description)
    return _from_galaxy_model(obj, None, description)


def _load_checkpoint_path(path, description: str | None = None) -> EncoderSource:
    from .models import load_checkpoint

    weights, meta_path = checkpoint_paths(path)
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise FinetuneError(f"{meta_path}: not valid JSON ({err})") from err
        if str(meta.get("format", "")).startswith("galaxy_helpers.FinetunedModel"):
            model = FinetunedModel.load(path)
            return EncoderSource(
                model.encoder,
                model.metadata["architecture"],
                int(model.metadata["image_size"]),
                int(model.metadata["channels"]),
                _floats(model.metadata.get("mean")),
                _floats(model.metadata.get("std")),
                description or f"finetuned model {weights}",
                model.metadata.get("greyscale") or "mean",
                model.metadata.get("framing") or None,
            )
    model, meta = load_checkpoint(path)
    return _from_galaxy_model(model, meta, description or f"checkpoint {weights}")


def load_encoder(
    source, config: FinetuneConfig | None = None, offline: bool = False
) -> EncoderSource:
    """Resolve an encoder from any of the supported sources.

    Parameters
    ----------
    source : ``"course"`` (the committed course checkpoint), ``"synthetic"`` (its first,
        synthetic-only stage), ``"quick"`` (the quick model, trained and cached on first use), a checkpoint path (``.safetensors``/``.json`` pair),
        a loaded ``(GalaxyModel, metadata)`` pair or ``GalaxyModel``, an ``EncoderSource``,
        a Zoobot/hub encoder ``"hf_hub:owner/name"`` or a local encoder folder (through
        ``pretrained.load_pretrained_encoder``), or a timm name ``"timm:resnet18"`` (the
        prefix may be left out when the name is not a file).
    config : preprocessing overrides, ``pretrained`` for timm names, and ``architecture``
        (refuses an encoder of another architecture).
    offline : never touch the network: hub encoders and timm's pretrained weights must already
        be in the local cache (fails at once instead of after the hub's retries).

    Returns
    -------
    EncoderSource

    Raises
    ------
    FinetuneError when the architecture differs from ``config.architecture`` or the source
    cannot be resolved.
    """
    cfg = config or FinetuneConfig()
    if isinstance(source, EncoderSource):
        src = copy.copy(source)
    elif isinstance(source, FinetunedModel):
        m = source.metadata
        src = EncoderSource(
            source.encoder,
            m["architecture"],
            int(m["image_size"]),
            int(m["channels"]),
            _floats(m.get("mean")),
            _floats(m.get("std")),
            m.get("encoder_source", "finetuned model"),
            m.get("greyscale") or "mean",
            m.get("framing") or None,
        )
    elif isinstance(source, str) and source in NAMED_CHECKPOINTS:
        src = _unpack_loaded(_named_checkpoint(source), f"{source} checkpoint")
    elif isinstance(source, str) and (source.startswith("hf_hub:") or source.startswith("zoobot:")):
        src = _load_hub_encoder(source.removeprefix("zoobot:"), cfg, offline)
    elif isinstance(source, (str, os.PathLike)) and _is_checkpoint_path(source):
        src = _load_checkpoint_path(source)
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        src = _load_hub_encoder(str(source), cfg, offline)
    elif isinstance(source, str):
        src = _timm_encoder(source.removeprefix("timm:"), cfg, offline)
    elif isinstance(source, tuple) and len(source) == 2:
        src = _from_galaxy_model(source[0], source[1], "loaded checkpoint")
    elif isinstance(source, nn.Module) and hasattr(source, "encoder"):
        src = _from_galaxy_model(source, None, "loaded model")
    else:
        raise FinetuneError(
            f"cannot use {type(source).__name__} {source!r} as an encoder: pass 'course', "
            "'synthetic', 'quick', a checkpoint path, a GalaxyModel, 'hf_hub:<repo>' or 'timm:<name>'"
        )
    if cfg.architecture is not None and _arch_name(src.architecture) != _arch_name(
        cfg.architecture
    ):
        raise FinetuneError(
            f"{src.description} is a {src.architecture!r} encoder, but architecture="
            f"{cfg.architecture!r} was asked for. Use a checkpoint of that architecture, or "
            "drop architecture= to finetune the checkpoint's own."
        )
    if cfg.image_size is not None:
        src.image_size = int(cfg.image_size)
    if cfg.channels is not None:
        src.channels = int(cfg.channels)
    if cfg.mean is not None:
        src.mean = _floats(cfg.mean)
    if cfg.std is not None:
        src.std = _floats(cfg.std)
    return src


def _arch_name(name: str) -> str:
    # "convnext_atto.d2_in1k" and "convnext_atto" are the same architecture.
    return str(name).removeprefix("timm:").split(".")[0]


def _is_checkpoint_path(source) -> bool:
    p = Path(source)
    if p.suffix in (".safetensors", ".json", ".pt", ".pth", ".ckpt", ".pkl"):
        return True
    return p.with_name(p.name + ".safetensors").exists() or p.with_name(p.name + ".json").exists()


def _timm_weights_cached(name: str) -> bool:
    """Whether timm's default pretrained weights for ``name`` are in the local HF cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    try:
        pcfg = timm.models.get_pretrained_cfg(name)
    except Exception:  # unknown name or no pretrained tag
        return False
    repo = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    if not repo:
        return False
    for fname in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, fname), str):
            return True
    return False


def _timm_encoder(name: str, cfg: FinetuneConfig, offline: bool = False) -> EncoderSource:
    import timm

    if not timm.is_model(name):
        raise FinetuneError(
            f"{name!r} is neither a checkpoint file nor a timm architecture. Pass 'course', a "
            "checkpoint path (without suffix or with .safetensors), 'hf_hub:<repo>' or a timm "
            "name such as 'timm:convnext_atto'."
        )
    channels = int(cfg.channels or 3)
    if cfg.pretrained and offline and not _timm_weights_cached(name):
        raise FinetuneError(
            f"timm's pretrained (ImageNet) weights for {name!r} are not in the local cache and "
            "we are offline. Run once with internet (timm.create_model(name, pretrained=True) "
            "downloads them to ~/.cache/huggingface), or pass pretrained=False."
        )
    try:
        encoder = timm.create_model(
            name, pretrained=cfg.pretrained, num_classes=0, in_chans=channels
        )
    except Exception as err:  # network errors come in many types
        raise FinetuneError(
            f"cannot load timm's pretrained weights for {name!r} ({type(err).__name__}: {err}). "
            "They are downloaded from the Hugging Face hub: run once with internet (they are "
            "cached in ~/.cache/huggingface), or pass pretrained=False to train from scratch."
        ) from err
    pcfg = getattr(encoder, "pretrained_cfg", {}) or {}
    mean = list(pcfg.get("mean", ())) if cfg.pretrained else None
    std = list(pcfg.get("std", ())) if cfg.pretrained else None
    if mean and channels == 1:
        mean, std = [float(np.mean(mean))], [float(np.mean(std))]
    kind = "ImageNet-pretrained" if cfg.pretrained else "randomly initialised"
    return EncoderSource(
        encoder=encoder,
        architecture=name,
        image_size=int(cfg.image_size or 64),
        channels=channels,
        mean=_floats(mean) if mean else None,
        std=_floats(std) if std else None,
        description=f"{kind} timm {name}",
    )


def _load_hub_encoder(name: str, cfg: FinetuneConfig, offline: bool = False) -> EncoderSource:
    try:
        from .pretrained import load_pretrained_encoder
    except ImportError as err:
        raise FinetuneError(
            f"cannot load {name!r}: galaxy_helpers.pretrained is not available ({err})"
        ) from err
    try:
        model = load_pretrained_encoder(
            name, channels=int(cfg.channels or 3), offline=True if offline else None
        )
    except Exception as err:
        raise FinetuneError(
            f"cannot load the pretrained encoder {name!r} ({type(err).__name__}: {err}). Hub "
            "encoders need the network once (then they are cached); offline, pass a local "
            "folder in the hub's layout (config.json + model.safetensors)."
        ) from err
    src = _from_galaxy_model(model, getattr(model, "metadata", None), f"pretrained encoder {name}")
    if cfg.image_size is None and not (getattr(model, "metadata", {}) or {}).get("image_size"):
        src.image_size = 64
    return src


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------
def labelled_rows(
    catalogue: pd.DataFrame,
    label_column: str,
    labels: pd.DataFrame | pd.Series | Mapping | None = None,
    task: str = "classification",
    classes: Sequence | None = None,
) -> pd.DataFrame:
    """The labelled galaxies of a catalogue, checked.

    Parameters
    ----------
    catalogue : catalogue with ``id_str`` and ``file_loc``.
    label_column : column holding the label. Rows where it is missing (NaN/None) are unlabelled
        and ignored.
    labels : optional labels kept apart from the catalogue: a DataFrame with ``id_str`` and
        ``label_column``, a Series indexed by id_str, or a dict ``{id_str: label}``.
    task : ``"classification"`` needs at least two classes; ``"regression"`` finite numbers.
    classes : the classes, stated (``[0, 1]``): any other label value is an error. ``None``:
        inferred once from the labels, refusing what looks like a stray value (text beside
        numbers, ``"nan"``, a fraction, or a class held by a single galaxy among many).

    Returns
    -------
    DataFrame of the labelled rows (index reset), with the label in ``label_column``.

    Raises
    ------
    FinetuneError naming the missing column, the ids not in the catalogue, or the only class.
    """
    for col in ("id_str", "file_loc"):
        if col not in catalogue.columns:
            raise FinetuneError(
                f"the catalogue has no {col!r} column (columns: {list(catalogue.columns)[:10]}...): "
                "a catalogue needs id_str and file_loc (see DEVELOPERS.md)"
            )
    if len(catalogue) == 0:
        raise FinetuneError("the catalogue is empty: it has no galaxies to finetune on")
    cat = catalogue.copy()
    cat["id_str"] = cat["id_str"].astype(str)
    dup_ids = cat["id_str"][cat["id_str"].duplicated()].unique()
    if len(dup_ids):
        raise FinetuneError(
            f"the catalogue gives {len(dup_ids)} id_str value(s) more than once, e.g. "
            f"{list(dup_ids[:5])}: a galaxy twice can land in training and validation at once. "
            "Keep one row per galaxy (catalogue.drop_duplicates('id_str'))."
        )
    if labels is not None:
        if isinstance(labels, pd.DataFrame):
            if "id_str" not in labels.columns or label_column not in labels.columns:
                raise FinetuneError(
                    f"labels must have columns 'id_str' and {label_column!r}; got "
                    f"{list(labels.columns)}"
                )
            lab = labels[["id_str", label_column]].copy()
        else:
            series = pd.Series(labels)
            lab = pd.DataFrame({"id_str": series.index, label_column: series.to_numpy()})
        lab["id_str"] = lab["id_str"].astype(str)
        dup = lab["id_str"][lab["id_str"].duplicated()].unique()
        if len(dup):
            raise FinetuneError(f"labels give {len(dup)} id(s) twice, e.g. {list(dup[:5])}")
        missing = sorted(set(lab["id_str"]) - set(cat["id_str"]))
        if missing:
            raise FinetuneError(
                f"{len(missing)} labelled id(s) are not in the catalogue, e.g. {missing[:5]}. "
                "Check the id_str spelling, or add those galaxies (with file_loc) to the catalogue."
            )
        cat = cat.drop(columns=[label_column], errors="ignore").merge(lab, on="id_str", how="left")
    elif label_column not in cat.columns:
        raise FinetuneError(
            f"the catalogue has no label column {label_column!r}; columns include "
            f"{[c for c in cat.columns if not c.startswith(('truth_',))][:12]}. Pass labels= "
            "(id_str -> label) or name an existing column."
        )
    present = cat[label_column].notna()
    out = cat[present].reset_index(drop=True)
    if out.empty:
        raise FinetuneError(f"no galaxy has a label in column {label_column!r}")
    if task == "classification":
        _check_classes(out, label_column, classes)
        classes = pd.unique(out[label_column])
        if len(classes) < 2:
            raise FinetuneError(
                f"label column {label_column!r} has one class only ({classes[0]!r}, "
                f"{len(out)} galaxies): a classifier needs examples of at least two classes. "
                "Add galaxies of the other class (e.g. non-rings as well as rings)."
            )
    else:
        try:
            out[label_column] = out[label_column].astype(float)
        except (TypeError, ValueError) as err:
            raise FinetuneError(
                f"regression needs numeric labels in {label_column!r} ({err})"
            ) from err
        bad = ~np.isfinite(out[label_column].to_numpy())
        if bad.any():
            rows = np.flatnonzero(bad)
            raise FinetuneError(
                f"{len(rows)} regression label(s) in {label_column!r} are infinite, e.g. "
                f"{_where(out, rows, label_column)}: fix them, or set them to NaN (unlabelled)."
            )
    return out


def _where(rows: pd.DataFrame, positions, column: str) -> str:
    return "; ".join(
        f"id_str {rows['id_str'].iloc[i]!r} = {rows[column].iloc[i]!r}" for i in positions[:5]
    )


_MISSING_WORDS = {"", "nan", "none", "null", "na", "n/a", "-"}


def _check_classes(rows: pd.DataFrame, column: str, classes: Sequence | None) -> None:
    """Refuse labels outside the stated classes, or that look stray when none are stated."""
    values = rows[column]
    if classes is not None:
        stated = list(classes)
        stray = np.flatnonzero(~values.isin(stated).to_numpy())
        if len(stray):
            raise FinetuneError(
                f"{len(stray)} label(s) in {column!r} are not one of the stated classes {stated}:"
                f" {_where(rows, stray, column)}. Fix them, set them to NaN (unlabelled), or "
                "state the classes they belong to."
            )
        return
    hint = (
        "Fix the value, set it to NaN (unlabelled), or pass classes=[...] to state the classes "
        "(then every other value is an error)."
    )
    text = values.map(lambda v: isinstance(v, str)).to_numpy()
    if text.any() and not text.all():
        odd = np.flatnonzero(text if text.sum() < len(text) / 2 else ~text)
        raise FinetuneError(
            f'label column {column!r} mixes text and numbers ("1" and 1 would be two classes): '
            f"{_where(rows, odd, column)}. {hint}"
        )
    if text.any():
        missing = np.flatnonzero(values.str.strip().str.lower().isin(_MISSING_WORDS).to_numpy())
        if len(missing):
            raise FinetuneError(
                f"label column {column!r} holds text that reads as a missing value: "
                f"{_where(rows, missing, column)}. {hint}"
            )
        return
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    fractional = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)))
    if len(fractional):
        raise FinetuneError(
            f"label column {column!r} holds values that are not class labels: "
            f"{_where(rows, fractional, column)}. For a numeric target use task='regression'. "
            + hint
        )
    counts = values.value_counts()
    lonely = counts[counts == 1].index.tolist()
    if len(values) >= 10 and lonely and len(counts) > 2 and counts.max() >= 5:
        rows_lonely = np.flatnonzero(values.isin(lonely).to_numpy())
        raise FinetuneError(
            f"label column {column!r}: class(es) {lonely} hold a single galaxy among "
            f"{len(values)}, which looks like a stray value: {_where(rows, rows_lonely, column)}. "
            + hint
        )


def balanced_sample(
    catalogue: pd.DataFrame,
    label_column: str,
    n: int,
    population=None,
    seed: int = 0,
    exclude_ids: Sequence[str] = (),
) -> pd.DataFrame:
    """Draw ``n`` labelled galaxies, the same number of each class (as a labeller would).

    Parameters
    ----------
    catalogue : catalogue with ``label_column``.
    label_column : the label.
    n : how many galaxies in all (``n // n_classes`` of each class).
    population : restrict to these galaxies (mask, callable or query string, as in
        :func:`label_budget_experiment`).
    seed : random seed.
    exclude_ids : ids never drawn (e.g. a test set).

    Returns
    -------
    DataFrame of the drawn rows (original index kept), shuffled.
    """
    mask = _population_mask(catalogue, population) & catalogue[label_column].notna().to_numpy()
    mask &= ~catalogue["id_str"].astype(str).isin(set(map(str, exclude_ids))).to_numpy()
    pool = catalogue[mask]
    classes = sorted(pd.unique(pool[label_column]).tolist(), key=str)
    if len(classes) < 2:
        raise FinetuneError(f"{label_column!r} has fewer than two classes among these galaxies")
    per = n // len(classes)
    rng = np.random.default_rng(seed)
    parts = []
    for c in classes:
        members = pool[pool[label_column] == c]
        if len(members) < per:
            raise FinetuneError(
                f"only {len(members)} galaxies have {label_column} == {c!r}; {per} were asked for"
            )
        parts.append(members.iloc[rng.choice(len(members), per, replace=False)])
    out = pd.concat(parts)
    return out.iloc[rng.permutation(len(out))]


def _encode_classes(values: pd.Series, stated: Sequence | None = None) -> tuple[np.ndarray, list]:
    if stated is not None:
        classes = list(stated)
    else:
        classes = sorted(pd.unique(values).tolist(), key=lambda v: (str(type(v)), v))
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[v] for v in values], dtype=np.int64)
    return y, [_py(c) for c in classes]


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _stratified_split(
    y: np.ndarray, val_fraction: float, rng: np.random.Generator, classification: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val); every class with >= 2 members gets >= 1 validation galaxy."""
    n = len(y)
    if val_fraction <= 0 or n < 3:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    if not classification:
        perm = rng.permutation(n)
        n_val = max(1, int(round(val_fraction * n)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(val_fraction * len(idx)))
        if len(idx) >= 2:
            n_val = min(max(1, n_val), len(idx) - 1)
        else:
            n_val = 0
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def _class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class Head(nn.Module):
    """Standardise features (clipped to +- ``clip``), then one linear layer (logits, or a
    standardised number). ``clip`` is kept in the model's metadata, not in its weights."""

    def __init__(self, in_features: int, n_outputs: int, clip: float | None = None):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_scale", torch.ones(in_features))
        self.clip = clip
        self.linear = nn.Linear(in_features, n_outputs)

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        z = (z - self.feature_mean) / self.feature_scale
        return z if self.clip is None else z.clamp(-self.clip, self.clip)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.standardise(z))


class FinetunedModel(nn.Module):
    """A pretrained encoder with a new head for one label column.

    Use :func:`finetune` to make one; ``FinetunedModel.load(path)`` to read one back.

    Attributes
    ----------
    encoder : timm encoder (pooled features).
    head : :class:`Head`.
    metadata : dict with architecture, preprocessing (image_size, channels, mean, std), task,
        label_column, classes, mode, config, encoder_source, metrics.
    """

    def __init__(self, encoder: nn.Module, head: Head, metadata: dict):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.metadata = dict(metadata)
        self.register_buffer("target_mean", torch.tensor(float(metadata.get("target_mean", 0.0))))
        self.register_buffer("target_std", torch.tensor(float(metadata.get("target_std", 1.0))))

    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def classes(self) -> list:
        return list(self.metadata.get("classes") or [])

    @property
    def label_column(self) -> str:
        return self.metadata["label_column"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` (classification) or values ``(B,)`` (regression)."""
        out = self.head(self.encoder(x))
        if self.task == "regression":
            return out[:, 0] * self.target_std + self.target_mean
        return out

    # -- prediction -------------------------------------------------------------------------
    def _preprocess(self, batch_uint8: np.ndarray, device) -> torch.Tensor:
        from .images import to_tensor

        m = self.metadata
        x = torch.as_tensor(np.asarray(batch_uint8)).to(device)
        return to_tensor(
            x,
            channels=int(m["channels"]),
            mean=m.get("mean"),
            std=m.get("std"),
            greyscale=m.get("greyscale") or "mean",
        )

    @torch.no_grad()
    def predict_images(
        self, images: np.ndarray, batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` or values ``(N,)`` for uint8 images."""
        device = _module_device(self)
        was_training = self.training
        self.eval()
        outs = []
        starts = range(0, len(images), batch_size)
        if progress and len(images) > 4 * batch_size:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Predicting", unit="batch")
        try:
            for s in starts:
                out = self(self._preprocess(images[s : s + batch_size], device))
                if self.task == "classification":
                    out = torch.softmax(out, dim=1)
                outs.append(out.float().cpu().numpy())
        finally:
            self.train(was_training)
        if not outs:
            width = (len(self.classes),) if self.task == "classification" else ()
            return np.zeros((0, *width), dtype=np.float32)
        return np.concatenate(outs)

    def predict(
        self, catalogue: pd.DataFrame, batch_size: int = 256, progress: bool = True
    ) -> pd.DataFrame:
        """Predict every galaxy of a catalogue.

        Parameters
        ----------
        catalogue : DataFrame with ``id_str`` and ``file_loc`` (any image size or mode).
        batch_size : images per forward pass.
        progress : progress bars.

        Returns
        -------
        DataFrame with ``id_str``, one ``probability_<class>`` column per class and
        ``prediction`` (the most probable class); for regression ``id_str`` and ``prediction``.
        """
        from .images import catalogue_crops, load_images, model_resample

        for col in ("id_str", "file_loc"):
            if col not in catalogue.columns:
                raise FinetuneError(f"the catalogue to predict has no {col!r} column")
        imgs = load_images(
            catalogue["file_loc"].tolist(),
            int(self.metadata["image_size"]),
            progress=progress,
            crop=catalogue_crops(catalogue, self.metadata),
            resample=model_resample(self.metadata),
        )
        out = self.predict_images(imgs, batch_size=batch_size, progress=progress)
        table = pd.DataFrame({"id_str": catalogue["id_str"].astype(str).to_numpy()})
        if self.task == "regression":
            table["prediction"] = out
            return table
        for i, c in enumerate(self.classes):
            table[f"probability_{c}"] = out[:, i]
        table["prediction"] = [self.classes[i] for i in out.argmax(axis=1)]
        return table

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (metadata) atomically.

        Returns
        -------
        Path of the weights file.
        """
        from .models import write_checkpoint_files

        weights, meta_path = checkpoint_paths(path)
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        meta = dict(self.metadata)
        meta["format"] = FORMAT
        # weights and JSON replaced together, NaN/inf refused (the same path as save_checkpoint)
        write_checkpoint_files(state, meta, path, FinetuneError)
        return weights

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> FinetunedModel:
        """Rebuild a finetuned model from ``<path>.safetensors`` + ``<path>.json``.

        Never unpickles: the architecture is rebuilt by name with timm and the weights are
        read with safetensors.

        Raises
        ------
        FinetuneError when a file is missing, the JSON is not a finetuned model, or the weights
        do not fit the architecture the JSON names.
        """
        import timm

        weights, meta_path, meta = read_checkpoint_metadata(
            path,
            FinetuneError,
            "a finetuned model is a .safetensors weights file plus a .json metadata file with "
            "the same name (FinetunedModel.save writes both)",
        )
        if meta.get("format") != FORMAT:
            raise FinetuneError(
                f"{meta_path}: format {meta.get('format')!r} is not a finetuned model "
                f"({FORMAT!r}); load pretrained checkpoints with models.load_checkpoint"
            )
        arch = meta["architecture"]
        try:
            encoder = timm.create_model(
                arch, pretrained=False, num_classes=0, in_chans=int(meta["channels"])
            )
        except Exception as err:
            raise FinetuneError(
                f"{meta_path}: cannot build architecture {arch!r} with timm ({err})"
            ) from err
        n_out = len(meta["classes"]) if meta["task"] == "classification" else 1
        clip = meta.get("config", {}).get("feature_clip")  # absent in older files: no clipping
        model = cls(encoder, Head(int(encoder.num_features), n_out, clip), meta)
        load_weights(
            model,
            weights,
            FinetuneError,
            f"a {arch!r} with {n_out} output(s)",
            "The checkpoint is of another architecture, or the JSON belongs to another run.",
        )
        model.eval()
        if device is not None:
            model.to(device)
        return model


def _module_device(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Fitting: the head on cached features, and the full network
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def encode(
    src: EncoderSource,
    images: np.ndarray,
    batch_size: int = 256,
    device=None,
    progress: bool = False,
) -> np.ndarray:
    """Pooled features ``(N, D)`` of uint8 images with the source's preprocessing."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    enc = src.encoder.to(device)
    out = run_in_batches(
        enc,
        images,
        enc,
        batch_size,
        src.channels,
        src.mean,
        src.std,
        device,
        progress,
        "Encoding",
        src.greyscale,
    )
    if len(out) == 0:
        return np.zeros((0, src.representation_dim), dtype=np.float32)
    return out


def _head_loss(task, logits, y, weights):
    if task == "classification":
        return nn.functional.cross_entropy(logits, y, weight=weights)
    return nn.functional.mse_loss(logits[:, 0], y)


def _standardising_head(X: torch.Tensor, n_out: int, cfg: FinetuneConfig) -> Head:
    """A new head (in ``X``'s dtype) that standardises with the mean and spread of ``X``."""
    head = Head(X.shape[1], n_out, cfg.feature_clip).to(X.dtype)
    with torch.no_grad():
        head.feature_mean.copy_(X.mean(0))
        head.feature_scale.copy_(X.std(0, unbiased=False).clamp_min(1e-6))
    return head


def _fit_head_steps(
    X: np.ndarray,
    y: np.ndarray,
    n_out: int,
    cfg: FinetuneConfig,
    steps: int,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> tuple[Head, int, list[float]]:
    """Full-batch Adam on standardised features with an L2 penalty.

    With a validation set: stop when the validation loss has not improved for
    ``head_patience`` steps and return the best head and its step. Without: run ``steps``.
    """
    torch.manual_seed(cfg.seed)
    classification = cfg.task == "classification"
    broken = np.flatnonzero(~np.isfinite(np.asarray(X, dtype=np.float64)).all(axis=1))
    if len(broken):
        raise FinetuneError(
            f"labelled rows {broken[:10].tolist()} have NaN or infinite features, so the head "
            "cannot be trained: check those galaxies' images (or their representation table)."
        )
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long if classification else torch.float32)
    head = _standardising_head(Xt, n_out, cfg)
    nn.init.zeros_(head.linear.weight)
    nn.init.zeros_(head.linear.bias)
    weights = _class_weights(y, n_out) if classification and cfg.balance != "none" else None
    opt = torch.optim.Adam(head.parameters(), lr=cfg.head_lr)
    has_val = X_val is not None and len(X_val) > 0
    if has_val:
        Xv = torch.as_tensor(X_val, dtype=torch.float32)
        yv = torch.as_tensor(y_val, dtype=torch.long if classification else torch.float32)
        wv = _class_weights(y_val, n_out) if weights is not None else None
    n = len(Xt)
    best = (math.inf, 0, copy.deepcopy(head.state_dict()))
    if has_val:  # the untrained head (equal probabilities) is a candidate too
        with torch.no_grad():
            best = (float(_head_loss(cfg.task, head(Xv), yv, wv)), 0, best[2])
    history = []
    since_best = 0
    for step in range(1, steps + 1):
        opt.zero_grad()
        out = head(Xt)
        loss = _head_loss(cfg.task, out, yt, weights)
        if not torch.isfinite(loss):
            rows = torch.nonzero(~torch.isfinite(out.reshape(len(out), -1)).all(dim=1)).flatten()
            raise FinetuneError(
                f"the head's training loss became {float(loss)} at step {step} (labelled rows "
                f"with non-finite outputs: {rows[:10].tolist() or 'none'}): lower head_lr "
                f"({cfg.head_lr}) or raise head_l2."
            )
        loss = loss + 0.5 * (cfg.head_l2 or 1.0) / n * head.linear.weight.pow(2).sum()
        loss.backward()
        opt.step()
        if has_val:
            with torch.no_grad():
                vloss = float(_head_loss(cfg.task, head(Xv), yv, wv))
            history.append(vloss)
            if vloss < best[0] - 1e-6:
                best = (vloss, step, copy.deepcopy(head.state_dict()))
                since_best = 0
            else:
                since_best += 1
                if since_best >= cfg.head_patience:
                    break
    if has_val:
        head.load_state_dict(best[2])
        return head, best[1], history
    return head, steps, history


def choose_l2(X: np.ndarray, y: np.ndarray, n_out: int, cfg: FinetuneConfig) -> tuple[float, dict]:
    """Pick the head's L2 penalty from ``cfg.head_l2_grid`` by stratified cross-validation.

    Classification: balanced accuracy over ``k = min(5, smallest class)`` folds; regression:
    mean squared error over 5 folds. Ties go to the stronger penalty.

    Returns
    -------
    (l2, scores) with the mean score of every candidate.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    grid = sorted(float(v) for v in cfg.head_l2_grid)
    if len(grid) == 1:
        return grid[0], {}
    classification = cfg.task == "classification"
    if classification:
        k = int(min(5, np.bincount(y, minlength=n_out)[np.unique(y)].min()))
        if k < 2:
            return grid[-1], {}
        folds = StratifiedKFold(k, shuffle=True, random_state=cfg.seed).split(X, y)
    else:
        if len(y) < 4:
            return grid[-1], {}
        folds = KFold(min(5, len(y)), shuffle=True, random_state=cfg.seed).split(X)
    folds = list(folds)
    scores = {}
    for l2 in grid:
        c = dataclasses.replace(cfg, head_l2=l2)
        vals = []
        for tr, te in folds:
            head = _fit_head_lbfgs(X[tr], y[tr], n_out, c)
            with torch.no_grad():
                out = head(torch.as_tensor(X[te], dtype=torch.float32))
            if classification:
                vals.append(_balanced_accuracy(y[te], out.argmax(1).numpy()))
            else:
                vals.append(-float(((out[:, 0].numpy() - y[te]) ** 2).mean()))
        scores[l2] = float(np.mean(vals))
    best = max(scores.values())
    chosen = max(l2 for l2, v in scores.items() if v >= best - 1e-9)
    return chosen, scores


def _fit_head_lbfgs(X: np.ndarray, y: np.ndarray, n_out: int, cfg: FinetuneConfig) -> Head:
    """L2-regularised logistic (ridge) regression on standardised features, solved by L-BFGS.

    Minimises ``weighted mean loss + head_l2 / (2 N) * ||W||^2``, the objective of
    scikit-learn's ``LogisticRegression(C=1 / head_l2, class_weight="balanced")``.
    ``cfg.head_l2`` must be a number (:func:`_with_l2` resolves ``None``).
    """
    torch.manual_seed(cfg.seed)
    classification = cfg.task == "classification"
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.long if classification else torch.float64)
    head = _standardising_head(Xt, n_out, cfg)  # float64 while solving
    with torch.no_grad():
        Z = head.standardise(Xt)
    W = torch.zeros(n_out, Xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_out, dtype=torch.float64, requires_grad=True)
    weights = (
        _class_weights(y, n_out).double() if classification and cfg.balance != "none" else None
    )
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=200,
        tolerance_grad=1e-8,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    n = len(Z)
    # Two softmax weight vectors W0, W1 act like one binary vector w = W1 - W0 with half the
    # penalty, so double it for two classes to keep scikit-learn's binary objective.
    l2 = cfg.head_l2 * (2.0 if n_out == 2 else 1.0)

    def closure():
        opt.zero_grad()
        out = Z @ W.T + b
        loss = _head_loss(cfg.task, out, yt, weights) + 0.5 * l2 / n * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.linear.weight.copy_(W)
        head.linear.bias.copy_(b)
    return head.float()


def _with_l2(X: np.ndarray, y: np.ndarray, n_out: int, cfg: FinetuneConfig) -> FinetuneConfig:
    """``cfg`` with ``head_l2 = None`` replaced by the cross-validated choice (once per fit)."""
    if cfg.head_l2 is None:
        return dataclasses.replace(cfg, head_l2=choose_l2(X, y, n_out, cfg)[0])
    return cfg


def _linear_probe(X, y, X_val, y_val, n_out, cfg: FinetuneConfig) -> Head:
    """The head that full finetuning starts from, fitted on the training split only."""
    if cfg.head_solver == "lbfgs":
        return _fit_head_lbfgs(X, y, n_out, _with_l2(X, y, n_out, cfg))
    head, _, _ = _fit_head_steps(X, y, n_out, cfg, cfg.head_max_steps, X_val, y_val)
    return head


def fit_head(
    X: np.ndarray,
    y: np.ndarray,
    n_out: int,
    cfg: FinetuneConfig,
    rng: np.random.Generator | None = None,
) -> tuple[Head, dict]:
    """Fit a head on cached features (L-BFGS linear probe, or Adam with early stopping).

    Parameters
    ----------
    X : features ``(N, D)``; y : class indices (classification) or standardised numbers.
    n_out : number of classes (1 for regression).
    cfg : configuration (``val_fraction``, ``head_*``, ``refit``, ``balance``).
    rng : random generator for the split (default from ``cfg.seed``).

    Returns
    -------
    (head, info) where info holds ``steps``, ``n_train``, ``n_val``, ``val_loss``.
    """
    rng = rng or np.random.default_rng(cfg.seed)
    tr, va = _stratified_split(y, cfg.val_fraction, rng, cfg.task == "classification")
    if cfg.head_solver == "lbfgs":
        cfg = _with_l2(X, y, n_out, cfg)
        head = _fit_head_lbfgs(X[tr], y[tr], n_out, cfg)
        info = {
            "solver": "lbfgs",
            "head_l2": cfg.head_l2,
            "n_train": int(len(tr)),
            "n_val": int(len(va)),
        }
        if len(va):
            with torch.no_grad():
                out = head(torch.as_tensor(X[va], dtype=torch.float32))
                w = _class_weights(y[va], n_out) if cfg.task == "classification" else None
                yv = torch.as_tensor(y[va])
                info["val_loss"] = float(_head_loss(cfg.task, out, yv, w))
            if cfg.refit:
                head = _fit_head_lbfgs(X, y, n_out, cfg)
                info["refit_on"] = int(len(y))
        return head, info
    head, best_step, hist = _fit_head_steps(
        X[tr], y[tr], n_out, cfg, cfg.head_max_steps, X[va], y[va]
    )
    info = {
        "steps": int(best_step),
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "val_loss": float(min(hist)) if hist else None,
    }
    if cfg.refit and len(va):
        head, _, _ = _fit_head_steps(X, y, n_out, cfg, best_step)
        info["refit_on"] = int(len(y))
    return head, info


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree rotations, per galaxy (batched)."""
    b = x.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    k = torch.randint(0, 4, (b,), generator=generator)
    out = x.clone()
    for r in (1, 2, 3):
        sel = (k == r).to(x.device)
        if sel.any():
            out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
    return out


def _param_groups(model: FinetunedModel, cfg: FinetuneConfig) -> list[dict]:
    enc = model.encoder
    groups = []
    if cfg.layer_decay < 1.0 and hasattr(enc, "group_matcher"):
        from timm.optim import param_groups_layer_decay

        for g in param_groups_layer_decay(
            enc, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay
        ):
            scale = g.pop("lr_scale", 1.0)
            groups.append({**g, "lr": cfg.encoder_lr * scale})
    else:
        groups.append(
            {
                "params": [p for p in enc.parameters() if p.requires_grad],
                "lr": cfg.encoder_lr,
                "weight_decay": cfg.weight_decay,
            }
        )
    groups.append(
        {"params": list(model.head.parameters()), "lr": cfg.full_head_lr, "weight_decay": 0.0}
    )
    return groups


def _freeze_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_full(
    model: FinetunedModel,
    images: np.ndarray,
    y: np.ndarray,
    images_val: np.ndarray | None,
    y_val: np.ndarray | None,
    cfg: FinetuneConfig,
    ids: Sequence[str] | None = None,
) -> dict:
    """Train encoder and head together, early stopping on the validation loss.

    ``ids`` (aligned with ``images``) name the galaxies of a batch whose loss turns NaN or inf:
    training then stops with a :class:`FinetuneError` instead of returning a NaN model.

    Parameters
    ----------
    model : the model to train (in place); its metadata gives the preprocessing.
    images, y : training uint8 images ``(N, H, W, 3)`` and targets (class indices, or
        standardised numbers for regression).
    images_val, y_val : validation set (may be empty: then ``max_epochs`` epochs are run).
    cfg : configuration (``encoder_lr``, ``layer_decay``, ``full_head_lr``, ``max_epochs``,
        ``patience``, ``batch_size``, ``augment``, ``balance``...).

    Returns
    -------
    dict with ``epochs``, ``best_epoch``, ``val_loss`` (best) and ``history`` (per epoch).
    """
    device = _device(cfg)
    model.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classification = cfg.task == "classification"
    n_out = len(model.classes) if classification else 1
    x_train = model._preprocess(images, device)
    y_train = torch.as_tensor(y, dtype=torch.long if classification else torch.float32).to(device)
    has_val = images_val is not None and len(images_val) > 0
    if has_val:
        x_val = model._preprocess(images_val, device)
        y_v = torch.as_tensor(y_val, dtype=torch.long if classification else torch.float32).to(
            device
        )
    weights = None
    if classification and cfg.balance == "weights":
        weights = _class_weights(y, n_out).to(device)
    w_val = _class_weights(y_val, n_out).to(device) if has_val and weights is not None else None
    if classification and cfg.balance == "sampler":
        counts = np.bincount(y, minlength=n_out).astype(float)
        p = 1.0 / counts[y]
        p = p / p.sum()
    else:
        p = None
    opt = torch.optim.AdamW(_param_groups(model, cfg))
    n = len(x_train)
    bs = min(cfg.batch_size, n)
    steps = max(cfg.min_steps, math.ceil(n / bs))
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    if has_val:  # the starting point (e.g. the linear probe) is a candidate too
        model.eval()
        with torch.no_grad():
            v0 = float(_head_loss(cfg.task, model.head(model.encoder(x_val)), y_v, w_val))
        best = (v0, 0, best[2])
    history = []
    since_best = 0
    epochs = range(1, cfg.max_epochs + 1)
    if cfg.progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc=f"Finetuning ({n} galaxies)", unit="epoch", leave=False)
    for epoch in epochs:
        model.train()
        if cfg.freeze_batchnorm:
            _freeze_bn(model.encoder)
        order = rng.permutation(n) if p is None else None
        total = 0.0
        for s in range(steps):
            if p is not None:
                idx = rng.choice(n, size=bs, p=p)
            else:
                idx = order[(s * bs) % n : (s * bs) % n + bs]
                if len(idx) < bs:
                    idx = np.concatenate([idx, rng.permutation(n)[: bs - len(idx)]])
            xb = x_train[torch.as_tensor(idx)]
            if cfg.augment:
                xb = _augment(xb, gen)
            out = model.head(model.encoder(xb))
            loss = _head_loss(cfg.task, out, y_train[torch.as_tensor(idx)], weights)
            if not torch.isfinite(loss):
                names = [str(ids[i]) for i in idx[:8]] if ids is not None else idx[:8].tolist()
                raise FinetuneError(
                    f"finetuning turned NaN at epoch {epoch}, step {s + 1}: the loss of the batch "
                    f"holding galaxies {names} is {float(loss)}. Nothing was saved. Check those "
                    "galaxies' labels and images, or lower encoder_lr / head_lr."
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        record = {"epoch": epoch, "train_loss": total / steps}
        if has_val:
            model.eval()
            with torch.no_grad():
                vloss = float(_head_loss(cfg.task, model.head(model.encoder(x_val)), y_v, w_val))
            record["val_loss"] = vloss
            if vloss < best[0] - 1e-6:
                best = (vloss, epoch, copy.deepcopy(model.state_dict()))
                since_best = 0
            else:
                since_best += 1
        history.append(record)
        if has_val and since_best >= cfg.patience:
            break
    if has_val:
        model.load_state_dict(best[2])
    model.eval()
    return {
        "epochs": len(history),
        "best_epoch": int(best[1]) if has_val else len(history),
        "val_loss": float(best[0]) if has_val else None,
        "history": history,
    }


def _new_model(src: EncoderSource, n_out: int, meta: dict, head: Head):
    base = {
        "architecture": src.architecture,
        "image_size": src.image_size,
        "channels": src.channels,
        "mean": src.mean,
        "std": src.std,
        "encoder_source": src.description,
        "representation_dim": src.representation_dim,
    }
    if src.greyscale != "mean":
        base["greyscale"] = src.greyscale
    if src.framing:
        base["framing"] = src.framing
    base.update(meta)
    return FinetunedModel(src.encoder, head, base)


def finetune(
    checkpoint,
    catalogue: pd.DataFrame,
    label_column: str,
    mode: str | None = None,
    task: str | None = None,
    *,
    labels: pd.DataFrame | pd.Series | Mapping | None = None,
    config: FinetuneConfig | None = None,
    images: np.ndarray | None = None,
    classes: Sequence | None = None,
    **overrides,
) -> FinetunedModel:
    """Finetune a pretrained encoder to predict ``label_column`` -- one call.

    Parameters
    ----------
    checkpoint : where the encoder comes from: ``"course"``, ``"quick"``, a checkpoint path,
        a loaded ``GalaxyModel`` or ``(model, metadata)``, ``"hf_hub:<repo>"`` (Zoobot) or
        ``"timm:<name>"`` (see :func:`load_encoder`).
    catalogue : DataFrame with ``id_str``, ``file_loc`` and (unless ``labels`` is given) the
        label column; rows whose label is missing are ignored.
    label_column : the label to learn (e.g. ``"ring"``).
    mode : ``"head"`` (frozen encoder) or ``"full"``; default ``config.mode``.
    task : ``"classification"`` or ``"regression"``; default ``config.task``.
    labels : labels kept apart from the catalogue (DataFrame with id_str + label_column,
        Series or dict keyed by id_str); every id must be in the catalogue.
    config : :class:`FinetuneConfig`; keyword ``overrides`` change single fields
        (``finetune(..., max_epochs=30, seed=2)``).
    images : optional uint8 images ``(N, S, S, 3)`` aligned with the *labelled* rows (saves
        reading the files again).
    classes : the classes of a classification, stated (e.g. ``[0, 1]``); any other label is
        an error. Default: inferred once from the labels (see :func:`labelled_rows`).

    Returns
    -------
    FinetunedModel, with ``metadata["metrics"]`` (validation loss, steps, numbers of galaxies).

    Examples
    --------
    >>> model = finetune("course", catalogue, "ring")            # doctest: +SKIP
    >>> model.predict(catalogue).sort_values("probability_1").tail()   # doctest: +SKIP
    """
    cfg = (config or FinetuneConfig()).replace(**overrides)
    if mode is not None or task is not None:
        cfg = cfg.replace(mode=mode or cfg.mode, task=task or cfg.task)
    t0 = time.perf_counter()
    rows = labelled_rows(catalogue, label_column, labels, task=cfg.task, classes=classes)
    src = load_encoder(checkpoint, cfg)
    src.encoder = copy.deepcopy(src.encoder) if cfg.mode == "full" else src.encoder
    classification = cfg.task == "classification"
    if classification:
        y, classes = _encode_classes(rows[label_column], classes)
        n_out = len(classes)
        target_mean, target_std = 0.0, 1.0
    else:
        values = rows[label_column].to_numpy(dtype=float)
        target_mean = float(values.mean())
        target_std = float(values.std()) or 1.0
        y = ((values - target_mean) / target_std).astype(np.float32)
        classes, n_out = [], 1
    if images is None:
        images = src.read(rows, progress=cfg.progress)
    elif len(images) != len(rows):
        raise FinetuneError(
            f"images has {len(images)} entries but {len(rows)} galaxies are labelled in "
            f"{label_column!r}; pass images aligned with the labelled rows or leave it out"
        )
    device = _device(cfg)
    rng = np.random.default_rng(cfg.seed)
    src.encoder.to(device)
    feats = encode(src, images, device=device, progress=cfg.progress)
    meta = {
        "task": cfg.task,
        "label_column": label_column,
        "classes": classes,
        "mode": cfg.mode,
        "config": cfg.to_dict(),
        "target_mean": target_mean,
        "target_std": target_std,
        "n_labelled": int(len(rows)),
    }
    if cfg.mode == "head":
        head, info = fit_head(feats, y, n_out, cfg, rng)
        model = _new_model(src, n_out, meta, head)
        metrics = dict(info)
    else:
        tr, va = _stratified_split(y, cfg.val_fraction, rng, classification)
        if cfg.linear_probe_first:
            head = _linear_probe(feats[tr], y[tr], feats[va], y[va], n_out, cfg)
        else:
            head = Head(src.representation_dim, n_out, cfg.feature_clip)
        model = _new_model(src, n_out, meta, head)
        ids = rows["id_str"].to_numpy()
        info = train_full(model, images[tr], y[tr], images[va], y[va], cfg, ids=ids[tr])
        metrics = {
            "epochs": info["epochs"],
            "best_epoch": info["best_epoch"],
            "val_loss": info["val_loss"],
            "n_train": int(len(tr)),
            "n_val": int(len(va)),
        }
    if classification:
        metrics["class_counts"] = {
            str(c): int(n) for c, n in zip(classes, np.bincount(y, minlength=n_out), strict=True)
        }
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    model.metadata["metrics"] = metrics
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# The label-budget experiment
# --------------------------------------------------------------------------------------------
@dataclass
class LabelBudgetResult:
    """Runs of a label-budget experiment.

    Attributes
    ----------
    runs : one row per (method, budget, repeat): balanced_accuracy, accuracy, n_train,
        n_positive..., seconds, cached.
    test_ids : id_str of the balanced test set (the same for every run).
    skipped : method -> why it could not run (e.g. weights not downloadable offline).
    description : what the population, labels and encoder were.
    """

    runs: pd.DataFrame
    test_ids: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Mean, standard deviation and number of repeats per method and budget."""
        g = self.runs.groupby(["method", "budget"])["balanced_accuracy"]
        out = g.agg(["mean", "std", "count"]).reset_index()
        return out.rename(columns={"count": "repeats"})

    def table(self) -> pd.DataFrame:
        """Mean balanced accuracy, methods as rows and budgets as columns."""
        return self.summary().pivot(index="method", columns="budget", values="mean").round(3)

    def metrics(self) -> dict[str, dict[str, float]]:
        """``{method: {"30": mean balanced accuracy, ...}}`` (budgets as strings)."""
        out: dict[str, dict[str, float]] = {}
        for row in self.summary().itertuples():
            out.setdefault(row.method, {})[str(int(row.budget))] = round(float(row.mean), 4)
        return out

    def plot(self, ax=None, paper: bool = True, title: str | None = None):
        """The learning curve (see :func:`plot_label_budget`)."""
        return plot_label_budget(self, ax=ax, paper=paper, title=title)


def _catalogue_key(df: pd.DataFrame, label_column: str) -> str:
    h = hashlib.sha256()
    for col in ("id_str", "file_loc", label_column):
        h.update(pd.util.hash_pandas_object(df[col].astype(str), index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _population_mask(catalogue: pd.DataFrame, population) -> np.ndarray:
    if population is None:
        return np.ones(len(catalogue), dtype=bool)
    if isinstance(population, str):
        try:
            mask = catalogue.eval(population)
        except Exception as err:
            raise FinetuneError(
                f"population query {population!r} failed ({err}); write it like "
                "\"truth_type == 'featured'\""
            ) from err
        return np.asarray(mask, dtype=bool)
    if callable(population):
        return np.asarray(population(catalogue), dtype=bool)
    mask = np.asarray(population, dtype=bool)
    if mask.shape != (len(catalogue),):
        raise FinetuneError(
            f"population mask has shape {mask.shape}, the catalogue {len(catalogue)} rows"
        )
    return mask


def _class_orders(y: np.ndarray, rng: np.random.Generator, among: np.ndarray | None = None) -> dict:
    """Each class's members (indices into ``y``, only those in ``among``) in a random order."""
    among = np.arange(len(y)) if among is None else among
    return {c: rng.permutation(among[y[among] == c]) for c in np.unique(y)}


def _balanced_test(
    y: np.ndarray, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (test, pool): ``per_class`` galaxies of each class in the test set."""
    orders = _class_orders(y, rng)
    test = np.sort(np.concatenate([o[:per_class] for o in orders.values()]).astype(np.int64))
    pool = np.setdiff1d(np.arange(len(y)), test)
    return test, pool


def _training_sets(
    y: np.ndarray, pool: np.ndarray, budgets: Sequence[int], repeat: int, seed: int
) -> dict[int, np.ndarray]:
    """Balanced training sets, nested across budgets within a repeat (a learning curve)."""
    orders = _class_orders(y, np.random.default_rng([seed, 7919, repeat]), pool)
    return {b: np.concatenate([o[: b // len(orders)] for o in orders.values()]) for b in budgets}


def _run_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(json_safe(obj), sort_keys=True))
    os.replace(tmp, path)


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_true, y_pred))


def _evaluate_model(model: FinetunedModel, images: np.ndarray, y: np.ndarray) -> dict:
    prob = model.predict_images(images, batch_size=256)
    pred = prob.argmax(axis=1)
    return {
        "balanced_accuracy": _balanced_accuracy(y, pred),
        "accuracy": float((pred == y).mean()),
    }


def _method_configs(
    base: FinetuneConfig, full: FinetuneConfig | None, scratch: FinetuneConfig | None
) -> dict[str, FinetuneConfig]:
    return {
        "pretrained_head": base.replace(mode="head", progress=False),
        "pretrained_full": (full or base.replace(mode="full")).replace(mode="full", progress=False),
        "scratch": (
            scratch
            or base.replace(
                mode="full",
                encoder_lr=1e-3,
                full_head_lr=1e-3,
                layer_decay=1.0,
                linear_probe_first=False,
                freeze_batchnorm=False,  # random BatchNorm statistics must be learned
            )
        ).replace(mode="full", linear_probe_first=False, progress=False),
    }


def label_budget_experiment(
    checkpoint,
    catalogue: pd.DataFrame,
    label_column: str,
    budgets: Sequence[int] = (10, 30, 100),
    repeats: int = 3,
    methods: Sequence[str] = METHODS,
    test_per_class: int = 50,
    population=None,
    config: FinetuneConfig | None = None,
    full_config: FinetuneConfig | None = None,
    scratch_config: FinetuneConfig | None = None,
    other_encoders: Mapping[str, Any] | None = None,
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
    allow_downloads: bool = False,
) -> LabelBudgetResult:
    """Balanced accuracy against the number of labels, as in the paper's ring figure.

    A balanced test set (``test_per_class`` galaxies of each class) is drawn once from the
    population and held out; for each repeat, balanced training sets of every budget are drawn
    from the rest (nested: the 30 labels of a repeat contain its 10). The budget counts *all*
    labelled galaxies, of all classes, including the validation split used for early stopping.

    Parameters
    ----------
    checkpoint : the pretrained encoder (see :func:`load_encoder`); ``"course"`` by default in
        the notebook.
    catalogue : catalogue with ``id_str``, ``file_loc`` and ``label_column``.
    label_column : the label (e.g. ``"ring"`` or ``"tag_ring"``).
    budgets : numbers of labelled galaxies (split equally between the classes).
    repeats : random repeats per budget (different training galaxies and seeds).
    methods : any of ``"pretrained_head"``, ``"pretrained_full"``, ``"scratch"`` plus the names
        of ``other_encoders``.
    test_per_class : test galaxies per class.
    population : which galaxies take part: ``None`` (all), a boolean mask, a callable
        ``catalogue -> mask`` or a query string such as ``"truth_type == 'featured'"``.
    config : base :class:`FinetuneConfig` (preprocessing, head settings; quick defaults).
    full_config, scratch_config : configs of the full-finetuning and from-scratch methods
        (defaults: ``config`` in full mode; scratch with one learning rate of 1e-3 everywhere,
        no layer decay).
    other_encoders : ``{method_name: source}`` of further encoders finetuned head-only, e.g.
        ``{"imagenet_head": "timm:convnext_atto", "zoobot_head": "hf_hub:..."}``. Sources that
        cannot be loaded (offline) are listed in ``result.skipped`` instead of failing.
    seed : seed of the test split and of the training draws.
    cache : reuse runs cached under ``course.cache_dir()/finetuning`` (keyed by encoder weights,
        data, labels, population, method configuration, budget and repeat).
    progress : progress bar over runs.
    allow_downloads : let ``other_encoders`` download weights; by default only encoders
        already on disk are used (offline, a download fails only after a minute of retries).

    Returns
    -------
    LabelBudgetResult (``.summary()``, ``.table()``, ``.metrics()``, ``.plot()``).
    """
    cfg = config or FinetuneConfig()
    other_encoders = dict(other_encoders or {})
    unknown = [m for m in methods if m not in METHODS and m not in other_encoders]
    if unknown:
        raise FinetuneError(
            f"unknown method(s) {unknown}; use {list(METHODS)} or name them in other_encoders"
        )
    mask = _population_mask(catalogue, population)
    rows = labelled_rows(catalogue[mask], label_column, task="classification")
    y, classes = _encode_classes(rows[label_column])
    n_classes = len(classes)
    if n_classes < 2:
        raise FinetuneError(f"the population has one class only in {label_column!r}")
    counts = np.bincount(y, minlength=n_classes)
    rng = np.random.default_rng(seed)
    test, pool = _balanced_test(y, test_per_class, rng)
    if counts.min() < test_per_class:
        raise FinetuneError(
            f"class {classes[int(counts.argmin())]!r} has {counts.min()} galaxies in the "
            f"population, fewer than test_per_class={test_per_class}; lower test_per_class or "
            "use a bigger catalogue"
        )
    pool_counts = np.bincount(y[pool], minlength=n_classes)
    usable = [b for b in budgets if b // n_classes <= pool_counts.min()]
    dropped = sorted(set(budgets) - set(usable))
    if not usable:
        raise FinetuneError(
            f"no budget fits: after the test set the smallest class has {pool_counts.min()} "
            f"galaxies left, budgets {list(budgets)} need {min(budgets) // n_classes} per class"
        )
    budgets = sorted(usable)

    src = load_encoder(checkpoint, cfg)
    data_key = _catalogue_key(rows, label_column)
    enc_key = src.fingerprint()
    configs = _method_configs(cfg, full_config, scratch_config)
    base_dir = _cache_root() / "finetuning" / "label_budget"

    t_img = time.perf_counter()
    images = src.read(rows, progress=progress)
    device = _device(cfg)
    feats = _cached_features(src, images, f"{enc_key}_{data_key}", device, cache, progress)
    load_s = time.perf_counter() - t_img

    other_sources: dict[str, tuple[EncoderSource, np.ndarray, str]] = {}
    skipped: dict[str, str] = {}
    for name in methods:
        if name in METHODS:
            continue
        try:
            osrc = load_encoder(
                other_encoders[name],
                cfg.replace(image_size=src.image_size, mean=None, std=None),
                offline=not allow_downloads,
            )
        except FinetuneError as err:
            skipped[name] = str(err)
            continue
        oimgs = (
            images
            if (osrc.image_size, osrc.framing) == (src.image_size, src.framing)
            else osrc.read(rows, progress=progress)
        )
        okey = osrc.fingerprint()
        ofeats = _cached_features(osrc, oimgs, f"{okey}_{data_key}", device, cache, progress)
        other_sources[name] = (osrc, ofeats, okey)

    jobs = [(m, b, r) for r in range(repeats) for b in budgets for m in methods if m not in skipped]
    records = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="Label-budget runs", unit="run")
    test_list = rows["id_str"].iloc[test].tolist()
    for repeat in range(repeats):
        sets = _training_sets(y, pool, budgets, repeat, seed)
        for budget in budgets:
            train_idx = sets[budget]
            for method in methods:
                if method in skipped:
                    continue
                mcfg = configs.get(method, cfg.replace(mode="head", progress=False))
                mcfg = mcfg.replace(seed=int(seed * 1000 + repeat))
                this_enc = other_sources[method][2] if method in other_sources else enc_key
                key = _run_key(
                    "v1",
                    method,
                    this_enc,
                    data_key,
                    mcfg.to_dict(),
                    budget,
                    repeat,
                    seed,
                    test_per_class,
                    test_list[:5],
                    len(test_list),
                    population_key(population),
                )
                path = base_dir / f"{key}.json"
                rec = None
                if cache and path.exists():
                    try:
                        rec = json.loads(path.read_text())
                        rec["cached"] = True
                    except json.JSONDecodeError:
                        rec = None
                if rec is None:
                    t0 = time.perf_counter()
                    if method in other_sources:
                        _, ofeats, _ = other_sources[method]
                        scores = _run_head(ofeats, y, train_idx, test, n_classes, mcfg)
                    elif method == "pretrained_head":
                        scores = _run_head(feats, y, train_idx, test, n_classes, mcfg)
                    elif method == "pretrained_full":
                        scores = _run_full(
                            src, feats, images, y, train_idx, test, classes, mcfg, pretrained=True
                        )
                    else:
                        scratch_src = _scratch_source(src, mcfg.seed)
                        scores = _run_full(
                            scratch_src,
                            None,
                            images,
                            y,
                            train_idx,
                            test,
                            classes,
                            mcfg,
                            pretrained=False,
                        )
                    rec = {
                        "method": method,
                        "budget": int(budget),
                        "repeat": int(repeat),
                        **scores,
                        "n_train": int(len(train_idx)),
                        "n_test": int(len(test)),
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                    if cache:
                        _atomic_json(path, rec)
                    rec["cached"] = False
                records.append(rec)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    runs = pd.DataFrame.from_records(records)
    description = {
        "label_column": label_column,
        "classes": classes,
        "population_size": int(len(rows)),
        "class_counts": {str(c): int(n) for c, n in zip(classes, counts, strict=True)},
        "test_per_class": int(test_per_class),
        "budgets": [int(b) for b in budgets],
        "budgets_dropped": [int(b) for b in dropped],
        "repeats": int(repeats),
        "encoder": src.description,
        "architecture": src.architecture,
        "image_size": src.image_size,
        "load_and_encode_seconds": round(load_s, 2),
    }
    return LabelBudgetResult(
        runs=runs, test_ids=test_list, skipped=skipped, description=description
    )


def population_key(population) -> str:
    if population is None:
        return "all"
    if isinstance(population, str):
        return population
    if callable(population):
        return getattr(population, "__name__", "callable")
    return hashlib.sha256(np.asarray(population, dtype=bool).tobytes()).hexdigest()[:16]


def _cache_root() -> Path:
    from .course import cache_dir

    return cache_dir()


def _cached_features(
    src: EncoderSource, images: np.ndarray, key: str, device, cache: bool, progress: bool = True
) -> np.ndarray:
    """The encoder's features of ``images``, kept on disk under ``key`` when ``cache``."""
    path = _cache_root() / "finetuning" / "features" / f"{key}.npy"
    if cache and path.exists():
        try:
            feats = np.load(path)
            if feats.shape[0] == len(images):
                return feats
        except (OSError, ValueError):
            pass
    src.encoder.to(device)
    feats = encode(src, images, device=device, progress=progress)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, path)
    return feats


def _scratch_source(src: EncoderSource, seed: int) -> EncoderSource:
    import timm

    torch.manual_seed(seed)
    encoder = timm.create_model(
        _arch_name(src.architecture), pretrained=False, num_classes=0, in_chans=src.channels
    )
    return EncoderSource(
        encoder,
        src.architecture,
        src.image_size,
        src.channels,
        src.mean,
        src.std,
        f"randomly initialised {src.architecture}",
        src.greyscale,
        src.framing,
    )


def _run_head(feats, y, train_idx, test, n_classes, cfg) -> dict:
    head, info = fit_head(feats[train_idx], y[train_idx], n_classes, cfg)
    with torch.no_grad():
        logits = head(torch.as_tensor(feats[test], dtype=torch.float32))
    pred = logits.argmax(1).numpy()
    return {
        "balanced_accuracy": _balanced_accuracy(y[test], pred),
        "accuracy": float((pred == y[test]).mean()),
        "steps": info.get("steps"),
    }


def _run_full(src, feats, images, y, train_idx, test, classes, cfg, pretrained) -> dict:
    n_classes = len(classes)
    rng = np.random.default_rng(cfg.seed)
    ytr = y[train_idx]
    tr, va = _stratified_split(ytr, cfg.val_fraction, rng, True)
    src = copy.copy(src)
    src.encoder = copy.deepcopy(src.encoder)
    if pretrained and cfg.linear_probe_first:
        f = feats[train_idx]
        head = _linear_probe(f[tr], ytr[tr], f[va], ytr[va], n_classes, cfg)
    else:
        torch.manual_seed(cfg.seed)
        head = Head(src.representation_dim, n_classes, cfg.feature_clip)
    model = _new_model(
        src, n_classes, {"task": "classification", "classes": classes, "label_column": "?"}, head
    )
    imgs = images[train_idx]
    info = train_full(model, imgs[tr], ytr[tr], imgs[va], ytr[va], cfg)
    scores = _evaluate_model(model, images[test], y[test])
    scores["epochs"] = info["epochs"]
    scores["best_epoch"] = info["best_epoch"]
    return scores


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
METHOD_STYLE = {
    "pretrained_head": ("Pretrained on all questions, new head", "tab:blue", "o"),
    "pretrained_full": ("Pretrained on all questions, finetuned", "tab:green", "s"),
    "scratch": ("Same architecture from scratch", "tab:red", "^"),
}


def plot_label_budget(
    result: LabelBudgetResult, ax=None, paper: bool = True, title: str | None = None
):
    """Balanced accuracy against the number of labelled galaxies (log axis), mean +- std.

    Parameters
    ----------
    result : :class:`LabelBudgetResult`.
    ax : matplotlib Axes to draw on (default: a new figure).
    paper : also draw the paper's ring results (real DECaLS, x = 2 x unique training rings)
        as faint dashed lines, for orientation only: different data, different test set.
    title : axes title.

    Returns
    -------
    matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
    else:
        fig = ax.figure
    summary = result.summary()
    extra_colours = iter(["tab:purple", "tab:orange", "tab:brown", "tab:olive"])
    for method, part in summary.groupby("method", sort=False):
        label, colour, marker = METHOD_STYLE.get(method, (method, next(extra_colours, "k"), "D"))
        part = part.sort_values("budget")
        ax.errorbar(
            part["budget"],
            part["mean"],
            yerr=part["std"].fillna(0),
            label=label,
            color=colour,
            marker=marker,
            capsize=3,
            lw=1.8,
        )
    if paper:
        styles = {
            "pretrained on all GZ questions": "tab:blue",
            "ImageNet pretrained": "tab:purple",
            "from scratch": "tab:red",
        }
        for name, points in PAPER_RING_ACCURACY.items():
            xs = [2 * k for k in points if 2 * k <= 1000]
            ys = [points[k] for k in points if 2 * k <= 1000]
            ax.plot(
                xs, ys, ls="--", lw=1, alpha=0.5, color=styles[name], label=f"paper (real): {name}"
            )
    ax.axhline(0.5, color="grey", lw=1, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("labelled galaxies (half of each class)")
    ax.set_ylabel("balanced accuracy (balanced test set)")
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")  # the curves live below 0.85 and right of 10
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def ranked_grid(
    catalogue: pd.DataFrame,
    predictions: pd.DataFrame,
    score_column: str,
    k: int = 24,
    truth_column: str | None = None,
    exclude_ids: Sequence[str] = (),
    ncols: int = 8,
    suptitle: str | None = None,
):
    """The ``k`` galaxies with the highest score as an image grid.

    Parameters
    ----------
    catalogue : catalogue with ``id_str`` and ``file_loc``.
    predictions : output of :meth:`FinetunedModel.predict` (``id_str`` + ``score_column``).
    score_column : e.g. ``"probability_1"`` or ``"probability_True"``.
    k : how many to show.
    truth_column : optional boolean/0-1 column of the catalogue: framed where true, and the
        fraction that are true is put in the title.
    exclude_ids : ids not to show (e.g. the galaxies the model was trained on).
    ncols : images per row.
    suptitle : figure title (default says what is shown).

    Returns
    -------
    (figure, top) where top is the DataFrame of the shown galaxies, best first.
    """
    from .plotting import galaxy_grid

    if score_column not in predictions.columns:
        raise FinetuneError(
            f"predictions have no column {score_column!r}; columns: {list(predictions.columns)}"
        )
    table = predictions[~predictions["id_str"].isin(set(map(str, exclude_ids)))]
    cat = catalogue.assign(id_str=catalogue["id_str"].astype(str))
    top = table.nlargest(k, score_column).merge(cat, on="id_str", how="left", suffixes=("", "_cat"))
    titles = [f"p={p:.2f}" for p in top[score_column]]
    highlight = None
    if truth_column is not None:
        highlight = top[truth_column].fillna(0).astype(bool).tolist()
        frac = float(np.mean(highlight)) if highlight else 0.0
        suptitle = suptitle or (
            f"Top {k} by {score_column} (framed: {truth_column}; {frac:.0%} of them)"
        )
    fig = galaxy_grid(
        top["file_loc"].tolist(),
        titles=titles,
        ncols=ncols,
        highlight=highlight,
        suptitle=suptitle or f"Top {k} by {score_column}",
    )
    return fig, top

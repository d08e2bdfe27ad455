"""A finetuned model (``finetuning.finetune`` makes one): configuration, encoder and head,
file format and full training."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import core, models

__all__ = ["FinetuneError", "FinetuneConfig", "EncoderSource", "Head", "FinetunedModel"]
__all__ += ["train_full"]

FORMAT = "galaxy_helpers.FinetunedModel/1"


class FinetuneError(ValueError):
    """Bad labels, a catalogue that does not fit, or a checkpoint that is not what was asked."""


@dataclass
class FinetuneConfig:
    """How to finetune. Defaults are the quick CPU profile.

    Parameters
    ----------
    mode : ``"head"`` (frozen encoder, new linear head) or ``"full"`` (train everything).
    task : ``"classification"`` or ``"regression"`` (one number).
    architecture : expected encoder architecture; another is refused (``None``: any).
    pretrained : timm names only: ImageNet weights (needs the network once), else random.
    image_size, channels, mean, std : preprocessing; ``None`` takes the checkpoint's.
    val_fraction : labelled share held out (stratified) for early stopping.
    balance : ``"weights"`` (inverse class frequency), ``"sampler"`` (full mode) or ``"none"``.
    head_solver : ``"lbfgs"`` (scikit-learn, to convergence) or ``"adam"`` (early stopping).
    head_l2 : L2 penalty (``C = 1 / head_l2``); ``None``: cross-validated on ``head_l2_grid``.
    feature_clip : clip standardised features to +- this (rare features blow up otherwise).
    head_lr, head_max_steps, head_patience, refit : the Adam head.
    encoder_lr, layer_decay : full mode: last block's rate, times ``layer_decay`` per block down.
    full_head_lr, weight_decay, max_epochs, patience, batch_size, min_steps, augment : full mode.
    linear_probe_first : full mode starts from the head-only fit.
    freeze_batchnorm : keep BatchNorm statistics (few labels would corrupt them).
    seed, device, progress : random seed; ``None`` picks ``core.device()``; progress bars.
    amp : full mode's mixed precision, as ``TrainConfig.amp`` (``"auto"``: bfloat16 on GPUs and
        on CPUs with native bfloat16, float32 elsewhere).
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
    amp: Any = "auto"

    def __post_init__(self):
        choices = {"mode": ("head", "full"), "task": ("classification", "regression")}
        choices.update(balance=("weights", "sampler", "none"), head_solver=("lbfgs", "adam"))
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise FinetuneError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not (0.0 <= self.val_fraction < 1.0 and 0.0 < self.layer_decay <= 1.0):
            raise FinetuneError(
                f"val_fraction must be in [0, 1) and layer_decay in (0, 1], got "
                f"{self.val_fraction} and {self.layer_decay}"
            )

    def replace(self, **changes) -> FinetuneConfig:
        """A copy with some fields changed (unknown names are refused)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise FinetuneError(f"FinetuneConfig has no field(s) {unknown}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return core.json_safe(self)


@dataclass
class EncoderSource:
    """A pretrained model (``.encoder``) and its metadata, as ``checkpoints.load_model`` gives."""

    model: nn.Module
    metadata: dict

    def __getattr__(self, name):  # architecture, image_size, channels, mean, std, framing...
        keys = ("architecture", "image_size", "channels", "mean", "std", "framing", "description")
        if name == "greyscale":
            return self.metadata.get("greyscale") or "mean"
        if name not in keys:
            raise AttributeError(name)
        return self.metadata.get(name)

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    @property
    def representation_dim(self) -> int:
        return models.pooled_dim(self.encoder)

    def read(self, catalogue: pd.DataFrame, progress: bool = False) -> np.ndarray:
        """uint8 images of ``file_loc`` at this encoder's size and framing (times ``crop``)."""
        from .images import catalogue_crops, model_resample
        from .representations import read_pixels

        crop, resample = catalogue_crops(catalogue, self.metadata), model_resample(self.metadata)
        # through the pixel caches: rows decoded before (e.g. for their representations) are
        # gathered, not decoded again
        return read_pixels(catalogue, int(self.image_size), crop, resample, progress=progress)

    def features(self, catalogue=None, images=None, progress: bool = False, ids=None):
        """Features ``(N, D)`` of uint8 images, or of a catalogue's cached table (rows ``ids``)."""
        from .representations import embed_images, extract_representations

        if images is not None:
            return embed_images(images, self.model, self.metadata, batch_size=256)
        table = extract_representations((self.model, self.metadata), catalogue, progress=progress)
        if ids is not None:
            table = table.set_index(table["id_str"].astype(str)).loc[ids]
        return table.filter(like="feat_").to_numpy()


class Head(nn.Module):
    """Standardise features (clipped to +- ``clip``, kept in metadata), then one linear layer."""

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
    """A pretrained encoder with a new head for one label column (``finetuning.finetune``);
    ``metadata`` holds preprocessing, task, label_column, classes, config and metrics."""

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

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's pooled features (so a finetuned model is a representation model)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` (classification) or values ``(B,)`` (regression)."""
        return self._outputs(self.encoder(x))

    def _outputs(self, z: torch.Tensor) -> torch.Tensor:
        out = self.head(z)
        if self.task == "regression":
            return out[:, 0] * self.target_std + self.target_mean
        return out

    def _preprocess(self, batch_uint8: np.ndarray, device) -> torch.Tensor:
        from .images import to_tensor

        m, x = self.metadata, torch.as_tensor(np.asarray(batch_uint8)).to(device)
        grey = m.get("greyscale") or "mean"
        # channels-last: train_full's indexed and augmented batches keep it (tested)
        return to_tensor(x, int(m["channels"]), m.get("mean"), m.get("std"), grey, True)

    @torch.no_grad()
    def predict_images(
        self, images: np.ndarray, batch_size: int = 256, progress: bool = False, amp="auto"
    ) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` or values ``(N,)`` for uint8 images; ``amp``
        as ``TrainConfig.amp`` (the encoder in bfloat16 where native, the head in float32)."""
        from .training import amp_settings

        classify = self.task == "classification"
        was_training = self.training
        device = next(self.parameters(), torch.empty(0)).device
        amp_on, amp_dtype = amp_settings(amp, device)
        self.eval()
        outs = [np.zeros((0, len(self.classes)) if classify else (0,), np.float32)]
        quiet = not progress or len(images) <= 4 * batch_size
        try:
            for s in tqdm(range(0, len(images), batch_size), "Predicting", disable=quiet):
                x = self._preprocess(images[s : s + batch_size], device)
                with torch.autocast(device.type, amp_dtype, enabled=amp_on):
                    z = self.encoder(x)
                out = self._outputs(z.float())
                outs.append((torch.softmax(out, dim=1) if classify else out).float().cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(outs)

    def predict(
        self, catalogue: pd.DataFrame, batch_size: int = 256, progress: bool = True
    ) -> pd.DataFrame:
        """``id_str``, ``probability_<class>`` per class and ``prediction`` for ``file_loc``."""
        require_columns(catalogue)
        imgs = EncoderSource(self, self.metadata).read(catalogue, progress=progress)
        out = self.predict_images(imgs, batch_size=batch_size, progress=progress)
        table = pd.DataFrame({"id_str": catalogue["id_str"].astype(str).to_numpy()})
        if self.task == "regression":
            table["prediction"] = out
            return table
        for i, c in enumerate(self.classes):
            table[f"probability_{c}"] = out[:, i]
        table["prediction"] = [self.classes[i] for i in out.argmax(axis=1)]
        return table

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.safetensors`` and ``<path>.json`` together; returns the weights path."""
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        meta = {**self.metadata, "format": FORMAT}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        models.write_checkpoint_files(state, meta, path, FinetuneError)
        return models.checkpoint_paths(path)[0]

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> FinetunedModel:
        """Rebuild a saved model (timm builds the architecture; nothing is unpickled)."""
        import timm

        hint = "a finetuned model is a .safetensors weights file plus a .json metadata file with "
        hint += "the same name (FinetunedModel.save writes both)"
        weights, meta_path, meta = models.read_checkpoint_metadata(path, FinetuneError, hint)
        if meta.get("format") != FORMAT:
            raise FinetuneError(
                f"{meta_path}: format {meta.get('format')!r} is not a finetuned model "
                f"({FORMAT!r}); load pretrained checkpoints with models.load_checkpoint"
            )
        arch = meta["architecture"]
        try:
            encoder = timm.create_model(arch, num_classes=0, in_chans=int(meta["channels"]))
        except Exception as err:
            raise FinetuneError(
                f"{meta_path}: cannot build architecture {arch!r} with timm ({err})"
            ) from err
        n_out = len(meta["classes"]) if meta["task"] == "classification" else 1
        clip = meta.get("config", {}).get("feature_clip")  # absent in older files: no clipping
        model = cls(encoder, Head(models.pooled_dim(encoder), n_out, clip), meta)
        hint = "The checkpoint is of another architecture, or the JSON belongs to another run."
        models.load_weights(
            model, weights, FinetuneError, f"a {arch!r} with {n_out} output(s)", hint
        )
        return model.eval() if device is None else model.eval().to(device)


def require_columns(catalogue: pd.DataFrame) -> None:
    """Refuse a catalogue without ``id_str`` and ``file_loc``."""
    for col in ("id_str", "file_loc"):
        if col not in catalogue.columns:
            raise FinetuneError(
                f"the catalogue has no {col!r} column (columns: {list(catalogue.columns)[:10]}...): "
                "a catalogue needs id_str and file_loc (see DEVELOPERS.md)"
            )


def is_finetuned(path) -> bool:
    """Whether ``path`` names a saved :class:`FinetunedModel` (its JSON says so)."""
    meta_path = models.checkpoint_paths(path)[1]
    if not meta_path.is_file():
        return False
    meta = core.read_json(meta_path, what="checkpoint metadata")
    return str(meta.get("format", "")).startswith("galaxy_helpers.FinetunedModel")


def _class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """``class_weight="balanced"`` weights (0 for a class absent from ``y``)."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    w = np.zeros(n_classes)
    w[present] = compute_class_weight("balanced", classes=present, y=y)
    return torch.tensor(w, dtype=torch.float32)


def _head_loss(task, logits, y, weights):
    if task == "classification":
        return nn.functional.cross_entropy(logits, y, weight=weights)
    return nn.functional.mse_loss(logits[:, 0], y)


class _Best:
    """Early stopping: the lowest loss so far, its step and the weights then."""

    def __init__(self, module: nn.Module, loss: float = math.inf):
        self.loss, self.step, self.since = loss, 0, 0
        self.state = self._copy(module)

    @staticmethod
    def _copy(module: nn.Module) -> dict:  # the tensors only: deepcopy's bookkeeping is slower
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def update(self, loss: float, step: int, module: nn.Module) -> int:
        if loss < self.loss - 1e-6:
            self.loss, self.step, self.since = loss, step, 0
            self.state = self._copy(module)
        else:
            self.since += 1
        return self.since


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns, per galaxy."""
    b = x.shape[0]
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    k = torch.randint(0, 4, (b,), generator=generator)
    out = x.clone()
    for r in (1, 2, 3):
        sel = (k == r).to(x.device)
        out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
    return out


def _param_groups(model: FinetunedModel, cfg: FinetuneConfig) -> list[dict]:
    enc = model.encoder
    if cfg.layer_decay < 1.0 and hasattr(enc, "group_matcher"):
        from timm.optim import param_groups_layer_decay

        wd, decay = cfg.weight_decay, cfg.layer_decay
        groups = param_groups_layer_decay(enc, weight_decay=wd, layer_decay=decay)
        groups = [{**g, "lr": cfg.encoder_lr * g.pop("lr_scale", 1.0)} for g in groups]
    else:
        params = [p for p in enc.parameters() if p.requires_grad]
        groups = [{"params": params, "lr": cfg.encoder_lr, "weight_decay": cfg.weight_decay}]
    head = {"params": list(model.head.parameters()), "lr": cfg.full_head_lr, "weight_decay": 0.0}
    return [*groups, head]


def train_full(
    model: FinetunedModel,
    images: np.ndarray,
    y: np.ndarray,
    images_val: np.ndarray | None,
    y_val: np.ndarray | None,
    cfg: FinetuneConfig,
    ids: Sequence[str] | None = None,
) -> dict:
    """Train encoder and head together (in place), early stopping on the validation loss.

    Parameters
    ----------
    images, y : uint8 ``(N, H, W, 3)`` and class indices (regression: standardised numbers).
    images_val, y_val : the validation set (``None``: run ``max_epochs``).
    ids : the galaxies' names, for the error when a batch's loss turns NaN.

    Returns
    -------
    dict with ``epochs``, ``best_epoch``, ``val_loss`` and ``history``.
    """
    from .training import amp_settings, make_adamw

    device = core.device(cfg.device)
    model.to(device)
    amp_on, amp_dtype = amp_settings(cfg.amp, device)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    classification = cfg.task == "classification"
    n_out = len(model.classes) if classification else 1
    target = torch.long if classification else torch.float32
    x_train = model._preprocess(images, device)
    y_train = torch.as_tensor(y, dtype=target).to(device)
    has_val = images_val is not None and len(images_val) > 0
    if has_val:
        x_val = model._preprocess(images_val, device)
        y_v = torch.as_tensor(y_val, dtype=target).to(device)
    weighted = classification and cfg.balance == "weights"
    weights = _class_weights(y, n_out).to(device) if weighted else None
    w_val = _class_weights(y_val, n_out).to(device) if has_val and weighted else None
    p = None
    if classification and cfg.balance == "sampler":
        p = 1.0 / np.bincount(y, minlength=n_out).astype(float)[y]
        p = p / p.sum()
    opt = make_adamw(_param_groups(model, cfg))
    n = len(x_train)
    bs = min(cfg.batch_size, n)
    steps = max(cfg.min_steps, math.ceil(n / bs))

    def encode(x):  # the encoder in bfloat16 where native; the head and loss in float32
        with torch.autocast(torch.device(device).type, amp_dtype, enabled=amp_on):
            return model.encoder(x).float()

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(_head_loss(cfg.task, model.head(encode(x_val)), y_v, w_val))

    if has_val:  # the starting point (e.g. the linear probe) is a candidate too
        best = _Best(model, val_loss())
    history = []
    epochs = range(1, cfg.max_epochs + 1)
    desc = f"Finetuning ({n} galaxies)"
    for epoch in tqdm(epochs, desc, unit="epoch", leave=False, disable=not cfg.progress):
        model.train()
        if cfg.freeze_batchnorm:
            for m in model.encoder.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
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
            out = model.head(encode(xb))
            loss = _head_loss(cfg.task, out, y_train[torch.as_tensor(idx)], weights)
            if not torch.isfinite(loss):
                names = [str(ids[i]) for i in idx[:8]] if ids is not None else idx[:8].tolist()
                raise FinetuneError(
                    f"finetuning turned NaN at epoch {epoch}, step {s + 1}: the loss of the batch "
                    f"holding galaxies {names} is {float(loss.detach())}. Nothing was saved. "
                    "Check those galaxies' labels and images, or lower encoder_lr / head_lr."
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append({"epoch": epoch, "train_loss": total / steps})
        if has_val:
            history[-1]["val_loss"] = vloss = val_loss()
            if best.update(vloss, epoch, model) >= cfg.patience:
                break
    if has_val:
        model.load_state_dict(best.state)
    model.eval()
    best_epoch, loss = (int(best.step), float(best.loss)) if has_val else (len(history), None)
    return {"epochs": len(history), "best_epoch": best_epoch, "val_loss": loss, "history": history}

"""A finetuned model and its file format: the encoder to start from, the head, save and load.

``finetuning`` makes these models; this module is what reads and writes them, so a saved
model can be predicted with, or finetuned further, without the finetuning machinery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import core, models

__all__ = ["FORMAT", "FinetuneError", "EncoderSource", "Head", "FinetunedModel", "is_finetuned"]

FORMAT = "galaxy_helpers.FinetunedModel/1"


class FinetuneError(ValueError):
    """Bad labels, a catalogue that does not fit, or a checkpoint that is not what was asked."""


@dataclass
class EncoderSource:
    """A pretrained model (``.encoder``, ``.encode``) and its metadata (preprocessing,
    ``description``), as ``checkpoints.load_model`` returns them."""

    model: nn.Module
    metadata: dict

    def __getattr__(self, name):  # architecture, image_size, channels, mean, std, framing...
        keys = ("architecture", "image_size", "channels", "mean", "std", "framing", "description")
        if name == "greyscale":
            return self.metadata.get("greyscale") or "mean"
        if name not in keys or name in ("model", "metadata"):
            raise AttributeError(name)
        return self.metadata.get(name)

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    @property
    def representation_dim(self) -> int:
        return int(self.encoder.num_features)

    def read(self, catalogue: pd.DataFrame, progress: bool = False) -> np.ndarray:
        """uint8 images of ``file_loc`` at this encoder's size and framing (times ``crop``)."""
        from .images import catalogue_crops, load_images, model_resample

        return load_images(
            catalogue["file_loc"].tolist(),
            int(self.image_size),
            progress=progress,
            crop=catalogue_crops(catalogue, self.metadata),
            resample=model_resample(self.metadata),
        )

    def features(self, catalogue=None, images=None, progress: bool = False, ids=None):
        """The representation ``(N, D)`` of uint8 images, or of a catalogue from its cached
        table (only the galaxies ``ids``, in that order, when given)."""
        from .representations import embed_images, extract_representations

        if images is not None:
            return embed_images(images, self.model, self.metadata, batch_size=256)
        table = extract_representations((self.model, self.metadata), catalogue, progress=progress)
        if ids is not None:
            table = table.set_index(table["id_str"].astype(str)).loc[ids]
        return table.filter(like="feat_").to_numpy()


class Head(nn.Module):
    """Standardise features (clipped to +- ``clip``), then one linear layer. ``clip`` is kept
    in the model's metadata, not in its weights."""

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

    Make one with ``finetuning.finetune``, read one back with :meth:`load`. ``metadata`` holds
    the architecture, preprocessing, task, label_column, classes, mode, config,
    encoder_source and metrics.
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

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's pooled features (so a finetuned model is a representation model)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` (classification) or values ``(B,)`` (regression)."""
        out = self.head(self.encoder(x))
        if self.task == "regression":
            return out[:, 0] * self.target_std + self.target_mean
        return out

    def _preprocess(self, batch_uint8: np.ndarray, device) -> torch.Tensor:
        from .images import to_tensor

        m = self.metadata
        return to_tensor(
            torch.as_tensor(np.asarray(batch_uint8)).to(device),
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
        classify = self.task == "classification"
        was_training = self.training
        device = next(self.parameters(), torch.empty(0)).device
        self.eval()
        outs = [np.zeros((0, len(self.classes)) if classify else (0,), np.float32)]
        quiet = not progress or len(images) <= 4 * batch_size
        try:
            for s in tqdm(range(0, len(images), batch_size), "Predicting", disable=quiet):
                out = self(self._preprocess(images[s : s + batch_size], device))
                outs.append((torch.softmax(out, dim=1) if classify else out).float().cpu().numpy())
        finally:
            self.train(was_training)
        return np.concatenate(outs)

    def predict(
        self, catalogue: pd.DataFrame, batch_size: int = 256, progress: bool = True
    ) -> pd.DataFrame:
        """A table of ``id_str``, ``probability_<class>`` per class and ``prediction`` (the
        most probable class; regression: the value) for a catalogue's ``file_loc``."""
        for col in ("id_str", "file_loc"):
            if col not in catalogue.columns:
                raise FinetuneError(f"the catalogue to predict has no {col!r} column")
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
        models.write_checkpoint_files(
            state, {**self.metadata, "format": FORMAT}, path, FinetuneError
        )
        return models.checkpoint_paths(path)[0]

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> FinetunedModel:
        """Rebuild a finetuned model from ``<path>.safetensors`` + ``<path>.json``.

        Never unpickles: timm rebuilds the architecture by name, safetensors reads the weights.
        Raises :class:`FinetuneError` when a file is missing, the JSON is not a finetuned model,
        or the weights do not fit the architecture it names.
        """
        import timm

        weights, meta_path, meta = models.read_checkpoint_metadata(
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
        models.load_weights(
            model,
            weights,
            FinetuneError,
            f"a {arch!r} with {n_out} output(s)",
            "The checkpoint is of another architecture, or the JSON belongs to another run.",
        )
        model.eval()
        return model.to(device) if device is not None else model


def is_finetuned(path) -> bool:
    """Whether ``path`` names a saved :class:`FinetunedModel` (its JSON says so)."""
    meta_path = models.checkpoint_paths(path)[1]
    if not meta_path.is_file():
        return False
    meta = core.read_json(meta_path, what="checkpoint metadata")
    return str(meta.get("format", "")).startswith("galaxy_helpers.FinetunedModel")

"""A CNN that answers every Galaxy Zoo question at once, and its checkpoints.

``GalaxyModel`` = any timm encoder + a Dirichlet head (one concentration per answer in
(1, 101), Walmsley et al. 2022); the pooled encoder output is the representation notebooks
03 to 06 reuse. A checkpoint is ``<path>.safetensors`` (weights, never unpickled) plus
``<path>.json`` (all that rebuilds and feeds the model); ``checkpoints.load_model`` loads by name.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import math
import os
import warnings
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .core import json_safe, read_json
from .schema import DECALS_DR5, SCHEMAS, Question, Schema, get_schema

__all__ = [
    "DEFAULT_ARCHITECTURE",
    "CheckpointError",
    "DirichletHead",
    "GalaxyModel",
    "pooled_dim",
    "predict_fractions",
    "schema_to_dict",
    "schema_from_dict",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_paths",
    "predict_concentrations",
    "encode_images",
]

DEFAULT_ARCHITECTURE = "convnext_atto"


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, or does not match what the caller asked for."""


class DirichletHead(nn.Module):
    """Linear -> one concentration per answer, ``sigmoid(x) * 100 + 1`` as in Zoobot."""

    def __init__(self, in_features: int, n_answers: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, n_answers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(self.dropout(x))) * 100.0 + 1.0


def pooled_dim(encoder: nn.Module) -> int:
    """Width of what a timm encoder built with ``num_classes=0`` returns: ``head_hidden_size``
    where the network has a pre-logits layer after pooling (MobileNetV3, LCNet, GhostNet,
    MobileNetV4: 576 -> 1024 channels for ``mobilenetv3_small_100``), else ``num_features``."""
    return int(getattr(encoder, "head_hidden_size", None) or encoder.num_features)


def _check_architecture(architecture: str) -> None:
    import timm

    if timm.is_model(architecture) or architecture.startswith("hf_hub:"):
        return
    close = difflib.get_close_matches(architecture, timm.list_models(), n=5)
    raise ValueError(
        f"timm has no architecture {architecture!r}."
        + (f" Did you mean {close}?" if close else "")
        + " See timm.list_models('convnext*') for names."
    )


class GalaxyModel(nn.Module):
    """timm encoder + Dirichlet head.

    Parameters
    ----------
    architecture : any timm model name (``"convnext_atto"``, ``"resnet18"``, ``"hf_hub:..."``).
    schema : decision tree the head answers; ``None``: encoder only (forward = representation).
    channels : 3 colour, 1 greyscale (colours averaged, as in the paper).
    pretrained : load timm's pretrained weights (needs the network).
    dropout : dropout before the head.

    Examples
    --------
    >>> model = GalaxyModel("convnext_atto")
    >>> model(torch.zeros(2, 3, 64, 64)).shape
    torch.Size([2, 34])
    """

    def __init__(
        self,
        architecture: str = DEFAULT_ARCHITECTURE,
        schema: Schema | str | None = DECALS_DR5,
        channels: int = 3,
        pretrained: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        import timm

        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (greyscale) or 3 (colour), got {channels}")
        _check_architecture(architecture)
        self.architecture = architecture
        self.channels = int(channels)
        self.dropout = float(dropout)
        self.schema = get_schema(schema) if schema is not None else None
        self.encoder = timm.create_model(
            architecture, pretrained=pretrained, num_classes=0, in_chans=self.channels
        )
        self.representation_dim = pooled_dim(self.encoder)
        self.head = (
            DirichletHead(self.representation_dim, self.schema.n_answers, self.dropout)
            if self.schema is not None
            else None
        )
        # Filled by training / load_checkpoint: normalisation, image size, data, metrics.
        self.metadata: dict[str, Any] = {}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled representation ``(B, representation_dim)`` (the layer before the head)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dirichlet concentrations ``(B, n_answers)``; the representation if there is no head."""
        z = self.encode(x)
        return self.head(z) if self.head is not None else z


# --- predictions --------------------------------------------------------------------------
def predict_fractions(concentrations, schema: Schema | str = DECALS_DR5):
    """Expected vote fractions ``a_i / A`` and their Dirichlet standard deviations
    ``sqrt(a_i (A - a_i) / (A^2 (A + 1)))`` per question (``A = sum a``).

    Parameters
    ----------
    concentrations : tensor or array (N, n_answers)
    schema : the decision tree the model was trained on.

    Returns
    -------
    (mean, std) : two float arrays ``(N, n_answers)``.
    """
    schema = get_schema(schema)
    if isinstance(concentrations, torch.Tensor):
        concentrations = concentrations.detach().float().cpu().numpy()
    a = np.asarray(concentrations, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != schema.n_answers:
        raise ValueError(
            f"concentrations must be (N, {schema.n_answers}) for schema {schema.name!r}, "
            f"got {a.shape}"
        )
    mean, std = np.empty_like(a), np.empty_like(a)
    for start, stop in schema.answer_slices:
        q = a[:, start:stop]
        total = q.sum(axis=1, keepdims=True)
        mean[:, start:stop] = q / total
        std[:, start:stop] = np.sqrt(q * (total - q) / (total**2 * (total + 1)))
    return mean, std


@torch.no_grad()
def _run_in_batches(model, images, fn, batch_size, device, progress, desc, prep):
    """``fn`` on uint8 images in batches, in eval mode, preprocessed by ``prep``; numpy out."""
    from .images import to_tensor

    channels, mean, std, greyscale = prep
    if device is None:
        device = next(model.parameters(), torch.zeros(0)).device
    was_training = model.training
    model.eval()
    outputs = []
    starts = range(0, len(images), batch_size)
    if progress and len(images) > 4 * batch_size:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    try:
        for s in starts:
            batch = torch.as_tensor(np.asarray(images[s : s + batch_size])).to(device)
            x = to_tensor(batch, channels, mean, std, greyscale, channels_last=True)
            outputs.append(fn(x).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def _preprocessing(model, channels=None, mean=None, std=None, greyscale=None):
    """``(channels, mean, std, greyscale)``: the arguments given, else the model's metadata."""
    meta = getattr(model, "metadata", {}) or {}
    channels = channels if channels is not None else meta.get("channels", model.channels)
    mean = mean if mean is not None else meta.get("mean")
    std = std if std is not None else meta.get("std")
    return channels, mean, std, greyscale or meta.get("greyscale") or "mean"


def predict_concentrations(
    model: GalaxyModel,
    images: np.ndarray,
    batch_size: int = 64,
    device=None,
    channels: int | None = None,
    mean=None,
    std=None,
    progress: bool = True,
    tta: bool = False,
    greyscale: str | None = None,
) -> np.ndarray:
    """Dirichlet concentrations for uint8 images.

    Parameters
    ----------
    model : GalaxyModel with a head.
    images : uint8 ``(N, H, W, 3)``.
    batch_size, device, progress : how to run it (default device: the model's).
    channels, mean, std, greyscale : ``images.to_tensor`` arguments (default: the metadata).
    tta : average over the 8 flips and quarter turns (8x the time; square images only).

    Returns
    -------
    ndarray ``(N, n_answers)``
    """
    if model.head is None:
        raise ValueError("this model has no head (schema=None): use encode_images instead")
    prep = _preprocessing(model, channels, mean, std, greyscale)
    fn = model
    if tta:
        if np.shape(images)[1:2] != np.shape(images)[2:3]:
            raise ValueError(f"tta needs square images, got {np.shape(images)[1:3]}")
        fn = functools.partial(_mean_over_orientations, model)
    return _run_in_batches(model, images, fn, batch_size, device, progress, "Predicting", prep)


def _mean_over_orientations(fn, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``fn`` over the 8 flips and quarter turns of ``x`` ``(B, C, H, W)``."""
    views = (torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4))
    nhwc = torch.channels_last
    return torch.stack([fn(v.contiguous(memory_format=nhwc)).float() for v in views]).mean(0)


def encode_images(model: GalaxyModel, images, batch_size=64, device=None, progress=True, **prep):
    """Representations for uint8 images.

    Parameters
    ----------
    model, images, batch_size, device, progress : as :func:`predict_concentrations`.
    **prep : ``channels``, ``mean``, ``std``, ``greyscale`` (default: the model's metadata).

    Returns
    -------
    ndarray ``(N, representation_dim)``.
    """
    prep = _preprocessing(model, **prep)
    return _run_in_batches(
        model, images, model.encode, batch_size, device, progress, "Encoding", prep
    )


# --- checkpoints --------------------------------------------------------------------------
def schema_to_dict(schema: Schema) -> dict:
    """A JSON-ready description of a schema (so custom trees survive a checkpoint)."""
    return {
        "name": schema.name,
        "suffix": schema.suffix,
        "questions": [
            {"name": q.name, "answers": list(q.answers), "requires": [list(r) for r in q.requires]}
            for q in schema.questions
        ],
    }


def schema_from_dict(d: dict) -> Schema:
    """Inverse of :func:`schema_to_dict`; returns the built-in instance when it matches."""
    questions = tuple(
        Question(q["name"], tuple(q["answers"]), tuple(tuple(r) for r in q["requires"]))
        for q in d["questions"]
    )
    schema = Schema(d["name"], questions, suffix=d.get("suffix", ""))
    builtin = SCHEMAS.get(d["name"])
    if builtin is not None and builtin.answer_columns == schema.answer_columns:
        return builtin
    return schema


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a checkpoint given with or without a suffix."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_checkpoint(
    model: GalaxyModel,
    path: str | os.PathLike,
    metadata: dict | None = None,
    half: bool = False,
) -> Path:
    """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (metadata), atomically.

    Parameters
    ----------
    model : GalaxyModel (a DistributedDataParallel wrapper is unwrapped).
    path : destination without suffix (a ``.safetensors`` suffix is accepted).
    metadata : extra entries (image_size, mean, std, data, metrics...) beside the model's own.
    half : store weights as float16 (loaded back as float32).

    Returns
    -------
    Path of the weights file.
    """
    model = getattr(model, "module", model)
    weights_path, meta_path = checkpoint_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(getattr(model, "metadata", {}) or {})
    meta.update(metadata or {})
    meta.update(
        {
            "format": "galaxy_helpers.GalaxyModel/1",
            "architecture": model.architecture,
            "channels": model.channels,
            "dropout": model.dropout,
            "representation_dim": model.representation_dim,
            "schema": model.schema.name if model.schema is not None else None,
            "schema_definition": schema_to_dict(model.schema) if model.schema else None,
            "answer_columns": model.schema.answer_columns if model.schema else [],
            "weights_dtype": "float16" if half else "float32",
        }
    )
    for key in ("image_size", "mean", "std"):
        meta.setdefault(key, None)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    if problems := check_metadata(meta):
        raise CheckpointError(
            f"{meta_path}: not saved, the metadata is wrong: " + "; ".join(problems) + "."
        )
    model.metadata = write_checkpoint_files(state, meta, path, CheckpointError)
    return weights_path


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_non_finite(state: dict, where, error: type[Exception], doing: str) -> None:
    """Raise ``error`` when any floating-point tensor of ``state`` holds NaN or inf."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise error(
            f"{where}: {len(bad)} weight tensor(s) hold NaN or inf (first {bad[:3]}), so the model "
            f"is not {doing}: its training diverged (check the labels and learning rate) or the "
            "file is damaged. Retrain, or use an earlier checkpoint."
        )


def write_checkpoint_files(
    state: dict, meta: dict, path, error: type[Exception] = CheckpointError
) -> dict:
    """Write weights and JSON so that they are replaced together; return the metadata written.

    Both go to synced ``.next`` files, the JSON holding the weights' sha256, then are renamed
    weights first: :func:`read_checkpoint_metadata` completes a crash between the two renames.
    """
    from safetensors.torch import save_file

    weights_path, meta_path = checkpoint_paths(path)
    refuse_non_finite(state, weights_path, error, "saved")
    next_w = weights_path.with_name(weights_path.name + ".next")
    next_m = meta_path.with_name(meta_path.name + ".next")
    save_file(state, str(next_w), metadata={"format": "pt"})
    _fsync(next_w)
    meta = {**meta, "weights_sha256": file_sha256(next_w)}
    next_m.write_text(json.dumps(json_safe(meta), indent=2, sort_keys=True))
    _fsync(next_m)
    os.replace(next_w, weights_path)
    os.replace(next_m, meta_path)
    with contextlib.suppress(OSError):  # the renames themselves survive a power cut
        _fsync(meta_path.parent)
    return meta


def _is_count(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def check_metadata(meta: dict) -> list[str]:
    """Every problem with a GalaxyModel checkpoint's metadata (types, lengths), or ``[]``."""
    problems = []
    arch = meta.get("architecture")
    if not (isinstance(arch, str) and arch):
        problems.append(f"architecture must be a timm model name, got {arch!r}")
    channels = meta.get("channels")
    if not (_is_count(channels) and int(channels) >= 1):
        problems.append(f"channels must be a whole number >= 1, got {channels!r}")
        channels = None
    columns = meta.get("answer_columns")
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        problems.append(f"answer_columns must be a list of column names, got {columns!r:.80}")
    size = meta.get("image_size")
    if size is not None and not (_is_count(size) and int(size) > 0):
        problems.append(
            f"image_size must be a whole number of pixels (or null), got {size!r} "
            f"({type(size).__name__})"
        )
    dropout = meta.get("dropout", 0.0)
    if not (isinstance(dropout, Real) and not isinstance(dropout, bool) and 0 <= dropout < 1):
        problems.append(f"dropout must be a number in [0, 1), got {dropout!r}")
    for key in ("mean", "std"):
        value = meta.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        if not values or not all(
            isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            problems.append(f"{key} must be finite numbers, got {value!r}")
        elif key == "std" and any(v <= 0 for v in values):
            problems.append(f"std must be positive, got {value!r}")
        elif channels is not None and len(values) not in (1, int(channels)):
            problems.append(
                f"{key} has {len(values)} values but the model has {channels} channel(s); give "
                f"one value or {channels}"
            )
    return problems


def read_checkpoint_metadata(path, error: type[Exception], what: str) -> tuple[Path, Path, dict]:
    """``(weights_path, meta_path, metadata)``; ``error`` names a missing or damaged file."""
    weights_path, meta_path = checkpoint_paths(path)
    _finish_interrupted_save(weights_path, meta_path)
    for p in (weights_path, meta_path):
        if not p.exists():
            raise error(f"{p} does not exist: {what}")
    try:
        meta = read_json(meta_path, what="checkpoint metadata")
    except ValueError as err:
        raise error(str(err)) from None
    if not isinstance(meta, dict):
        raise error(f"{meta_path}: should hold a JSON object, found {type(meta).__name__}")
    expected = meta.get("weights_sha256")
    if expected is not None and file_sha256(weights_path) != expected:
        raise error(
            f"{weights_path} is not the weights file {meta_path} was saved with (sha256 differs): "
            "the two files come from different saves (an interrupted save, or one file copied "
            "over). Restore both files from the same run, or save the model again."
        )
    return weights_path, meta_path, meta


def _finish_interrupted_save(weights_path: Path, meta_path: Path) -> None:
    """Complete a save that crashed between its two renames (see write_checkpoint_files)."""
    pending = meta_path.with_name(meta_path.name + ".next")
    if not (pending.is_file() and weights_path.is_file()):
        return
    try:
        sha = read_json(pending).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return  # a JSON the crash cut short: its weights never replaced the old ones
    if sha is not None and sha == file_sha256(weights_path):
        os.replace(pending, meta_path)
        warnings.warn(
            f"{meta_path}: completed a save that was interrupted after its weights were written "
            "(the new metadata was waiting in a .next file).",
            stacklevel=3,
        )


def load_weights(
    model: nn.Module, weights_path: Path, error: type[Exception], expected: str, hint: str
) -> None:
    """Read safetensors weights into ``model`` (its dtypes), refusing any that do not fit."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types
        raise error(f"{weights_path}: cannot read safetensors weights ({err})") from err
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(set(state) - set(wanted))
    bad_shape = [k for k in wanted if k in state and state[k].shape != wanted[k].shape]
    if missing or unexpected or bad_shape:
        raise error(
            f"{weights_path}: the weights do not fit {expected}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {bad_shape[:3]}. {hint}"
        )
    refuse_non_finite(state, weights_path, error, "loaded")
    model.load_state_dict({k: v.to(wanted[k].dtype) for k, v in state.items()})


def load_checkpoint(
    path: str | os.PathLike,
    schema: Schema | str | None = None,
    image_size: int | None = None,
    device=None,
) -> tuple[GalaxyModel, dict]:
    """Rebuild a model from ``<path>.safetensors`` + ``<path>.json`` (never unpickles).

    Parameters
    ----------
    path : checkpoint path with or without suffix.
    schema, image_size : if given, refuse a checkpoint trained on another tree or size.
    device : where to put the model (default CPU).

    Returns
    -------
    (model, metadata) with ``model.metadata = metadata``, in eval mode.

    Raises
    ------
    CheckpointError saying what is wrong and what to do.
    """
    raw = Path(path)
    if raw.suffix in (".pt", ".pth", ".ckpt", ".pkl"):
        raise CheckpointError(
            f"{raw}: pickled PyTorch checkpoints are not loaded (unpickling can run code). "
            "Convert it to safetensors + JSON with save_checkpoint."
        )
    weights_path, meta_path, meta = read_checkpoint_metadata(
        path,
        CheckpointError,
        "a checkpoint is a .safetensors weights file plus a .json metadata file with the same name",
    )
    for key in ("architecture", "channels", "answer_columns"):
        if key not in meta:
            raise CheckpointError(f"{meta_path}: metadata has no {key!r} entry")
    if problems := check_metadata(meta):
        raise CheckpointError(
            f"{meta_path}: " + "; ".join(problems) + ". Fix the JSON, or save the model again."
        )
    if meta.get("schema_definition"):
        ckpt_schema = schema_from_dict(meta["schema_definition"])
    elif meta.get("schema"):
        ckpt_schema = get_schema(meta["schema"])
    else:
        ckpt_schema = None
    if schema is not None:
        wanted = get_schema(schema)
        if ckpt_schema is None or wanted.answer_columns != ckpt_schema.answer_columns:
            raise CheckpointError(
                f"{weights_path}: trained on schema {meta.get('schema')!r} "
                f"({len(meta['answer_columns'])} answers) but schema {wanted.name!r} "
                f"({wanted.n_answers} answers) was asked for. Load it without schema= to use "
                "its own tree, or train a model on your schema."
            )
    if image_size is not None and meta.get("image_size") not in (None, int(image_size)):
        raise CheckpointError(
            f"{weights_path}: trained on {meta['image_size']} px images but image_size="
            f"{image_size} was asked for. Resize your images to {meta['image_size']} px "
            "(images.load_images(paths, size=...)) or train at your size."
        )
    if ckpt_schema is not None and len(meta["answer_columns"]) != ckpt_schema.n_answers:
        raise CheckpointError(
            f"{meta_path}: answer_columns has {len(meta['answer_columns'])} entries but schema "
            f"{ckpt_schema.name!r} has {ckpt_schema.n_answers} answers; the JSON is damaged."
        )
    try:
        model = GalaxyModel(
            meta["architecture"],
            schema=ckpt_schema,
            channels=int(meta["channels"]),
            pretrained=False,
            dropout=float(meta.get("dropout", 0.0)),
        )
    except (ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{meta_path}: cannot build architecture {meta['architecture']!r} ({err}). The JSON "
            "names a model this timm does not have: upgrade timm, or fix the name."
        ) from err
    load_weights(
        model,
        weights_path,
        CheckpointError,
        f"a {meta['architecture']} with {len(meta['answer_columns'])} answers",
        "Is the JSON from the same run?",
    )
    model.metadata = meta
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta

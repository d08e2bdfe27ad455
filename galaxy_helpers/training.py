"""Train a GalaxyModel on raw vote counts for every question, from one CPU to many GPUs.

One loop: batch augmentation, Dirichlet-Multinomial loss, early stopping, AMP on a GPU, DDP
under torchrun; small catalogues are preloaded, big ones stream. Runs: :mod:`.recipes`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import core
from . import schema as schema_mod
from .evaluation import plot_history
from .images import ImageReadError, catalogue_crops, read_image, to_tensor
from .losses import dirichlet_multinomial_loss
from .models import GalaxyModel, load_checkpoint

__all__ = [
    "TrainConfig",
    "History",
    "DataReport",
    "CatalogueError",
    "prepare_catalogue",
    "augmentation_params",
    "augment_batch",
    "train",
    "plot_history",
    "is_rank0",
]


class CatalogueError(ValueError):
    """A catalogue that cannot be trained on (the message names rows, columns or files)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults: a small CPU run at full frame; notebook
    02's quick profile is these plus ``recipes.QUICK_PROFILE``.

    Parameters
    ----------
    architecture, image_size, channels : timm model name, pixels, 3 colour or 1 greyscale.
    pretrained : start from timm's ImageNet weights (needs the network).
    batch_size : total batch over all processes (split across ranks under torchrun).
    epochs, patience : maximum epochs; epochs without a better validation loss before stopping.
    lr, weight_decay : AdamW settings; ``lr`` is the peak for the one-cycle schedule.
    schedule : ``"constant"``, ``"onecycle"`` or ``"cosine"``.
    augment : ``"lossless"``: flips and quarter turns; ``True``: also rotation, zoom, shift.
    max_rotation_deg, zoom, max_shift : augmentation strength (shift: share of the half-width).
    val_fraction : validation share when the catalogue has no ``split`` column.
    seed : model initialisation, data order and augmentation.
    device : ``None`` = ``core.device()``.
    amp : mixed precision: ``"auto"`` = on for CUDA and for CPUs with native bfloat16 (AVX512-BF16
        or AMX; float32 on other CPUs); True: bfloat16 on any CPU too; False: float32.
    preload : read all images into memory once (None = when they fit in ``preload_max_gb``).
    num_workers : DataLoader workers when streaming from disk.
    skip_bad_images : drop unreadable images (listed in the history) instead of stopping.
    max_steps_per_epoch : cap on optimizer steps per epoch (tests, quick looks).
    dropout : dropout before the head.
    framing_crop : centre fraction of every frame (times a catalogue's per-row ``crop``).
    init_checkpoint : a checkpoint whose weights and normalisation start the run.
    init_head_from_data : start the head's biases at the training set's mean vote fractions.
    channels_last : NHWC memory layout (faster convolutions on CPU and on GPUs with AMP).
    progress : show tqdm bars.
    """

    architecture: str = "resnet10t"
    image_size: int = 64
    channels: int = 3
    pretrained: bool = False
    batch_size: int = 64
    epochs: int = 4
    lr: float = 4e-3
    weight_decay: float = 0.05
    schedule: str = "onecycle"
    patience: int = 3
    augment: bool | str = "lossless"
    max_rotation_deg: float = 15.0
    zoom: float = 0.1
    max_shift: float = 0.06
    val_fraction: float = 0.1
    seed: int = 0
    device: str | None = None
    amp: Any = "auto"
    preload: bool | None = None
    preload_max_gb: float = 4.0
    num_workers: int = 2
    skip_bad_images: bool = False
    max_steps_per_epoch: int | None = None
    dropout: float = 0.0
    framing_crop: float = 1.0
    init_checkpoint: str | None = None
    init_head_from_data: bool = False
    channels_last: bool = True
    progress: bool = True

    # Fields that do not change the trained weights (left out of cache keys).
    _RUNTIME_ONLY = (
        "device",
        "preload",
        "preload_max_gb",
        "num_workers",
        "progress",
        "channels_last",
    )

    def __post_init__(self):
        if self.schedule not in ("constant", "onecycle", "cosine"):
            raise ValueError(
                f"schedule must be 'constant', 'onecycle' or 'cosine', got {self.schedule!r}"
            )
        if self.augment not in (True, False, "lossless"):
            raise ValueError(f"augment must be True, False or 'lossless', got {self.augment!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def cache_key(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self._RUNTIME_ONLY}


@dataclasses.dataclass
class DataReport:
    """What went into training: rows used per split, and images skipped (with why)."""

    n_train: int = 0
    n_val: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # [{"row", "id_str", "file", "error"}]

    def __str__(self) -> str:
        lines = [f"{self.n_train} training and {self.n_val} validation galaxies"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} unreadable image(s):")
            lines += [f"  row {s['row']} ({s['id_str']}): {s['file']}" for s in self.skipped[:10]]
        return "\n".join(lines)


@dataclasses.dataclass
class History:
    """Per-epoch record of a training run (``as_frame()`` gives a DataFrame)."""

    epoch: list = dataclasses.field(default_factory=list)
    train_loss: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)
    lr: list = dataclasses.field(default_factory=list)
    seconds: list = dataclasses.field(default_factory=list)
    images_per_s: list = dataclasses.field(default_factory=list)
    step_loss: list = dataclasses.field(default_factory=list)  # every optimizer step (rank 0)
    step_end_s: list = dataclasses.field(default_factory=list)  # seconds since epoch start
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    stopped_early: bool = False
    data: DataReport = dataclasses.field(default_factory=DataReport)

    def as_frame(self) -> pd.DataFrame:
        names = ("epoch", "train_loss", "val_loss", "lr", "seconds", "images_per_s")
        return pd.DataFrame({name: getattr(self, name) for name in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**{**d, "data": DataReport(**d.get("data", {}))})


# --- catalogue checks and image loading ------------------------------------------------------
def prepare_catalogue(catalogue: pd.DataFrame, schema, config: TrainConfig):
    """Check a catalogue and split it into training and validation rows.

    Returns
    -------
    (train_df, val_df, counts_train, counts_val), counts in ``schema.answer_columns`` order.

    Raises
    ------
    CatalogueError naming the missing columns or the rows with bad counts.
    """
    schema = schema_mod.get_schema(schema)
    if not isinstance(catalogue, pd.DataFrame):
        raise CatalogueError(f"the catalogue must be a pandas DataFrame, got {type(catalogue)}")
    if len(catalogue) == 0:
        raise CatalogueError("the catalogue is empty")
    df = schema_mod.canonical_columns(catalogue, schema).reset_index(drop=True)
    if "file_loc" not in df.columns:
        raise CatalogueError(
            "the catalogue has no 'file_loc' column (absolute path of each image); see the "
            "catalogue contract in DEVELOPERS.md"
        )
    if "id_str" not in df.columns:
        df = df.assign(id_str=df.index.astype(str))
    df = df.assign(id_str=df["id_str"].astype(str))
    dup = df["id_str"].duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        raise CatalogueError(
            f"{int(df['id_str'][dup].nunique())} id_str value(s) appear more than once (rows "
            f"{rows[:6].tolist()}, ids {df['id_str'][dup].unique()[:5].tolist()}): a galaxy "
            "counted twice can sit in both training and validation. Keep one row per galaxy "
            "(catalogue.drop_duplicates('id_str'))."
        )
    try:
        counts = schema_mod.vote_counts(df, schema)
    except ValueError as err:
        raise CatalogueError(str(err)) from err
    inconsistent = schema_mod.parent_child_problems(counts, schema, limit=3)
    if inconsistent:
        shown = "; ".join(
            f"row {r} (id_str {df['id_str'].iloc[r]}): {q} has {n} votes, its parents {p}"
            for r, q, n, p in inconsistent
        )
        warnings.warn(
            f"vote counts where a question has more votes than the answers leading to it: {shown}"
            ". Check the vote columns (catalogue.validate_catalogue lists every such row).",
            UserWarning,
            stacklevel=3,
        )
    if "split" in df.columns and (df["split"] == "train").any():
        is_train = (df["split"] == "train").to_numpy()
        is_val = (df["split"] == "val").to_numpy()
        if not is_val.any():
            raise CatalogueError(
                "the catalogue's 'split' column has 'train' rows but no 'val' rows: add "
                "validation rows or drop the column to split at random"
            )
    else:
        rng = np.random.default_rng(config.seed)
        n_val = max(1, int(round(config.val_fraction * len(df))))
        order = rng.permutation(len(df))
        is_val = np.zeros(len(df), bool)
        is_val[order[:n_val]] = True
        is_train = ~is_val
    return df[is_train], df[is_val], counts[is_train], counts[is_val]


def _crops(df: pd.DataFrame, config: TrainConfig) -> np.ndarray:
    """Per-row framing: the catalogue's ``crop`` column times the model's ``framing_crop``."""
    return catalogue_crops(df, {"framing": {"crop": config.framing_crop}})


def _bad_image(df: pd.DataFrame, i: int, error: str) -> dict:
    row = df.index[i]
    file = str(df.at[row, "file_loc"])
    return {"row": int(row), "id_str": str(df.at[row, "id_str"]), "file": file, "error": error}


def _drop_missing(df: pd.DataFrame, counts, config: TrainConfig, report: DataReport):
    exists = df["file_loc"].map(lambda p: isinstance(p, (str, os.PathLike)) and os.path.isfile(p))
    missing = np.flatnonzero(~exists.to_numpy())
    bad = [_bad_image(df, i, f"{df['file_loc'].iloc[i]}: file not found") for i in missing]
    return _drop_or_raise(df, counts, bad, config, report)


def _drop_or_raise(df, counts, bad, config, report):
    if not bad:
        return df, counts
    if not config.skip_bad_images:
        listed = "\n".join(
            f"  row {b['row']} (id_str {b['id_str']}): {b['error']}" for b in bad[:10]
        )
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise CatalogueError(
            f"{len(bad)} image(s) could not be read:\n{listed}{more}\nFix or re-download them, "
            "drop those rows, or pass skip_bad_images=True to train without them (they are "
            "listed in history.data.skipped)."
        )
    report.skipped.extend(bad)
    keep = ~df.index.isin([b["row"] for b in bad])
    return df[keep], counts[keep]


def _load_all(df: pd.DataFrame, counts, config: TrainConfig, report: DataReport):
    """uint8 images (N, S, S, 3) of a split, dropping/raising on unreadable files."""
    df, counts = _drop_missing(df, counts, config, report)
    out = np.empty((len(df), config.image_size, config.image_size, 3), dtype=np.uint8)
    paths, crops, failed = df["file_loc"].tolist(), _crops(df, config), {}

    def work(i):
        try:
            out[i] = read_image(paths[i], config.image_size, crops[i])
        except (ImageReadError, OSError, ValueError) as err:
            failed[i] = str(err).splitlines()[0][:200]

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        it = pool.map(work, range(len(paths)))
        if config.progress and is_rank0() and len(paths) > 500:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(paths), desc="Reading images", unit="img", leave=False)
        for _ in it:
            pass
    if failed:
        bad = [_bad_image(df, i, failed[i]) for i in sorted(failed)]
        kept, counts = _drop_or_raise(df, counts, bad, config, report)
        out, df = out[df.index.isin(kept.index)], kept
    return out, df, counts


class _StreamingDataset(torch.utils.data.Dataset):
    """Reads one image per item from disk (for catalogues too big to hold in memory)."""

    def __init__(self, paths, counts, size, skip_bad, crops):
        self.paths, self.counts, self.size, self.skip_bad = list(paths), counts, size, skip_bad
        self.crops = np.asarray(crops)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img = read_image(self.paths[i], self.size, self.crops[i])
        except (ImageReadError, OSError, ValueError):
            if not self.skip_bad:
                raise
            return None
        return torch.from_numpy(np.array(img)), torch.as_tensor(self.counts[i]), i


def _collate_skip_none(items):
    items = [it for it in items if it is not None]
    if not items:
        return None
    imgs, counts, idx = zip(*items, strict=True)
    return torch.stack(imgs), torch.stack(counts), torch.as_tensor(idx)


# --- augmentation: one affine transform per galaxy, applied to the whole batch at once -------
def augmentation_params(n: int, config: TrainConfig, seed: int, epoch: int) -> np.ndarray:
    """Random transforms for ``n`` galaxies, per galaxy index and epoch (so the same on any rank).

    Returns
    -------
    ndarray (n, 5): flip, angle (rad), zoom, shift x, shift y.
    """
    rng = np.random.default_rng([seed, epoch, 7])
    flip = rng.integers(0, 2, n)
    quarter = rng.integers(0, 4, n) * 90.0
    small = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg, n)
    zoom = rng.uniform(1 - config.zoom, 1 + config.zoom, n)
    shift = rng.uniform(-config.max_shift, config.max_shift, (n, 2))
    if config.augment == "lossless":  # same draws, so flips and quarter turns stay the same
        small, zoom, shift = np.zeros_like(small), np.ones_like(zoom), np.zeros_like(shift)
    return np.column_stack([flip, np.deg2rad(quarter + small), zoom, shift]).astype(np.float32)


def augment_batch(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Flip, rotate, zoom and shift every image of ``x`` in one pass (edges by reflection).

    Parameters
    ----------
    x : float tensor (B, C, H, W).
    params : (B, 5) from :func:`augmentation_params` (flip, angle, zoom, shift x, shift y).
    """
    p = params.to(device=x.device, dtype=torch.float32)
    flip = 1.0 - 2.0 * p[:, 0]  # -1 mirrors x
    cos, sin, s = torch.cos(p[:, 1]), torch.sin(p[:, 1]), 1.0 / p[:, 2]
    row_x = torch.stack([s * cos * flip, -s * sin, p[:, 3]], dim=1)
    row_y = torch.stack([s * sin * flip, s * cos, p[:, 4]], dim=1)
    theta = torch.stack([row_x, row_y], dim=1)  # (B, 2, 3): output pixel -> input pixel
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# --- distributed helpers (no-ops in a single process) ----------------------------------------
def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def is_rank0() -> bool:
    """Whether this process prints and writes: the only one, or rank 0 under torchrun."""
    d = _dist()
    return d is None or d.get_rank() == 0


def _all_reduce_sum(values: list[float], device) -> list[float]:
    d = _dist()
    if d is None:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    d.all_reduce(t)
    return t.tolist()


def _resolve_device(config: TrainConfig) -> torch.device:
    dev = torch.device(core.device(config.device))
    if dev.type == "cuda" and _dist() is not None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def cpu_has_native_bfloat16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): there bfloat16
    autocast trains about 1.6x faster than float32; elsewhere it is emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))
    except Exception:  # a build without these probes: stay in float32
        return False


def amp_precision(amp, device) -> str:
    """The dtype name a pass with ``amp`` on ``device`` computes in: ``"bfloat16"``,
    ``"float16"`` or ``"float32"`` (:func:`amp_settings`), for cache keys and benchmark records."""
    on, dtype = amp_settings(amp, device)
    return str(dtype).removeprefix("torch.") if on else "float32"


def numerics(device: str | None = None) -> dict[str, Any]:
    """What a quick-profile number depends on beyond the code and the seed, for course-run
    records: the torch, numpy and scikit-learn versions, the CPU kernels torch dispatches to
    (``"AVX2"``, ``"AVX512"``...), the precision ``amp="auto"`` trains in on ``device`` (default
    :func:`galaxy_helpers.core.device`) and torch's thread count. Two runs of the course with
    equal ``numerics`` make the same numbers; with different ones they differ in the last digits
    (float32 against bfloat16 changes the quick profile's metrics by about 0.01)."""
    import importlib.metadata

    dev = core.device(device)
    get_capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")
    return {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": importlib.metadata.version("scikit-learn"),
        "cpu_capability": get_capability(),
        "device": dev,
        "precision": amp_precision("auto", dev),
        "torch_threads": torch.get_num_threads(),
    }


def amp_settings(amp, device) -> tuple[bool, torch.dtype | None]:
    """(enabled, dtype) of mixed precision ``amp`` (True, False or ``"auto"``) on ``device``:
    float16 (+ GradScaler in training) on older GPUs, bfloat16 where supported. ``"auto"``: on
    for CUDA and for CPUs with native bfloat16 (:func:`cpu_has_native_bfloat16`)."""
    device = torch.device(device)
    on = bool(amp) and device.type in ("cuda", "cpu")
    if amp == "auto":
        on = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
    if not on:
        return False, None
    old_gpu = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return True, torch.float16 if old_gpu else torch.bfloat16


def make_adamw(params, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)`` with PyTorch's fused kernel where the parameters'
    device has one (CPU and CUDA in torch >= 2.4): one kernel for every tensor instead of a
    loop of small ones: on the 2-core CPU resnet10t's optimizer step (4.9 M weights) is about half
    the default's (``benchmarks/bench_optimizer.py``; DEVELOPERS.md, "Course time"). Other
    devices and tensors get the default AdamW, the same arithmetic up to rounding."""
    params = [{**p, "params": list(p["params"])} if isinstance(p, dict) else p for p in params]
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    fusable = all(t.device.type in ("cpu", "cuda") and t.is_floating_point() for t in tensors)
    return torch.optim.AdamW(params, fused=fusable or None, **kwargs)


def _normalisation(images: np.ndarray, channels: int) -> tuple[list[float], list[float]]:
    t = to_tensor(images[:: max(1, len(images) // 2000)], channels=channels)
    mean = t.mean(dim=(0, 2, 3))
    std = t.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


# --- the training loop -----------------------------------------------------------------------
def _make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        if total < 4:  # no room for a warm-up and an annealing phase: a constant rate
            return None
        # OneCycleLR divides by (warm-up steps - 1): keep at least two warm-up steps
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total, pct_start=max(0.25, 2.0 / total)
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return None


def _n_batches(n: int, batch: int) -> int:
    """Batches in an epoch; a last batch of one galaxy is left out (BatchNorm needs two)."""
    return n // batch + (n % batch > 1)


def _fits_on_gpu(n_bytes: int, device: torch.device, share: float = 0.25) -> bool:
    """Whether preloaded images should live on the GPU: under ``share`` of its free memory."""
    return device.type == "cuda" and n_bytes < share * torch.cuda.mem_get_info(device)[0]


def _booking_lag(device: torch.device) -> int:
    """Steps by which ``train`` books each loss late: 1 on a GPU (see ``train``), else 0."""
    return 1 if device.type == "cuda" else 0


def train(
    catalogue: pd.DataFrame,
    config: TrainConfig | None = None,
    schema=schema_mod.DECALS_DR5,
    data_description: dict | None = None,
    on_epoch_end=None,
):
    """Train a GalaxyModel on a catalogue's vote counts for every question of ``schema``.

    Parameters
    ----------
    catalogue : DataFrame in the catalogue contract (optional ``split`` of ``train``/``val``).
    config : TrainConfig (default: the quick CPU profile).
    schema : decision tree (``DECALS_DR5`` default, ``GZ2``, or your own Schema).
    data_description : stored in the checkpoint metadata as ``data`` (e.g. the sky config).
    on_epoch_end : optional ``callable(model, history)`` run on rank 0 after each epoch.

    Returns
    -------
    (model, history): the best epoch's model (CPU, eval mode, ``metadata`` set) and a History.

    Raises
    ------
    CatalogueError for bad columns, counts or unreadable images (unless ``skip_bad_images``).
    """
    config = config or TrainConfig()
    schema = schema_mod.get_schema(schema)
    dist = _dist()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist else (0, 1)
    if config.batch_size % world:
        raise ValueError(
            f"batch_size {config.batch_size} must be divisible by the number of processes "
            f"({world}) so every rank gets an equal share"
        )
    per_rank_batch = config.batch_size // world
    device = _resolve_device(config)
    amp_on, amp_dtype = amp_settings(config.amp, device)
    show = config.progress and rank == 0

    # --- data -------------------------------------------------------------------------
    report = DataReport()
    train_df, val_df, counts_tr, counts_va = prepare_catalogue(catalogue, schema, config)
    n_bytes = (len(train_df) + len(val_df)) * config.image_size**2 * 3
    preload = (
        config.preload if config.preload is not None else n_bytes <= config.preload_max_gb * 1e9
    )
    pin = device.type == "cuda"
    if preload:
        imgs_tr, train_df, counts_tr = _load_all(train_df, counts_tr, config, report)
        imgs_va, val_df, counts_va = _load_all(val_df, counts_va, config, report)
        if len(imgs_tr) == 0 or len(imgs_va) == 0:
            raise CatalogueError("no readable training or validation images are left")
        mean, std = _normalisation(imgs_tr, config.channels)
        imgs_tr_t, imgs_va_t = torch.from_numpy(imgs_tr), torch.from_numpy(imgs_va)
        if _fits_on_gpu(imgs_tr.nbytes + imgs_va.nbytes, device):
            # uint8 images on the GPU: each batch is gathered there, with no copy from the host.
            imgs_tr_t, imgs_va_t = imgs_tr_t.to(device), imgs_va_t.to(device)
        elif pin:  # page-locked memory lets host->GPU copies overlap with compute
            imgs_tr_t, imgs_va_t = imgs_tr_t.pin_memory(), imgs_va_t.pin_memory()
    else:
        train_df, counts_tr = _drop_missing(train_df, counts_tr, config, report)
        val_df, counts_va = _drop_missing(val_df, counts_va, config, report)
        first = train_df.iloc[:500]
        pairs = zip(first["file_loc"], _crops(first, config), strict=True)
        sample = np.stack([read_image(p, config.image_size, c) for p, c in pairs])
        mean, std = _normalisation(sample, config.channels)
    report.n_train, report.n_val = len(train_df), len(val_df)
    counts_tr_t = torch.from_numpy(counts_tr.astype(np.float32))
    counts_va_t = torch.from_numpy(counts_va.astype(np.float32))

    # --- model, optimizer -------------------------------------------------------------
    torch.manual_seed(config.seed)  # same initial weights on every rank
    model = GalaxyModel(
        config.architecture, schema, config.channels, config.pretrained, config.dropout
    ).to(device)
    if config.init_checkpoint:
        mean, std = _init_from_checkpoint(model, config, schema)
    elif config.init_head_from_data and model.head is not None:
        _init_head_bias(model, counts_tr, schema)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # What a checkpoint needs to use the model; completed with data and metrics at the end.
    model.metadata = dict(
        image_size=config.image_size,
        channels=config.channels,
        mean=mean,
        std=std,
        seed=config.seed,
        framing={"crop": float(config.framing_crop)},
    )
    net = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_adamw(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = _n_batches(math.ceil(len(train_df) / world), per_rank_batch)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    scheduler = _make_scheduler(optimizer, config, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_on and amp_dtype == torch.float16)

    # One permutation per epoch dealt out round-robin to the ranks (the two paths' seeds
    # differ, kept so that earlier runs repeat exactly).
    dataset = range(len(train_df))
    if not preload:
        dataset = _StreamingDataset(
            train_df["file_loc"],
            counts_tr_t,
            config.image_size,
            config.skip_bad_images,
            _crops(train_df, config),
        )
    sampler = torch.utils.data.DistributedSampler(
        dataset, world, rank, shuffle=True, seed=config.seed * 1000 if preload else config.seed
    )

    def batches(epoch):
        """(uint8 images, counts, indices) of this rank's batches; no batch of one galaxy."""
        sampler.set_epoch(epoch)
        if preload:
            idx = torch.tensor(list(sampler), dtype=torch.int64)
            for s in range(steps_per_epoch):
                i = idx[s * per_rank_batch : (s + 1) * per_rank_batch]
                yield imgs_tr_t[i.to(imgs_tr_t.device)], counts_tr_t[i], i
            return
        loader = torch.utils.data.DataLoader(
            dataset,
            per_rank_batch,
            sampler=sampler,
            num_workers=config.num_workers,
            pin_memory=pin,
            collate_fn=_collate_skip_none,
        )
        for s, b in enumerate(loader):
            if config.max_steps_per_epoch and s >= config.max_steps_per_epoch:
                break
            if b is not None and len(b[0]) > 1:  # see _n_batches
                yield b

    def to_input(images_u8, idx=None):
        x = to_tensor(images_u8.to(device, non_blocking=pin), config.channels, mean, std)
        if idx is not None and config.augment:
            x = augment_batch(x, torch.from_numpy(aug_params[idx.numpy()]))
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def validate() -> float:
        """Mean validation loss over all ranks (each rank takes every world-th galaxy)."""
        net.eval()
        loss_sum, n = 0.0, 0
        paths, crops = val_df["file_loc"].tolist(), _crops(val_df, config)
        idx_all, step = torch.arange(rank, len(val_df), world), max(config.batch_size, 128)
        for idx in (idx_all[s : s + step] for s in range(0, len(idx_all), step)):
            if preload:
                imgs = imgs_va_t[idx.to(imgs_va_t.device)]
            else:
                imgs = [read_image(paths[i], config.image_size, crops[i]) for i in idx.tolist()]
                imgs = torch.from_numpy(np.stack(imgs))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_on):
                conc = model(to_input(imgs))
            counts = counts_va_t[idx].to(device)
            loss_sum += dirichlet_multinomial_loss(counts, conc.float(), schema, "sum").item()
            n += len(idx)
        loss_sum, n = _all_reduce_sum([loss_sum, float(n)], device)
        return loss_sum / max(n, 1)

    history = History(data=report)
    best_state, bad_epochs = None, 0
    loss_sum, n_seen, t0, bar = 0.0, 0, 0.0, None
    # .item() waits for the device: on a GPU each loss is booked one step late so that the
    # next step is always queued.
    lag = _booking_lag(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image size: pick the fastest kernels once
        torch.cuda.reset_peak_memory_stats(device)

    def log_step(step_loss: torch.Tensor, n: int):
        """Book one finished step: running sums, history and progress bar."""
        nonlocal loss_sum, n_seen
        loss_val = step_loss.item()
        loss_sum += loss_val * n
        n_seen += n
        if rank == 0:
            history.step_loss.append(loss_val)
            history.step_end_s.append(time.perf_counter() - t0)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.2f}")

    for epoch in range(config.epochs):
        aug_params = augmentation_params(len(train_df), config, config.seed, epoch)
        net.train()
        t0 = time.perf_counter()
        loss_sum, n_seen = 0.0, 0
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=steps_per_epoch, desc=f"Epoch {epoch + 1}/{config.epochs}", unit="batch"
            )
        pending = []  # (loss, batch size) of steps queued but not yet booked
        for images_u8, counts, idx in batches(epoch):
            x = to_input(images_u8, idx)
            counts = counts.to(device, non_blocking=pin)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_on):
                concentrations = net(x)
            # Outside autocast, in float64 (losses.py): lgamma of large counts needs it.
            loss = dirichlet_multinomial_loss(counts, concentrations.float(), schema)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            pending.append((loss.detach(), len(x)))
            while len(pending) > lag:
                log_step(*pending.pop(0))
        while pending:
            log_step(*pending.pop(0))
        loss_sum, n_seen = _all_reduce_sum([loss_sum, float(n_seen)], device)
        train_seconds = time.perf_counter() - t0
        val_loss = validate()
        history.epoch.append(epoch + 1)
        history.train_loss.append(loss_sum / max(n_seen, 1))
        history.val_loss.append(val_loss)
        history.lr.append(optimizer.param_groups[0]["lr"])
        history.seconds.append(round(time.perf_counter() - t0, 3))
        history.images_per_s.append(round(n_seen / max(train_seconds, 1e-9), 1))
        if bar is not None:
            bar.set_postfix(loss=f"{history.train_loss[-1]:.2f}", val_loss=f"{val_loss:.2f}")
            bar.close()
        improved = val_loss < history.best_val_loss - 1e-4
        if improved:
            history.best_val_loss, history.best_epoch, bad_epochs = val_loss, epoch + 1, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if on_epoch_end is not None and rank == 0:
            on_epoch_end(model, history)
        if not improved:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                history.stopped_early = True
                if show:
                    print(f"Early stopping: no better validation loss for {bad_epochs} epochs.")
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    from . import __version__

    peak_gb = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    model.metadata.update(
        {
            "data": {
                **(data_description or {}),
                "n_train": report.n_train,
                "n_val": report.n_val,
                "n_skipped": len(report.skipped),
            },
            "epochs": len(history.epoch),
            "best_epoch": history.best_epoch,
            "train_config": config.to_dict(),
            "metrics": {
                "best_val_loss": history.best_val_loss,
                "final_train_loss": history.train_loss[-1] if history.train_loss else None,
                "images_per_s": float(np.median(history.images_per_s))
                if history.images_per_s
                else None,
                "world_size": world,
                "gpu_peak_memory_gb": round(peak_gb, 2) if peak_gb is not None else None,
            },
            "library": {"torch": torch.__version__, "galaxy_helpers": __version__},
        }
    )
    return model, history


def _init_from_checkpoint(model: GalaxyModel, config: TrainConfig, schema):
    """Copy a checkpoint's weights into ``model``; return its input normalisation."""
    source, meta = load_checkpoint(
        config.init_checkpoint, schema=schema, image_size=config.image_size
    )
    if meta["architecture"] != config.architecture or int(meta["channels"]) != config.channels:
        raise ValueError(
            f"init_checkpoint {config.init_checkpoint} is a {meta['architecture']} with "
            f"{meta['channels']} channel(s); this run trains a {config.architecture} with "
            f"{config.channels}: use a checkpoint of the same architecture or drop init_checkpoint"
        )
    model.load_state_dict(source.state_dict())
    return list(meta["mean"]), list(meta["std"])


def _init_head_bias(model: GalaxyModel, counts: np.ndarray, schema, total: float = 20.0):
    """Start the head at the training set's mean vote fractions (``total`` per question)."""
    from .evaluation import mean_fraction_baseline

    conc = np.clip(total * mean_fraction_baseline(counts, schema), 1.05, 100.0)
    bias = np.log((conc - 1) / 100) - np.log1p(-(conc - 1) / 100)  # inverse of sigmoid*100+1
    with torch.no_grad():
        model.head.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


if __name__ == "__main__":
    raise SystemExit("the command line is `python -m galaxy_helpers.recipes train ...` (--help)")

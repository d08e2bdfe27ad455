"""Representations: what the trained encoder "sees" in each galaxy (notebook 03).

The paper's tools all start from the same thing: the pooled output of the encoder's last
convolutional block for every galaxy, compressed with PCA (10 components for similarity search,
40 for anomalies). This module

- extracts those representations for a whole catalogue (:func:`extract_representations`):
  batched, images decoded in background threads while the model computes, inference mode, a
  progress bar, and cached as parquet under ``course.cache_dir()`` keyed by a hash of the
  weights + preprocessing and of the catalogue (ids, files, sizes, modification times);
- embeds a few images outside any catalogue with the same preprocessing (:func:`embed_images`);
- compresses them (:class:`RepresentationPCA`, :func:`fit_pca`; incremental PCA for large
  catalogues) and shows how much variance each component keeps
  (:func:`plot_explained_variance`);
- draws the 2-D morphology map, galaxy thumbnails placed at their PCA coordinates
  (:func:`morphology_map`);
- builds the two baselines of notebook 04: raw-pixel features (:func:`pixel_features`) and the
  same architecture with random weights (:func:`random_weights_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_helpers.similarity import feature_matrix

__all__ = [
    "RepresentationPCA",
    "catalogue_hash",
    "embed_images",
    "extract_representations",
    "feature_columns",
    "fit_pca",
    "label_separability",
    "load_model",
    "model_hash",
    "morphology_map",
    "pixel_features",
    "plot_pca_by_label",
    "plot_explained_variance",
    "random_weights_model",
]

# The file format version of cached tables: bump it when the table layout changes.
_CACHE_VERSION = 1
_PREPROCESSING_KEYS = ("architecture", "image_size", "channels", "mean", "std")
# Hashed only when set, so the hashes (cache keys) of models without them stay as they were.
_OPTIONAL_PREPROCESSING_KEYS = ("framing", "greyscale")


# ------------------------------------------------------------------------------ models
def load_model(checkpoint="course", metadata: dict | None = None, progress: bool = True):
    """Turn what a notebook's ``checkpoint`` parameter holds into ``(model, metadata)``.

    Parameters
    ----------
    checkpoint : str, path, GalaxyModel or (model, metadata)
        ``"course"`` (the committed course checkpoint, ``training.course_checkpoint()``),
        ``"quick"`` (notebook 02's quick-profile model, trained once then cached, through
        ``training.load_model``), a checkpoint path, a model whose ``.metadata`` holds its
        preprocessing, or a ``(model, metadata)`` pair.
    metadata : dict, optional
        Preprocessing (``image_size``, ``channels``, ``mean``, ``std``) for a bare model.
    progress : bool
        Progress bars while a quick model trains.

    Returns
    -------
    (model, metadata)
        The model in eval mode and its metadata.
    """
    from galaxy_helpers import models

    if isinstance(checkpoint, tuple) and len(checkpoint) == 2:
        model, meta = checkpoint
    elif isinstance(checkpoint, str | os.PathLike) and str(checkpoint) in (
        "course",
        "synthetic",
        "quick",
    ):
        from galaxy_helpers import training

        model, meta = training.load_model(str(checkpoint), progress=progress)
    elif isinstance(checkpoint, str | os.PathLike):
        model, meta = models.load_checkpoint(checkpoint)
    elif hasattr(checkpoint, "encode"):
        model, meta = (
            checkpoint,
            metadata if metadata is not None else getattr(checkpoint, "metadata", None),
        )
    else:
        raise TypeError(
            f"cannot use {type(checkpoint).__name__} as a model: pass 'course', 'quick', a "
            "checkpoint path, a GalaxyModel or a (model, metadata) pair"
        )
    meta = dict(meta or {})
    if metadata:
        meta.update(metadata)
    missing = [k for k in ("image_size", "channels") if meta.get(k) is None]
    if missing:
        raise ValueError(
            f"the model's metadata lacks {missing}: pass metadata={{'image_size': ..., "
            "'channels': ..., 'mean': ..., 'std': ...}} (the values it was trained with)"
        )
    meta.setdefault("architecture", getattr(model, "architecture", type(model).__name__))
    model.eval()
    return model, meta


def random_weights_model(metadata: dict, seed: int = 0):
    """The same architecture with fresh random weights: the "no training" baseline.

    Parameters
    ----------
    metadata : dict
        Checkpoint metadata (``architecture``, ``channels``; preprocessing is kept so both
        models see identical inputs).
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    (model, metadata)
        An encoder-only :class:`~galaxy_helpers.models.GalaxyModel` and a copy of the metadata
        marked ``"weights": "random"``.
    """
    import torch

    from galaxy_helpers.models import GalaxyModel

    torch.manual_seed(int(seed))
    model = GalaxyModel(
        metadata["architecture"], schema=None, channels=int(metadata["channels"]), pretrained=False
    )
    meta = dict(metadata)
    meta["weights"] = f"random (seed {seed})"
    model.metadata = meta
    return model.eval(), meta


# ------------------------------------------------------------------------------ hashing
def model_hash(model, metadata: dict) -> str:
    """Hash of the weights and the preprocessing: equal hash, equal representations.

    Parameters
    ----------
    model : torch.nn.Module
    metadata : dict

    Returns
    -------
    str
        16 hex digits.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    prep = {k: metadata.get(k) for k in _PREPROCESSING_KEYS}
    prep.update({k: metadata[k] for k in _OPTIONAL_PREPROCESSING_KEYS if metadata.get(k)})
    h.update(json.dumps(prep, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def catalogue_hash(catalogue: pd.DataFrame) -> str:
    """Hash of a catalogue's ids and image files (path, size, modification time).

    Reading every image would cost as much as extracting; size + modification time catch a
    re-rendered or replaced file as ``make`` does.

    Parameters
    ----------
    catalogue : pandas.DataFrame
        With ``id_str`` and ``file_loc``.

    Returns
    -------
    str
        16 hex digits.
    """
    h = hashlib.sha256()
    for gid, loc in zip(
        catalogue["id_str"].astype(str), catalogue["file_loc"].astype(str), strict=True
    ):
        try:
            st = os.stat(loc)
            sig = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            sig = "missing"
        h.update(f"{gid}\t{loc}\t{sig}\n".encode())
    if "crop" in catalogue.columns:  # a survey's framing changes the pixels; absent: as before
        h.update(np.asarray(catalogue["crop"], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _check_catalogue(catalogue) -> pd.DataFrame:
    if not isinstance(catalogue, pd.DataFrame):
        raise TypeError(f"catalogue must be a pandas DataFrame, got {type(catalogue).__name__}")
    missing = [c for c in ("id_str", "file_loc") if c not in catalogue.columns]
    if missing:
        raise ValueError(
            f"catalogue is missing columns {missing}: a catalogue needs 'id_str' (unique id) and "
            "'file_loc' (image path) for every galaxy (see DEVELOPERS.md)"
        )
    if len(catalogue) == 0:
        raise ValueError("catalogue is empty (0 rows): nothing to extract")
    dup = catalogue["id_str"].astype(str).duplicated()
    if dup.any():
        raise ValueError(
            f"catalogue has duplicate id_str values, e.g. "
            f"{catalogue['id_str'][dup].astype(str).tolist()[:5]}; ids must be unique"
        )
    absent = [
        (i, loc)
        for i, loc in enumerate(catalogue["file_loc"].astype(str))
        if not os.path.exists(loc)
    ]
    if absent:
        row, loc = absent[0]
        raise FileNotFoundError(
            f"{len(absent)} image files of the catalogue do not exist, e.g. row {row} "
            f"(id {catalogue['id_str'].iloc[row]!r}): {loc}; fix file_loc or regenerate the images"
        )
    return catalogue


def feature_columns(n: int, prefix: str = "feat") -> list[str]:
    """Column names ``feat_000, feat_001, ...`` for an n-dimensional representation."""
    width = max(3, len(str(n - 1)))
    return [f"{prefix}_{i:0{width}d}" for i in range(n)]


def _table(ids, matrix: np.ndarray, prefix: str) -> pd.DataFrame:
    cols = feature_columns(matrix.shape[1], prefix)
    table = pd.DataFrame(matrix.astype(np.float32, copy=False), columns=cols)
    table.insert(0, "id_str", np.asarray(ids).astype(str))
    return table


# ------------------------------------------------------------------------------ extraction
def _batches_in_background(
    paths,
    size: int,
    batch_size: int,
    num_workers: int,
    prefetch: int,
    crops=None,
    resample: str = "lanczos",
):
    """Yield uint8 batches while the next ones are decoded in background threads, each image
    framed by its crop (``images.catalogue_crops``; None: the whole frame) and ``resample``."""
    from galaxy_helpers.images import load_images

    crops = np.ones(len(paths)) if crops is None else np.asarray(crops, dtype=np.float64)
    starts = list(range(0, len(paths), batch_size))

    def submit(pool, s):
        end = s + batch_size
        return pool.submit(
            load_images, paths[s:end], size, False, num_workers, crops[s:end], resample
        )

    with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
        pending = deque(submit(pool, s) for s in starts[:prefetch])
        next_start = prefetch
        while pending:
            batch = pending.popleft().result()
            if next_start < len(starts):
                pending.append(submit(pool, starts[next_start]))
                next_start += 1
            yield batch


def _encode_stream(model, metadata, batches, n_total, batch_size, progress, device, desc):
    import torch

    from galaxy_helpers.images import to_tensor

    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    out = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_total, desc=desc, unit="img")
    try:
        with torch.inference_mode():
            for batch in batches:
                x = to_tensor(
                    torch.as_tensor(batch).to(device),
                    channels=int(metadata["channels"]),
                    mean=metadata.get("mean"),
                    std=metadata.get("std"),
                    greyscale=metadata.get("greyscale") or "mean",
                )
                out.append(model.encode(x).float().cpu().numpy())
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def extract_representations(
    model_or_checkpoint,
    catalogue: pd.DataFrame,
    batch_size: int = 256,
    cache: bool = True,
    progress: bool = True,
    num_workers: int = 2,
    prefetch: int = 2,
    metadata: dict | None = None,
    device=None,
    cache_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Pooled representation of every galaxy of a catalogue, as a table.

    Images are read from ``file_loc`` at the checkpoint's ``image_size`` and framing
    (``images.catalogue_crops``: the catalogue's optional ``crop`` column times the model's
    ``framing``, resampled as ``framing["resample"]`` says) in background threads
    (``prefetch`` batches ahead, each decoded by ``num_workers`` threads) while the model
    encodes the previous batch under ``torch.inference_mode``. Preprocessing is
    ``images.to_tensor`` with the checkpoint's channels, mean and std.

    Parameters
    ----------
    model_or_checkpoint : str, path, GalaxyModel or (model, metadata)
        See :func:`load_model`.
    catalogue : pandas.DataFrame
        With ``id_str`` and ``file_loc``.
    batch_size : int
        Images per forward pass.
    cache : bool
        Read/write ``<cache>/representations/<model hash>_<catalogue hash>.parquet``.
    progress : bool
        Show a progress bar.
    num_workers : int
        Decoding threads per batch.
    prefetch : int
        Batches decoded ahead of the model.
    metadata : dict, optional
        Preprocessing for a bare model (see :func:`load_model`).
    device : torch device, optional
        Default: where the model's weights are.
    cache_dir : path, optional
        Default ``course.cache_dir()``.

    Returns
    -------
    pandas.DataFrame
        ``id_str`` then ``feat_000 ... feat_<D-1>`` (float32), in catalogue order.
    """
    model, meta = load_model(model_or_checkpoint, metadata)
    catalogue = _check_catalogue(catalogue)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = None
    if cache:
        if cache_dir is None:
            from galaxy_helpers.course import cache_dir as default_cache_dir

            cache_dir = default_cache_dir()
        key = f"v{_CACHE_VERSION}_{model_hash(model, meta)}_{catalogue_hash(catalogue)}"
        path = Path(cache_dir) / "representations" / f"{key}.parquet"
        if path.exists():
            try:
                return pd.read_parquet(path)
            except Exception:  # a corrupt cache file is rebuilt, never trusted
                path.unlink(missing_ok=True)
    paths = catalogue["file_loc"].astype(str).tolist()
    from galaxy_helpers.images import catalogue_crops, model_resample

    batches = _batches_in_background(
        paths,
        int(meta["image_size"]),
        int(batch_size),
        int(num_workers),
        int(prefetch),
        catalogue_crops(catalogue, meta),
        model_resample(meta),
    )
    was_training = model.training
    model.eval()
    try:
        matrix = _encode_stream(
            model, meta, batches, len(paths), int(batch_size), progress, device, "Extracting"
        )
    finally:
        model.train(was_training)
    table = _table(catalogue["id_str"], matrix, "feat")
    if path is not None:
        _atomic_parquet(table, path)
    return table


def _atomic_parquet(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    os.close(fd)
    try:
        table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def embed_images(images, model, metadata: dict | None = None, batch_size: int = 64) -> np.ndarray:
    """Representations of a few images that need not be in any catalogue.

    Parameters
    ----------
    images : sequence of paths, or uint8 array (N, H, W, 3)
        Files are read at the checkpoint's ``image_size`` and framing; arrays must already
        have them.
    model : GalaxyModel or anything :func:`load_model` accepts
    metadata : dict, optional
        Checkpoint metadata (default ``model.metadata``).
    batch_size : int
        Images per forward pass.

    Returns
    -------
    numpy.ndarray
        float32 (N, D).
    """
    from galaxy_helpers.images import load_images, model_crop, model_resample

    model, meta = load_model(model, metadata)
    size = int(meta["image_size"])
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        arr = images[None] if images.ndim == 3 else images
        if arr.ndim != 4 or arr.shape[1:3] != (size, size):
            raise ValueError(
                f"image array has shape {images.shape} but the model expects ({size}, {size}, 3) "
                "images: pass file paths (resized on reading) or resize first"
            )
    else:
        paths = [str(p) for p in ([images] if isinstance(images, str | os.PathLike) else images)]
        arr = load_images(
            paths, size, progress=False, crop=model_crop(meta), resample=model_resample(meta)
        )
    chunks = (arr[s : s + batch_size] for s in range(0, len(arr), batch_size))
    return _encode_stream(model, meta, chunks, len(arr), batch_size, False, None, "Embedding")


# ------------------------------------------------------------------------------ baselines
def pixel_features(
    catalogue: pd.DataFrame,
    image_size: int = 32,
    channels: int = 3,
    progress: bool = True,
) -> pd.DataFrame:
    """Raw pixels as features: the baseline that knows nothing about galaxies.

    Parameters
    ----------
    catalogue : pandas.DataFrame
        With ``id_str`` and ``file_loc``.
    image_size : int
        Images are shrunk to this size first (a 64 px image has 12,288 numbers).
    channels : int
        3 keeps colour, 1 averages it.
    progress : bool
        Show a progress bar while reading.

    Returns
    -------
    pandas.DataFrame
        ``id_str`` then ``pix_00000 ...`` in [0, 1].
    """
    from galaxy_helpers.images import load_images

    catalogue = _check_catalogue(catalogue)
    arr = load_images(catalogue["file_loc"].astype(str).tolist(), image_size, progress=progress)
    x = arr.astype(np.float32) / 255.0
    if channels == 1:
        x = x.mean(axis=3)
    return _table(catalogue["id_str"], x.reshape(len(x), -1), "pix")


# ------------------------------------------------------------------------------ PCA
class RepresentationPCA:
    """PCA of a representation table, scikit-learn style, keeping the galaxy ids.

    Parameters
    ----------
    n_components : int
        Components kept (10 for similarity search, 40 for anomalies, as in the paper).
    incremental : bool or None
        Use ``IncrementalPCA`` (bounded memory, fed in batches). ``None``: only above
        ``incremental_above`` galaxies.
    batch_size : int
        Rows per incremental step.
    standardise : bool
        Scale each component to unit variance afterwards (the paper does this for anomalies).
    scale_features : bool
        Standardise every input dimension (zero mean, unit variance) *before* the PCA, i.e.
        a PCA of the correlation matrix. Without it a few high-variance channels (overall
        brightness and size) fill the first components and rare features are left to later
        ones; similarity search uses it (see ``similarity.build_index``).
    incremental_above : int
        Row count above which ``incremental=None`` switches to ``IncrementalPCA``.
    random_state : int
        Seed of the randomised solver.

    Attributes
    ----------
    explained_variance_ratio_ : numpy.ndarray
        Share of the total variance each kept component explains.
    pca_ : sklearn PCA or IncrementalPCA
        The fitted decomposition.
    """

    def __init__(
        self,
        n_components: int = 10,
        incremental: bool | None = None,
        batch_size: int = 4096,
        standardise: bool = False,
        incremental_above: int = 50_000,
        random_state: int = 0,
        scale_features: bool = False,
    ):
        self.n_components = n_components
        self.incremental = incremental
        self.batch_size = batch_size
        self.standardise = standardise
        self.scale_features = scale_features
        self.incremental_above = incremental_above
        self.random_state = random_state

    def fit(self, features, y=None) -> RepresentationPCA:
        """Fit on a representation table (``id_str`` + features) or an array (N, D)."""
        from sklearn.decomposition import PCA, IncrementalPCA

        _, x, columns = feature_matrix(features)
        n, d = x.shape
        k = int(self.n_components)
        if not 1 <= k <= min(n, d):
            raise ValueError(
                f"n_components={k} but the table has {n} galaxies x {d} dimensions: choose "
                f"between 1 and {min(n, d)}"
            )
        if self.scale_features:
            self.feature_mean_ = x.mean(axis=0, dtype=np.float64).astype(np.float32)
            std = x.std(axis=0, dtype=np.float64)
            # constant dimensions (dead channels) carry nothing: keep them at zero
            self.feature_scale_ = np.where(std > 1e-8, std, 1.0).astype(np.float32)
            x = (x - self.feature_mean_) / self.feature_scale_
        else:
            self.feature_mean_ = self.feature_scale_ = None
        incremental = self.incremental
        if incremental is None:
            incremental = n > self.incremental_above
        if incremental:
            batch = max(int(self.batch_size), k)
            pca = IncrementalPCA(n_components=k, batch_size=batch)
            for s in range(0, n, batch):
                part = x[s : s + batch]
                if len(part) < k:  # IncrementalPCA needs >= k rows per step
                    continue
                pca.partial_fit(part)
        else:
            pca = PCA(n_components=k, random_state=self.random_state)
            pca.fit(x)
        self.pca_ = pca
        self.incremental_ = bool(incremental)
        self.n_features_in_ = d
        self.feature_names_in_ = columns
        self.explained_variance_ratio_ = np.asarray(pca.explained_variance_ratio_)
        self.scale_ = np.sqrt(pca.explained_variance_) if self.standardise else None
        return self

    def transform(self, features):
        """Project onto the components.

        Parameters
        ----------
        features : pandas.DataFrame or array-like
            A table gives a table (``id_str`` + ``pca_00 ...``); an array gives an array.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
        """
        if not hasattr(self, "pca_"):
            raise RuntimeError("this RepresentationPCA is not fitted yet: call .fit(features)")
        ids, x, _ = feature_matrix(features)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features have {x.shape[1]} dimensions but the PCA was fitted on "
                f"{self.n_features_in_}: use representations of the same model"
            )
        if self.feature_scale_ is not None:
            x = (x - self.feature_mean_) / self.feature_scale_
        z = self.pca_.transform(x).astype(np.float32)
        if self.scale_ is not None:
            z = z / self.scale_.astype(np.float32)
        if isinstance(features, pd.DataFrame):
            return _table(ids, z, "pca")
        return z

    def fit_transform(self, features, y=None):
        """Fit, then transform the same features."""
        return self.fit(features).transform(features)


def fit_pca(features, n_components: int = 10, incremental: bool | None = None, **kwargs):
    """Fit a :class:`RepresentationPCA` (see there for the keyword arguments).

    Returns
    -------
    RepresentationPCA
        Fitted; ``.transform(table)`` gives ``id_str`` + ``pca_00 ...``.
    """
    return RepresentationPCA(n_components=n_components, incremental=incremental, **kwargs).fit(
        features
    )


def plot_explained_variance(pca: RepresentationPCA, ax=None, title: str | None = None):
    """Bar per component and the cumulative share of variance kept.

    Parameters
    ----------
    pca : RepresentationPCA
        Fitted.
    ax : matplotlib Axes, optional
    title : str, optional
    crops : one framing crop per row (``images.catalogue_crops``) for images read from files,
        so thumbnails show what the model saw; None: the whole frame.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    ratio = np.asarray(pca.explained_variance_ratio_)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
    else:
        fig = ax.figure
    comps = np.arange(1, len(ratio) + 1)
    ax.bar(comps, ratio, color="tab:blue", alpha=0.7, label="each component")
    ax.plot(comps, np.cumsum(ratio), "o-", color="tab:orange", label="cumulative")
    total = float(np.sum(ratio))
    ax.annotate(
        f"{total:.0%}",
        (comps[-1], total),
        textcoords="offset points",
        xytext=(-6, 6),
        ha="right",
        color="tab:orange",
    )
    ax.set_xlabel("principal component")
    ax.set_ylabel("share of variance explained")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(comps if len(comps) <= 20 else comps[:: max(1, len(comps) // 10)])
    ax.legend(loc="center right")
    ax.set_title(title or f"{len(ratio)} components keep {total:.0%} of the variance")
    fig.tight_layout()
    return fig


def morphology_map(
    pca_2d,
    images,
    n_cells: int = 12,
    ax=None,
    figsize: float = 9.0,
    image_size: int | None = 64,
    clip_percentile: float = 1.0,
    title: str | None = "Morphology map: galaxies at their first two PCA coordinates",
    crops=None,
):
    """Galaxy thumbnails at their positions in a 2-D projection of the representation.

    The plane is cut into ``n_cells x n_cells`` cells; in each occupied cell we show the galaxy
    closest to the cell centre, so the map reads like the paper's: neighbouring thumbnails look
    alike, and directions in the plane are directions of morphology.

    Parameters
    ----------
    pca_2d : pandas.DataFrame or array-like
        (N, >= 2): the first two numeric columns (after ``id_str``) are used.
    images : uint8 array (N, H, W, 3) or sequence of N file paths
        One per row of ``pca_2d``; only the shown ones are read from disk.
    n_cells : int
        Grid cells per side.
    ax : matplotlib Axes, optional
    figsize : float
        Figure width and height in inches.
    image_size : int, optional
        Size files are read at.
    clip_percentile : float
        The map spans the [p, 100 - p] percentile range of each axis, so that a few outliers
        do not squeeze everything else into one corner.
    title : str, optional
    crops : one framing crop per row (``images.catalogue_crops``) for images read from files,
        so thumbnails show what the model saw; None: the whole frame.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    from galaxy_helpers.images import read_image

    _, xy, columns = feature_matrix(pca_2d, what="2-D coordinates")
    if xy.shape[1] < 2:
        raise ValueError(f"morphology_map needs 2 coordinates per galaxy, got {xy.shape[1]}")
    xy = xy[:, :2].astype(np.float64)
    if len(images) != len(xy):
        raise ValueError(f"{len(xy)} positions but {len(images)} images: pass one image per row")
    if int(n_cells) < 1:
        raise ValueError(f"n_cells must be at least 1, got {n_cells}")
    lo = np.percentile(xy, clip_percentile, axis=0)
    hi = np.percentile(xy, 100 - clip_percentile, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    cell = span / n_cells
    inside = np.all((xy >= lo) & (xy <= hi), axis=1)
    ij = np.clip(((xy - lo) / cell).astype(int), 0, n_cells - 1)
    centres = lo + (ij + 0.5) * cell
    dist = np.linalg.norm((xy - centres) / cell, axis=1)
    chosen = {}
    for row in np.flatnonzero(inside):
        key = (ij[row, 0], ij[row, 1])
        if key not in chosen or dist[row] < dist[chosen[key]]:
            chosen[key] = row
    if ax is None:
        fig, ax = plt.subplots(figsize=(figsize, figsize))
    else:
        fig = ax.figure
    ax.scatter(xy[:, 0], xy[:, 1], s=2, color="0.75", zorder=0)
    for (i, j), row in chosen.items():
        img = images[row]
        if isinstance(img, str | os.PathLike):
            img = read_image(img, image_size, crop=1.0 if crops is None else float(crops[row]))
        x0, y0 = lo + np.array([i, j]) * cell
        ax.imshow(
            np.asarray(img),
            extent=(x0, x0 + cell[0], y0, y0 + cell[1]),
            zorder=1,
            interpolation="antialiased",
        )
    ax.set_xlim(lo[0], lo[0] + n_cells * cell[0])
    ax.set_ylim(lo[1], lo[1] + n_cells * cell[1])
    ax.set_aspect("auto")
    ax.set_xlabel(columns[0])
    ax.set_ylabel(columns[1])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_pca_by_label(pca_2d, labels, ax=None, title: str | None = None, max_labels: int = 10):
    """Scatter of the first two PCA coordinates coloured by a label (e.g. ``truth_type``).

    Parameters
    ----------
    pca_2d : pandas.DataFrame or array-like
        (N, >= 2) coordinates; the first two feature columns are used.
    labels : sequence
        One label per row.
    ax : matplotlib Axes, optional
    title : str, optional
    max_labels : int
        The most frequent labels get their own colour; the rest are drawn grey as "other".

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    _, xy, columns = feature_matrix(pca_2d, what="2-D coordinates")
    labels = pd.Series(np.asarray(labels).astype(str))
    if len(labels) != len(xy):
        raise ValueError(f"{len(xy)} positions but {len(labels)} labels: pass one per row")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
    else:
        fig = ax.figure
    top = labels.value_counts().index[:max_labels]
    other = ~labels.isin(top).to_numpy()
    if other.any():
        ax.scatter(xy[other, 0], xy[other, 1], s=3, color="0.8", label="other")
    for name in top:
        m = (labels == name).to_numpy()
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, label=f"{name} ({m.sum()})")
    ax.set_xlabel(columns[0])
    ax.set_ylabel(columns[1])
    ax.legend(markerscale=3, fontsize=8)
    ax.set_title(title or "Representation, first two principal components")
    fig.tight_layout()
    return fig


def label_separability(features, labels, n_neighbors: int = 10, cv: int = 5, seed: int = 0):
    """Cross-validated accuracy of a k-nearest-neighbour classifier on the features.

    A single number for "galaxies of the same kind sit together in this space": what
    similarity search relies on.

    Parameters
    ----------
    features : pandas.DataFrame or array-like
        ``id_str`` + features, or (N, D).
    labels : sequence
        One label per row.
    n_neighbors : int
    cv : int
        Folds (stratified, shuffled with ``seed``).
    seed : int

    Returns
    -------
    float
        Mean accuracy over the folds.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    _, x, _ = feature_matrix(features)
    y = np.asarray(labels).astype(str)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} rows of features but {len(y)} labels")
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=n_neighbors), x, y, cv=folds)
    return float(np.mean(scores))

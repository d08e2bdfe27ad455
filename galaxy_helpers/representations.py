"""What the trained encoder "sees" (notebook 03): :func:`extract_representations` gives the
table every later tool starts from, :class:`RepresentationPCA` compresses it; also the two
baselines (:func:`pixel_features`, :func:`random_weights_model`) and notebook 03's figures."""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from galaxy_helpers import core
from galaxy_helpers.images import (
    catalogue_crops,
    load_images,
    model_crop,
    model_resample,
    read_image,
    to_tensor,
)

__all__ = ["RepresentationPCA", "catalogue_hash", "embed_images", "extract_representations"]
__all__ += ["feature_columns", "feature_matrix", "fit_pca", "label_separability", "model_hash"]
__all__ += ["morphology_map", "pixel_features", "plot_pca_by_label", "plot_explained_variance"]
__all__ += ["random_weights_model", "read_pixels"]

_CACHE_VERSION = 2  # bump when the cached table's layout changes
_PREPROCESSING_KEYS = ("architecture", "image_size", "channels", "mean", "std")
_OPTIONAL_PREPROCESSING_KEYS = ("framing", "greyscale")  # hashed only when set
#: Decoded pixels of a catalogue up to this size are kept on disk beside its representation
#: tables (61 MB for 5,000 galaxies at 64 px): every encoder and baseline that reads the same
#: catalogue at the same size and framing, in any notebook, then decodes its images once.
PIXEL_CACHE_MAX_BYTES = 512 * 2**20


def feature_matrix(features, ids=None, *, what: str = "representation table", dtype=np.float32):
    """Split a representation table (``id_str`` + numeric columns) or an array (N, D, with
    optional ``ids``) into checked ids, a ``dtype`` matrix and column names (``dim_0 ...``).
    A ValueError (``what`` names the input) for empty input, non-numeric or NaN/infinite values
    (naming rows and columns), duplicate ids, or not one id per row."""
    if isinstance(features, pd.DataFrame):
        df = features
        if "id_str" in df.columns:
            ids = df["id_str"].astype(str).to_numpy()
            df = df.drop(columns=["id_str"])
        columns = [str(c) for c in df.columns]
        bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise ValueError(
                f"{what}: columns {bad[:5]} are not numeric; keep only 'id_str' and the "
                "feature columns (feat_000..., pca_00...)"
            )
        matrix = df.to_numpy(dtype=dtype, copy=True)
    else:
        matrix = np.asarray(features, dtype=dtype)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2:
            raise ValueError(
                f"{what}: expected a 2-D array (galaxies, dimensions), got shape {matrix.shape}"
            )
        columns = [f"dim_{i}" for i in range(matrix.shape[1])]
    n_rows = matrix.shape[0]
    if n_rows == 0 or matrix.shape[1] == 0:
        raise ValueError(
            f"{what} is empty ({n_rows} rows, {len(columns)} feature columns): extract "
            "representations for at least one galaxy first"
        )
    ids = np.arange(n_rows).astype(str) if ids is None else np.asarray(ids).astype(str)
    if len(ids) != n_rows:
        raise ValueError(f"{what}: {len(ids)} ids for {n_rows} rows; pass one id per row")
    rows, cols = np.nonzero(~np.isfinite(matrix))
    if len(rows):
        examples = ", ".join(
            f"row {r} (id {str(ids[r])!r}) column {columns[c]!r}"
            for r, c in zip(rows[:5], cols[:5], strict=True)
        )
        raise ValueError(
            f"{what} contains {len(rows)} NaN or infinite values, e.g. {examples}; drop or "
            "re-extract those galaxies before searching or scoring"
        )
    id_index = pd.Index(ids)
    if not id_index.is_unique:
        dup = [str(d) for d in id_index[id_index.duplicated()].unique()[:5]]
        raise ValueError(f"{what}: duplicate ids {dup}; ids must be unique")
    return ids, np.ascontiguousarray(matrix), columns


def feature_columns(n: int, prefix: str = "feat") -> list[str]:
    """Column names ``feat_000, feat_001, ...`` for an n-dimensional representation."""
    width = max(3, len(str(n - 1)))
    return [f"{prefix}_{i:0{width}d}" for i in range(n)]


def _table(ids, matrix: np.ndarray, prefix: str) -> pd.DataFrame:
    columns = feature_columns(matrix.shape[1], prefix)
    table = pd.DataFrame(matrix.astype(np.float32, copy=False), columns=columns)
    table.insert(0, "id_str", np.asarray(ids).astype(str))
    return table


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
    absent = np.flatnonzero(~catalogue["file_loc"].astype(str).map(os.path.exists).to_numpy())
    if len(absent):
        row = int(absent[0])
        raise FileNotFoundError(
            f"{len(absent)} image files of the catalogue do not exist, e.g. row {row} "
            f"(id {catalogue['id_str'].iloc[row]!r}): {catalogue['file_loc'].iloc[row]}; fix "
            "file_loc or regenerate the images"
        )
    return catalogue


def _model(spec, metadata: dict | None = None):
    """``checkpoints.load_model``, refusing a model whose preprocessing is unknown."""
    from galaxy_helpers.checkpoints import load_model

    model, meta = load_model(spec, metadata=metadata)
    missing = [k for k in ("image_size", "channels") if meta.get(k) is None]
    if missing:
        raise ValueError(
            f"the model's metadata lacks {missing}: pass metadata={{'image_size': ..., "
            "'channels': ..., 'mean': ..., 'std': ...}} (the values it was trained with)"
        )
    return model, meta


def random_weights_model(metadata: dict, seed: int = 0):
    """The "no training" baseline: ``(model, metadata)``, an encoder-only ``GalaxyModel`` of
    ``metadata``'s architecture with random weights (``seed``) and the same preprocessing."""
    import torch

    from galaxy_helpers.models import GalaxyModel

    torch.manual_seed(int(seed))
    model = GalaxyModel(
        metadata["architecture"], schema=None, channels=int(metadata["channels"]), pretrained=False
    )
    model.metadata = meta = {**metadata, "weights": f"random (seed {seed})"}
    return model.eval(), meta


def model_hash(model, metadata: dict) -> str:
    """16 hex digits of the weights and the preprocessing: equal hash, equal representations."""
    state = sorted(model.state_dict().items())
    prep = {k: metadata.get(k) for k in _PREPROCESSING_KEYS}
    prep.update({k: metadata[k] for k in _OPTIONAL_PREPROCESSING_KEYS if metadata.get(k)})
    tensors = [t.detach().cpu().contiguous().numpy() for _, t in state]
    return core.content_key([name for name, _ in state], *tensors, str(prep))


def _file_signature(loc) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of an image file (None if missing): a replaced file is another."""
    try:
        st = os.stat(loc)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def catalogue_hash(catalogue: pd.DataFrame) -> str:
    """16 hex digits of a catalogue's ids, crops and image files (path, size, modification
    time: a replaced file is caught without reading every image)."""
    lines = []
    for gid, loc in zip(
        catalogue["id_str"].astype(str), catalogue["file_loc"].astype(str), strict=True
    ):
        sig = _file_signature(loc)
        lines.append(f"{gid}\t{loc}\t" + ("missing" if sig is None else f"{sig[0]}:{sig[1]}"))
    crops = catalogue["crop"] if "crop" in catalogue.columns else ()
    return core.content_key("\n".join(lines), np.asarray(crops, dtype=np.float64))


def _pixels_path(folder: Path, catalogue_key: str, n: int, size: int, crops, resample):
    """Where a catalogue's decoded pixels are kept (None: too big to keep)."""
    if n * size * size * 3 > PIXEL_CACHE_MAX_BYTES:
        return None
    crops = np.asarray(crops, dtype=np.float64)
    parts = (
        "decoded",
        catalogue_key,
        size,
        resample,
        crops,
        core.source_key("galaxy_helpers.images"),
    )
    return folder / "representations" / f"decoded_{core.content_key(*parts)}.npy"


def _cached_pixels(path: Path | None, shape: tuple) -> np.ndarray | None:
    if path is None or not path.exists():
        return None
    try:
        arr = np.load(path)
    except Exception:  # a corrupt cache file is rebuilt, never trusted
        arr = None
    if arr is None or arr.shape != shape or arr.dtype != np.uint8:
        path.unlink(missing_ok=True)
        return None
    return arr


def _keep_pixels(path: Path | None, arr: np.ndarray) -> None:
    if path is not None:
        with core.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)


#: Decoded catalogues this process keeps in memory (newest last, up to this many bytes), so a
#: subset read later (the labelled rows, the rest, a population) is gathered, not decoded again.
RECENT_PIXELS_MAX_BYTES = 256 * 2**20
_RECENT: OrderedDict = OrderedDict()  # (size, resample, catalogue key) -> (index, pixels)


def _file_keys(paths, crops) -> list[tuple]:
    """One ``(file, (size, mtime), crop)`` per image."""
    crops = np.round(np.asarray(crops, dtype=np.float64), 6)
    return [(str(p), _file_signature(p), float(c)) for p, c in zip(paths, crops, strict=True)]


def _remember(catalogue_key: str, keys: list[tuple], size: int, resample, arr: np.ndarray):
    if arr.nbytes > RECENT_PIXELS_MAX_BYTES:
        return
    index = {k: i for i, k in enumerate(keys) if k[1] is not None}
    _RECENT[size, resample, catalogue_key] = (index, arr.copy())  # callers may write to theirs
    _RECENT.move_to_end((size, resample, catalogue_key))
    while sum(a.nbytes for _, a in _RECENT.values()) > RECENT_PIXELS_MAX_BYTES:
        _RECENT.popitem(last=False)


def _recall(keys: list[tuple], size: int, resample) -> np.ndarray | None:
    """The images of ``keys`` gathered from a catalogue decoded earlier in this process that
    holds all of them, or None."""
    for (sz, rs, _), (index, arr) in reversed(_RECENT.items()):
        if (sz, rs) == (size, resample) and all(k in index for k in keys):
            return arr[[index[k] for k in keys]]
    return None


def _known_pixels(path: Path | None, cat_key: str, keys, size: int, resample):
    """A catalogue's pixels decoded before: gathered from this process's memory (and then kept
    on disk for the next process, if they are not there yet), or read from ``path``; None
    when they must be decoded. What comes from disk is remembered here too."""
    arr = _recall(keys, size, resample) if keys else None
    if arr is not None:
        if path is not None and not path.exists():
            _keep_pixels(path, arr)
        return arr
    arr = _cached_pixels(path, (len(keys), size, size, 3))
    if arr is not None:
        _remember(cat_key, keys, size, resample, arr)
    return arr


def read_pixels(
    catalogue: pd.DataFrame,
    size: int,
    crops,
    resample: str = "lanczos",
    progress: bool = False,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """A catalogue's images as uint8 ``(N, size, size, 3)``, read as ``images.load_images`` reads
    them (``crops``: one per row, :func:`images.catalogue_crops`): from the cache when this
    catalogue (same files, crops, size and resampling) was decoded before, here or by
    :func:`extract_representations`, else decoded and, up to :data:`PIXEL_CACHE_MAX_BYTES`, kept."""
    size = int(size)
    folder = Path(cache_dir) if cache_dir is not None else core.cache_dir()
    paths = catalogue["file_loc"].astype(str).tolist()
    if not cache:
        return load_images(paths, size, progress, crop=crops, resample=resample)
    cat_key, keys = catalogue_hash(catalogue), _file_keys(paths, crops)
    path = _pixels_path(folder, cat_key, len(catalogue), size, crops, resample)
    arr = _known_pixels(path, cat_key, keys, size, resample)
    if arr is None:
        arr = load_images(paths, size, progress, crop=crops, resample=resample)
        _keep_pixels(path, arr)
        _remember(cat_key, keys, size, resample, arr)
    return arr


def _prefetched(func, items, ahead: int):
    """Yield ``func(item)`` in order while the next ``ahead`` run in background threads."""
    items = iter(items)
    with ThreadPoolExecutor(max_workers=max(1, ahead)) as pool:
        pending = deque(pool.submit(func, item) for item in islice(items, max(1, ahead)))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(func, item) for item in islice(items, 1))
            yield result


def _precision(model, device, amp) -> tuple:
    """(device, autocast on, dtype) of an encoding pass: ``amp`` as ``TrainConfig.amp``."""
    import torch

    from galaxy_helpers.training import amp_settings

    if device is None:
        device = next(model.parameters(), torch.empty(0)).device
    return (torch.device(device), *amp_settings(amp, device))


def _encode_stream(model, metadata, batches, n_total, progress, device, desc, amp="auto"):
    import torch
    from tqdm.auto import tqdm

    device, amp_on, amp_dtype = _precision(model, device, amp)
    out = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=amp_dtype, enabled=amp_on),
        tqdm(total=n_total, desc=desc, unit="img", disable=not progress) as bar,
    ):
        for batch in batches:
            x = to_tensor(
                torch.as_tensor(batch).to(device),
                channels=int(metadata["channels"]),
                mean=metadata.get("mean"),
                std=metadata.get("std"),
                greyscale=metadata.get("greyscale") or "mean",
                channels_last=True,
            )
            out.append(model.encode(x).float().cpu().numpy())
            bar.update(len(batch))
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
    amp="auto",
    images=None,
) -> pd.DataFrame:
    """The representation table: pooled encoder output of every galaxy of a catalogue.

    Images are read at the checkpoint's size and framing in background threads (``prefetch``
    batches ahead, ``num_workers`` threads each) while the model encodes the previous batch.

    Parameters
    ----------
    model_or_checkpoint : anything ``checkpoints.load_model`` takes (``metadata`` completes it)
    catalogue : pandas.DataFrame with ``id_str`` and ``file_loc`` (optional ``crop``)
    cache : read/write ``<cache_dir>/representations/<model and catalogue hash>.parquet``
    device : torch device, default where the model's weights are
    amp : as ``TrainConfig.amp``: ``"auto"`` encodes in bfloat16 on GPUs and on CPUs with native
        bfloat16 (2x faster here; features within 0.5% of float32's), else float32. The
        precision is part of the cache key.
    images : optional, the catalogue's pixels already read at the model's size, framing and
        resampling (uint8 ``(N, size, size, 3)``), or a function returning them, called only when
        the table is not in the cache: for callers that read the same images for several models.

    Returns
    -------
    pandas.DataFrame
        ``id_str`` then ``feat_000 ... feat_<D-1>`` (float32), in catalogue order.
    """
    model, meta = _model(model_or_checkpoint, metadata)
    catalogue = _check_catalogue(catalogue)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = pixels_path = None
    size, step, crops = int(meta["image_size"]), int(batch_size), catalogue_crops(catalogue, meta)
    resample = model_resample(meta)
    if cache:
        folder = Path(cache_dir) if cache_dir is not None else core.cache_dir()
        from galaxy_helpers.training import amp_precision, numerics

        dev = _precision(model, device, amp)[0]
        precision = amp_precision(amp, dev)
        made_by = core.content_key(core.source_key(__name__), numerics(dev), length=12)
        cat_key = catalogue_hash(catalogue)
        key = f"v{_CACHE_VERSION}_{model_hash(model, meta)}_{cat_key}_{made_by}"
        key += "" if precision == "float32" else f"_{precision}"
        path = folder / "representations" / f"{key}.parquet"
        if path.exists():
            try:
                return pd.read_parquet(path)
            except Exception:  # a corrupt cache file is rebuilt, never trusted
                path.unlink(missing_ok=True)
    paths = catalogue["file_loc"].astype(str).tolist()
    if cache and images is None:  # decoded before, for another encoder or baseline?
        pixels_path = _pixels_path(folder, cat_key, len(catalogue), size, crops, resample)
        keys = _file_keys(paths, crops)
        images = _known_pixels(pixels_path, cat_key, keys, size, resample)
    decoded = {}  # batch start -> pixels (the prefetching threads finish in any order)

    def load(s):
        chunk = slice(s, s + step)
        arr = load_images(paths[chunk], size, False, int(num_workers), crops[chunk], resample)
        if pixels_path is not None:
            decoded[s] = arr
        return arr

    if images is None:
        batches = _prefetched(load, range(0, len(paths), step), int(prefetch))
    else:
        arr = images() if callable(images) else images
        if getattr(arr, "shape", None) != (len(paths), size, size, 3) or arr.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 ({len(paths)}, {size}, {size}, 3), one per catalogue row "
                f"at the model's size; got {getattr(arr, 'dtype', type(arr).__name__)} "
                f"{getattr(arr, 'shape', '')}"
            )
        batches = (arr[s : s + step] for s in range(0, len(paths), step))
    was_training = model.training
    model.eval()
    try:
        matrix = _encode_stream(
            model, meta, batches, len(paths), progress, device, "Extracting", amp
        )
    finally:
        model.train(was_training)
    table = _table(catalogue["id_str"], matrix, "feat")
    if decoded:  # kept for the next encoder of this catalogue (read_pixels)
        pixels = np.concatenate([decoded[s] for s in sorted(decoded)])
        _keep_pixels(pixels_path, pixels)
        _remember(cat_key, keys, size, resample, pixels)
    if path is not None:
        with core.atomic_path(path) as tmp:
            table.to_parquet(tmp, index=False)
    return table


def embed_images(
    images, model, metadata: dict | None = None, batch_size: int = 64, amp="auto"
) -> np.ndarray:
    """Representations (float32 ``(N, D)``) of file paths or a uint8 array ``(N, H, W, 3)`` at
    the model's size; ``model`` is anything ``checkpoints.load_model`` takes; ``amp`` as in
    :func:`extract_representations`."""
    model, meta = _model(model, metadata)
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
    return _encode_stream(model, meta, chunks, len(arr), False, None, "Embedding", amp)


def pixel_features(
    catalogue: pd.DataFrame, image_size: int = 32, channels: int = 3, progress: bool = True
) -> pd.DataFrame:
    """Raw pixels in [0, 1] at ``image_size`` (``channels=1``: grey) as a table ``id_str`` +
    ``pix_00000 ...``: the baseline that knows nothing about galaxies."""
    catalogue = _check_catalogue(catalogue)
    arr = load_images(catalogue["file_loc"].astype(str).tolist(), image_size, progress=progress)
    x = arr.astype(np.float32) / 255.0
    if channels == 1:
        x = x.mean(axis=3)
    return _table(catalogue["id_str"], x.reshape(len(x), -1), "pix")


class RepresentationPCA(TransformerMixin, BaseEstimator):
    """The course's one scaling + PCA path, a scikit-learn Pipeline keeping galaxy ids:
    ``StandardScaler`` (``scale_features``) -> ``PCA`` or ``IncrementalPCA`` ->
    ``StandardScaler`` (``standardise``, the paper's anomaly search).

    Parameters
    ----------
    n_components : components kept (10 for similarity search, 40 for anomalies)
    incremental : ``IncrementalPCA`` (``batch_size`` rows a step); None: above incremental_above
    random_state : seed of the randomised solver
    dtype : the arithmetic's precision (anomaly search uses float64)

    Attributes
    ----------
    pipeline_, pca_, explained_variance_ratio_ : the fitted Pipeline, its PCA step, its ratios

    Examples
    --------
    >>> pca = RepresentationPCA(n_components=10, scale_features=True).fit(table)  # doctest: +SKIP
    >>> coords = pca.transform(table)  # id_str + pca_000 ... pca_009            # doctest: +SKIP
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
        dtype=np.float32,
    ):
        self.n_components = n_components
        self.incremental = incremental
        self.batch_size = batch_size
        self.standardise = standardise
        self.incremental_above = incremental_above
        self.random_state = random_state
        self.scale_features = scale_features
        self.dtype = dtype

    def _start(self, features):
        from sklearn.decomposition import PCA, IncrementalPCA
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        _, x, columns = feature_matrix(features, dtype=self.dtype)
        n, d = x.shape
        k = int(self.n_components)
        if not 1 <= k <= min(n, d):
            raise ValueError(
                f"n_components={k} but the table has {n} galaxies x {d} dimensions: choose "
                f"between 1 and {min(n, d)}"
            )
        incremental = n > self.incremental_above if self.incremental is None else self.incremental
        pca = (
            IncrementalPCA(n_components=k, batch_size=max(int(self.batch_size), k))
            if incremental
            else PCA(n_components=k, random_state=self.random_state)
        )
        steps = [("scale", StandardScaler())] if self.scale_features else []
        steps.append(("pca", pca))
        if self.standardise:
            steps.append(("standardise", StandardScaler()))
        self.pipeline_ = Pipeline(steps)
        self.incremental_ = bool(incremental)
        self.n_features_in_ = d
        self.feature_names_in_ = columns
        return x

    def _done(self):
        self.pca_ = self.pipeline_.named_steps["pca"]
        self.explained_variance_ratio_ = np.asarray(self.pca_.explained_variance_ratio_)
        return self

    def fit(self, features, y=None) -> RepresentationPCA:
        """Fit on a representation table (``id_str`` + features) or an array (N, D)."""
        x = self._start(features)
        self.pipeline_.fit(x)
        return self._done()

    def transform(self, features):
        """Project onto the components (a table gives ``id_str`` + ``pca_000 ...``)."""
        if not hasattr(self, "pca_"):
            raise RuntimeError("this RepresentationPCA is not fitted yet: call .fit(features)")
        ids, x, _ = feature_matrix(features, dtype=self.dtype)
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"features have {x.shape[1]} dimensions but the PCA was fitted on "
                f"{self.n_features_in_}: use representations of the same model"
            )
        return self._out(features, ids, self.pipeline_.transform(x))

    def fit_transform(self, features, y=None):
        """Fit, and the fitted features' coordinates."""
        x = self._start(features)
        z = self.pipeline_.fit_transform(x)
        self._done()
        ids = features["id_str"] if isinstance(features, pd.DataFrame) else None
        return self._out(features, ids, z)

    def _out(self, features, ids, z):
        z = z.astype(self.dtype, copy=False)
        return _table(ids, z, "pca") if isinstance(features, pd.DataFrame) else z


def fit_pca(features, n_components: int = 10, incremental: bool | None = None, **kwargs):
    """A fitted :class:`RepresentationPCA` (see there for the keyword arguments)."""
    pca = RepresentationPCA(n_components=n_components, incremental=incremental, **kwargs)
    return pca.fit(features)


def plot_explained_variance(pca: RepresentationPCA, ax=None, title: str | None = None):
    """Share of variance per component of a fitted :class:`RepresentationPCA`, and cumulative
    (a Figure)."""
    import matplotlib.pyplot as plt

    ratio = np.asarray(pca.explained_variance_ratio_)
    fig, ax = plt.subplots(figsize=(6.5, 3.8)) if ax is None else (ax.figure, ax)
    comps = np.arange(1, len(ratio) + 1)
    ax.bar(comps, ratio, color="tab:blue", alpha=0.7, label="each component")
    ax.plot(comps, np.cumsum(ratio), "o-", color="tab:orange", label="cumulative")
    total = float(np.sum(ratio))
    style = dict(textcoords="offset points", xytext=(-6, 6), ha="right", color="tab:orange")
    ax.annotate(f"{total:.0%}", (comps[-1], total), **style)
    ax.set(xlabel="principal component", ylabel="share of variance explained", ylim=(0, 1.05))
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
    """Galaxy thumbnails at their positions in a 2-D projection, as the paper's map: each of
    ``n_cells x n_cells`` cells shows the galaxy closest to its centre. Returns a Figure.

    Parameters
    ----------
    pca_2d : table or array (N, >= 2); the first two feature columns are used
    images : uint8 array (N, H, W, 3) or N file paths (read at ``image_size``, framed by ``crops``)
    clip_percentile : the map spans the [p, 100 - p] percentiles, so outliers squeeze nothing
    """
    import matplotlib.pyplot as plt

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
    fig, ax = plt.subplots(figsize=(figsize, figsize)) if ax is None else (ax.figure, ax)
    ax.scatter(xy[:, 0], xy[:, 1], s=2, color="0.75", zorder=0)
    for (i, j), row in chosen.items():
        img = images[row]
        if isinstance(img, str | os.PathLike):
            img = read_image(img, image_size, crop=1.0 if crops is None else float(crops[row]))
        x0, y0 = lo + np.array([i, j]) * cell
        extent = (x0, x0 + cell[0], y0, y0 + cell[1])
        ax.imshow(np.asarray(img), extent=extent, zorder=1, interpolation="antialiased")
    top = lo + n_cells * cell
    ax.set(xlim=(lo[0], top[0]), ylim=(lo[1], top[1]), aspect="auto")
    ax.set(xlabel=columns[0], ylabel=columns[1])
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_pca_by_label(pca_2d, labels, ax=None, title: str | None = None, max_labels: int = 10):
    """Scatter of the first two PCA coordinates coloured by ``labels`` (the ``max_labels``
    commonest; the rest grey "other"). Returns a Figure."""
    import matplotlib.pyplot as plt

    _, xy, columns = feature_matrix(pca_2d, what="2-D coordinates")
    labels = pd.Series(np.asarray(labels).astype(str))
    if len(labels) != len(xy):
        raise ValueError(f"{len(xy)} positions but {len(labels)} labels: pass one per row")
    fig, ax = plt.subplots(figsize=(6.5, 5.5)) if ax is None else (ax.figure, ax)
    top = labels.value_counts().index[:max_labels]
    other = ~labels.isin(top).to_numpy()
    if other.any():
        ax.scatter(xy[other, 0], xy[other, 1], s=3, color="0.8", label="other")
    for name in top:
        m = (labels == name).to_numpy()
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, label=f"{name} ({m.sum()})")
    ax.set(xlabel=columns[0], ylabel=columns[1])
    ax.legend(markerscale=3, fontsize=8)
    ax.set_title(title or "Representation, first two principal components")
    fig.tight_layout()
    return fig


def label_separability(features, labels, n_neighbors: int = 10, cv: int = 5, seed: int = 0):
    """Mean accuracy over ``cv`` stratified folds (shuffled with ``seed``) of a k-nearest-
    neighbour classifier of ``labels``: do galaxies of the same kind sit together?"""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    _, x, _ = feature_matrix(features)
    y = np.asarray(labels).astype(str)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} rows of features but {len(y)} labels")
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
    scores = cross_val_score(KNeighborsClassifier(n_neighbors=n_neighbors), x, y, cv=folds)
    return float(np.mean(scores))

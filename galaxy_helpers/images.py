"""Galaxy images of any kind -> square uint8 ``(H, W, 3)`` (:func:`read_image`) -> float tensors
(:func:`to_tensor`). 16/32-bit greyscale is scaled on the fixed ``SIXTEEN_BIT_FULL_SCALE`` (never
by each image's maximum, so one hot pixel cannot darken a galaxy), float images on [0, 1].
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

__all__ = [
    "ImageReadError", "MIN_IMAGE_SIDE", "SIXTEEN_BIT_FULL_SCALE", "FITS_SUFFIXES",
    "allow_large_images", "size_problem", "bomb_problem", "check_crop", "read_image",
    "load_images", "catalogue_crops", "model_crop", "model_resample", "to_tensor", "save_image",
]  # fmt: skip

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")
MIN_IMAGE_SIDE = 8  # the smallest model input; a smaller image is a placeholder or broken cutout
SIXTEEN_BIT_FULL_SCALE = 65535  # reads as 255 in 16-bit (and 32-bit integer) greyscale
_INTEGER_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageReadError(OSError):
    """An image file could not be read; the message names the file and what to do."""


def _fits_to_array(path: Path) -> np.ndarray:
    try:
        from astropy.io import fits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImageReadError(
            f"{path}: FITS images need astropy (pip install astropy), or convert them to PNG/JPEG."
        ) from err
    with fits.open(path) as hdul:
        data = next((h.data for h in hdul if getattr(h, "data", None) is not None), None)
    if data is None:
        raise ImageReadError(f"{path}: no image data in any FITS extension.")
    data = np.nan_to_num(np.asarray(data, dtype=np.float32))
    if data.ndim == 3 and data.shape[0] in (1, 3):  # bands first
        data = np.moveaxis(data, 0, -1)
    lo, hi = np.percentile(data, [1, 99.5])
    scaled = np.arcsinh(np.clip((data - lo) / max(hi - lo, 1e-12), 0, None) * 10) / np.arcsinh(10)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in _INTEGER_GREY or img.mode == "F":  # 16/32-bit integer or float greyscale
        full = SIXTEEN_BIT_FULL_SCALE if img.mode in _INTEGER_GREY else 1.0
        arr = np.asarray(img, dtype=np.float64)
        arr = np.rint(np.clip(np.nan_to_num(arr), 0, full) * (255.0 / full)).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (0, 0, 0))
        background.paste(img, mask=img.getchannel("A"))
        img = background
    elif img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def allow_large_images(max_pixels: int | None) -> int | None:
    """Let :func:`read_image` open images of up to ``max_pixels`` pixels; returns the old limit.

    Sets PIL's ``Image.MAX_IMAGE_PIXELS`` for the whole process; ``None`` lifts it (only for
    files you trust). Restore it with ``allow_large_images(previous)`` when done.
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels or max_pixels < 1:
            raise ValueError(f"max_pixels must be a whole number >= 1 or None; got {max_pixels!r}")
        max_pixels = int(max_pixels)
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    return previous


_TOO_LARGE_ACTION = (
    "if the file is meant to be this big, call galaxy_helpers.images.allow_large_images({}) "
    "first; otherwise shrink the file or drop its row"
)


def size_problem(width: int, height: int) -> tuple[str, str] | None:
    """``(problem, action)`` when :func:`read_image` refuses an image of this size, else None."""
    limit = Image.MAX_IMAGE_PIXELS
    n = int(width) * int(height)
    if limit is not None and n > limit:
        problem = (
            f"image too large: {width} x {height} = {n:,} pixels, over the {limit:,} that PIL "
            "opens safely (a possible decompression bomb)"
        )
        return problem, _TOO_LARGE_ACTION.format(n)
    if min(width, height) < MIN_IMAGE_SIDE:
        return (
            f"image too small: {width} x {height} pixels, under the {MIN_IMAGE_SIDE} px "
            "that read_image needs on the shorter side",
            "re-make the cutout at its real size (Galaxy Zoo cutouts are 256 to 424 px) "
            "or drop its row",
        )
    return None


def bomb_problem(err: Exception) -> tuple[str, str]:
    """``(problem, action)`` for PIL's ``DecompressionBombError``/``Warning`` ``err``."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    return f"image too large ({err})", _TOO_LARGE_ACTION.format(found[1] if found else "max_pixels")


def _refuse(path: Path, found: tuple[str, str] | None) -> None:
    if found is not None:
        raise ImageReadError(f"{path}: {found[0]}. What to do: {found[1]}.")


def _centre_crop_square(arr: np.ndarray, crop: float = 1.0) -> np.ndarray:
    h, w = arr.shape[:2]
    side = max(1, int(round(min(h, w) * crop)))
    top, left = (h - side) // 2, (w - side) // 2
    return arr[top : top + side, left : left + side]


def check_crop(crop, where: str = "crop") -> float:
    """``crop`` as a float in (0, 1], or a ValueError naming ``where`` it came from."""
    try:
        value = float(crop)
    except (TypeError, ValueError):
        value = float("nan")
    if not (0.0 < value <= 1.0):
        raise ValueError(
            f"{where} must be a fraction of the frame in (0, 1] (1 = the whole frame); got {crop!r}."
        )
    return value


_RESAMPLE = ("lanczos", "zoobot")
#: ITU-R 601-2 luma weights: PIL's ``convert("L")``, so torchvision's ``Grayscale`` and Zoobot's.
_LUMA = (0.299, 0.587, 0.114)


def _check_resample(resample) -> str:
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {_RESAMPLE}; got {resample!r}.")
    return resample


def _zoobot_resize(arr: np.ndarray, size: int | None, crop: float) -> np.ndarray:
    """Zoobot's inference view (galaxy-datasets 0.0.25 ``minimal_view_config()``): the PIL calls
    torchvision makes for a bilinear zoom by ``1 / crop`` (float32 scale), then a resize."""
    img = Image.fromarray(arr)
    side = arr.shape[0]
    if crop != 1.0:
        a = 1.0 / float(np.float32(1.0 / crop))  # torchvision's inverse matrix: cos(0) / scale
        c = side * 0.5
        matrix = (a, 0.0, c - a * c, 0.0, a, c - a * c)
        img = img.transform((side, side), Image.AFFINE, matrix, Image.BILINEAR, fillcolor=0)
    if size is not None and size != side:
        img = img.resize((int(size), int(size)), Image.BILINEAR)
    return np.asarray(img)


def read_image(
    path: str | os.PathLike,
    size: int | None = None,
    crop: float = 1.0,
    resample: str = "lanczos",
) -> np.ndarray:
    """Read one image as uint8 ``(H, W, 3)``: converted to RGB, centre-cropped to a square.

    Parameters
    ----------
    path : str or path-like
        Image file (PNG, JPEG, ... or FITS, read with astropy).
    size, crop : int or None, float
        Output side (None keeps the square's); fraction of the square's side kept (1: all).
    resample : {"lanczos", "zoobot"}
        Cut the crop out and resize with Lanczos, or Zoobot's bilinear zoom and resize
        (pixel for pixel its inference transform; see :func:`model_resample`).

    Raises
    ------
    ImageReadError
        Naming the file when it is missing, unreadable, too large or too small.
    """
    path = Path(path)
    crop = check_crop(crop)
    resample = _check_resample(resample)
    if size is not None and (int(size) != size or size < 8):
        raise ValueError(f"Image size must be a whole number of pixels >= 8; got {size!r}.")
    if not path.exists():
        raise ImageReadError(f"{path}: file not found. Check the catalogue's file_loc column.")
    if path.name.lower().endswith(FITS_SUFFIXES):
        arr = _fits_to_array(path)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.shape[2] != 3:
            arr = np.repeat(arr.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    else:
        try:
            with Image.open(path) as img:
                _refuse(path, size_problem(*img.size))  # before decoding: a bomb is never expanded
                img.load()
                arr = _to_rgb_uint8(img)
        except ImageReadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            _refuse(path, bomb_problem(err))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(
                f"{path}: cannot read image ({err}). The file may be truncated or not an image; "
                "re-download it or remove its row from the catalogue."
            ) from err
    _refuse(path, size_problem(arr.shape[1], arr.shape[0]))
    if resample == "zoobot":
        return np.ascontiguousarray(_zoobot_resize(_centre_crop_square(arr), size, crop))
    arr = _centre_crop_square(arr, crop)
    if size is not None and arr.shape[0] != size:
        arr = np.asarray(Image.fromarray(arr).resize((int(size), int(size)), Image.LANCZOS))
    return np.ascontiguousarray(arr)


def load_images(
    paths: Sequence[str | os.PathLike],
    size: int,
    progress: bool = True,
    num_threads: int | None = None,
    crop: float | Sequence[float] = 1.0,
    resample: str = "lanczos",
) -> np.ndarray:
    """Read many images (in threads) into one uint8 array ``(N, size, size, 3)``; ``crop`` (one
    value, or one per path: :func:`catalogue_crops`) and ``resample`` as in :func:`read_image`."""
    paths = list(paths)
    resample = _check_resample(resample)
    if np.ndim(crop) == 0:
        crops = np.full(len(paths), check_crop(crop), dtype=np.float64)
    else:
        crops = np.asarray(crop, dtype=np.float64)
        if crops.shape != (len(paths),):
            raise ValueError(f"crop has {crops.size} values for {len(paths)} images.")
        for value in np.unique(crops):
            check_crop(value)
    out = np.empty((len(paths), int(size), int(size), 3), dtype=np.uint8)

    def work(i):
        out[i] = read_image(paths[i], size, crops[i], resample)

    with ThreadPoolExecutor(num_threads or min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = pool.map(work, range(len(paths)))
        quiet = not progress or len(paths) <= 500
        list(tqdm(results, desc="Reading images", total=len(paths), disable=quiet))
    return out


def model_crop(metadata: dict | None) -> float:
    """The centre crop a model applies to every input: ``metadata["framing"]["crop"]`` (1.0)."""
    crop = ((metadata or {}).get("framing") or {}).get("crop", 1.0)
    return check_crop(crop, "the model's framing crop")


def model_resample(metadata: dict | None) -> str:
    """A model's :func:`read_image` resampling: ``metadata["framing"]["resample"]`` (lanczos)."""
    return _check_resample(((metadata or {}).get("framing") or {}).get("resample", "lanczos"))


def catalogue_crops(catalogue, metadata: dict | None = None) -> np.ndarray:
    """One framing crop per catalogue row: its ``crop`` column (its survey's framing, default 1)
    times the model's :func:`model_crop`, so rows of several surveys can share a catalogue.

    Parameters
    ----------
    catalogue : pandas.DataFrame
        A catalogue, ``crop`` column optional.
    metadata : dict, optional
        The model's metadata (checkpoint JSON); None for the whole frame.

    Returns
    -------
    numpy.ndarray
        One float per row, each in (0, 1].
    """
    base = model_crop(metadata)
    if "crop" not in getattr(catalogue, "columns", ()):
        return np.full(len(catalogue), base, dtype=np.float64)
    values = np.asarray(catalogue["crop"], dtype=np.float64)
    if (bad := np.flatnonzero(~((values > 0) & (values <= 1)))).size:
        row = int(bad[0])
        raise ValueError(
            f"catalogue column 'crop', row {row}: {catalogue['crop'].iloc[row]!r} is not a "
            "fraction of the frame in (0, 1]; use 1 for the whole frame."
        )
    return values * base


def to_tensor(
    batch: np.ndarray,
    channels: int = 3,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    greyscale: str = "mean",
    channels_last: bool = False,
):
    """uint8 images ``(N, H, W, 3)`` or ``(H, W, 3)`` -> float32 tensor ``(N, C, H, W)``.

    Pixels are scaled to [0, 1], then ``(x - mean) / std`` (per channel or scalar) when given;
    ``channels=1`` averages the colours, or with ``greyscale="luma"`` weighs them as PIL's
    ``convert("L")`` (Zoobot's greyscale). A torch uint8 tensor stays on its device.
    ``channels_last``: NHWC memory, the images' own order, so no copy is made for it; CPU
    convolutions run on it 1.4x faster and max-pooling 10x (benchmarks/bench_channels_last.py).
    Every encoder input of the helpers uses it.
    """
    import torch

    t = torch.as_tensor(batch)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"Expected uint8 images shaped (N, H, W, 3); got {tuple(t.shape)}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (colour); got {channels}.")
    if greyscale not in ("mean", "luma"):
        raise ValueError(f"greyscale must be 'mean' or 'luma'; got {greyscale!r}.")
    t = t.permute(0, 3, 1, 2).float().div_(255.0)
    if channels == 1 and greyscale == "luma":
        w = torch.as_tensor(_LUMA, dtype=t.dtype, device=t.device).reshape(1, 3, 1, 1)
        t = (t * w).sum(dim=1, keepdim=True)
    elif channels == 1:
        t = t.mean(dim=1, keepdim=True)
    if mean is not None:
        t = t - torch.as_tensor(mean, dtype=t.dtype, device=t.device).reshape(1, -1, 1, 1)
    if std is not None:
        t = t / torch.as_tensor(std, dtype=t.dtype, device=t.device).reshape(1, -1, 1, 1)
    return t.contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


def save_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W, 3)`` array as an image file (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path

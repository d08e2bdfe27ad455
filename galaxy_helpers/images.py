"""Reading galaxy images of any kind into one uint8 layout, and batches into tensors.

Every image that reaches a model passes through :func:`read_image` (any file -> square
uint8 ``(H, W, 3)``) and :func:`to_tensor` (uint8 batch -> normalised float tensor), so
training, representation extraction, search and finetuning see identical pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageReadError", "read_image", "load_images", "to_tensor", "save_image"]

_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")


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
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3 and data.shape[0] in (1, 3):  # bands first
        data = np.moveaxis(data, 0, -1)
    data = np.nan_to_num(data)
    lo, hi = np.percentile(data, [1, 99.5])
    scaled = np.arcsinh(np.clip((data - lo) / max(hi - lo, 1e-12), 0, None) * 10) / np.arcsinh(10)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float greyscale
        arr = np.asarray(img, dtype=np.float32)
        hi = arr.max()
        arr = (arr / hi * 255) if hi > 0 else arr
        arr = np.clip(arr, 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (0, 0, 0))
        background.paste(img, mask=img.getchannel("A"))
        img = background
    elif img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def _centre_crop_square(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    if h == w:
        return arr
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return arr[top : top + side, left : left + side]


def read_image(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read one image as uint8 ``(H, W, 3)``.

    Greyscale, RGBA, 16-bit and palette images are converted to RGB; non-square images are
    centre-cropped to a square; FITS files are read with astropy when it is installed.

    Parameters
    ----------
    path : image file (PNG, JPEG, ... or FITS).
    size : resize to ``size x size`` pixels (Lanczos); None keeps the (square) size.

    Raises
    ------
    ImageReadError naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    if size is not None and (int(size) != size or size < 8):
        raise ValueError(f"Image size must be a whole number of pixels >= 8; got {size!r}.")
    if not path.exists():
        raise ImageReadError(f"{path}: file not found. Check the catalogue's file_loc column.")
    if path.name.lower().endswith(_FITS_SUFFIXES):
        arr = _fits_to_array(path)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.shape[2] != 3:
            arr = np.repeat(arr.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    else:
        try:
            with Image.open(path) as img:
                img.load()
                arr = _to_rgb_uint8(img)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(
                f"{path}: cannot read image ({err}). The file may be truncated or not an image; "
                "re-download it or remove its row from the catalogue."
            ) from err
    arr = _centre_crop_square(arr)
    if size is not None and arr.shape[0] != size:
        arr = np.asarray(Image.fromarray(arr).resize((int(size), int(size)), Image.LANCZOS))
    return np.ascontiguousarray(arr)


def load_images(
    paths: Sequence[str | os.PathLike],
    size: int,
    progress: bool = True,
    num_threads: int | None = None,
) -> np.ndarray:
    """Read many images into one uint8 array ``(N, size, size, 3)``.

    Decoding runs in a thread pool (PIL releases the GIL while decoding). Errors name the
    failing file.
    """
    paths = list(paths)
    out = np.empty((len(paths), int(size), int(size), 3), dtype=np.uint8)
    threads = num_threads or min(8, (os.cpu_count() or 1) * 2)

    def work(i):
        out[i] = read_image(paths[i], size)

    iterator = range(len(paths))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(work, iterator)
        if progress and len(paths) > 500:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(paths), desc="Reading images", unit="img")
        for _ in results:
            pass
    return out


def to_tensor(
    batch: np.ndarray,
    channels: int = 3,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
):
    """uint8 images ``(N, H, W, 3)`` (or one ``(H, W, 3)``) -> float32 tensor ``(N, C, H, W)``.

    Pixels are scaled to [0, 1]; ``channels=1`` averages the three colours (as the paper's
    greyscale models do); ``mean``/``std`` (per channel or scalar) normalise afterwards.
    Accepts a torch uint8 tensor too (kept on its device).
    """
    import torch

    t = torch.as_tensor(batch)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"Expected uint8 images shaped (N, H, W, 3); got {tuple(t.shape)}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (colour); got {channels}.")
    t = t.permute(0, 3, 1, 2).float().div_(255.0)
    if channels == 1:
        t = t.mean(dim=1, keepdim=True)
    if mean is not None:
        m = torch.as_tensor(mean, dtype=t.dtype, device=t.device).reshape(1, -1, 1, 1)
        t = t - m
    if std is not None:
        s = torch.as_tensor(std, dtype=t.dtype, device=t.device).reshape(1, -1, 1, 1)
        t = t / s
    return t.contiguous()


def save_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W, 3)`` array as an image file (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path

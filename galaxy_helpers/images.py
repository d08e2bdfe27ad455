"""Reading galaxy images of any kind into one uint8 layout, and batches into tensors.

Every image that reaches a model passes through :func:`read_image` (any file -> square uint8
``(H, W, 3)``) and :func:`to_tensor` (uint8 batch -> normalised float tensor), so training,
representations, search and finetuning see identical pixels. Odd files are refused with an
:class:`ImageReadError` naming the file (so ``train(skip_bad_images=True)`` skips it and
``validate_catalogue`` lists it) or converted the same way for every image of a catalogue:

- more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 million): refused before decoding,
  where PIL would only warn too (:func:`allow_large_images` raises the limit on purpose);
- a shorter side under ``MIN_IMAGE_SIDE`` (8 px, the smallest model input): refused, as a
  placeholder or broken cutout, never silently a flat "galaxy";
- 16/32-bit integer greyscale: scaled on a fixed full scale, 0 -> 0 and
  ``SIXTEEN_BIT_FULL_SCALE`` (65535) -> 255, never by each image's own maximum (so one hot pixel
  cannot darken a galaxy; ``v * 257`` reads back as ``v``); float images span [0, 1]; values
  beyond the scale are clipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageReadError", "MIN_IMAGE_SIDE", "SIXTEEN_BIT_FULL_SCALE", "FITS_SUFFIXES",
    "allow_large_images", "size_problem", "bomb_problem", "check_crop", "read_image",
    "load_images", "catalogue_crops", "model_crop", "model_resample", "to_tensor", "save_image",
]  # fmt: skip

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")
#: Images whose shorter side is under this many pixels are refused by :func:`read_image`.
MIN_IMAGE_SIDE = 8
#: The integer value that reads as 255 in 16-bit (and 32-bit integer) greyscale images.
SIXTEEN_BIT_FULL_SCALE = 65535
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
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 3 and data.shape[0] in (1, 3):  # bands first
        data = np.moveaxis(data, 0, -1)
    data = np.nan_to_num(data)
    lo, hi = np.percentile(data, [1, 99.5])
    scaled = np.arcsinh(np.clip((data - lo) / max(hi - lo, 1e-12), 0, None) * 10) / np.arcsinh(10)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in _INTEGER_GREY or img.mode == "F":  # 16/32-bit integer or float greyscale
        # A fixed full scale, the same for every image (see the module docstring).
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

    Sets PIL's own ``Image.MAX_IMAGE_PIXELS``, which guards every PIL reader of the process
    (the only state involved); ``None`` lifts it (only for files you trust). Restore it::

        previous = images.allow_large_images(200_000_000)
        try:
            big = images.read_image("mosaic.png", size=424)
        finally:
            images.allow_large_images(previous)
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or int(max_pixels) != max_pixels or max_pixels < 1:
            raise ValueError(f"max_pixels must be a whole number >= 1 or None; got {max_pixels!r}")
        max_pixels = int(max_pixels)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    return previous


def size_problem(width: int, height: int) -> tuple[str, str] | None:
    """``(problem, action)`` when :func:`read_image` refuses an image of this size, else None."""
    limit = Image.MAX_IMAGE_PIXELS
    n = int(width) * int(height)
    if limit is not None and n > limit:
        return (
            f"image too large: {width} x {height} = {n:,} pixels, over the {limit:,} that PIL "
            "opens safely (a possible decompression bomb)",
            f"if the file is meant to be this big, call "
            f"galaxy_helpers.images.allow_large_images({n}) first; otherwise shrink the file "
            "or drop its row",
        )
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
    n = int(found.group(1)) if found else None
    return (
        f"image too large ({err})",
        f"if the file is meant to be this big, call galaxy_helpers.images.allow_large_images("
        f"{n if n else 'max_pixels'}) first; otherwise shrink the file or drop its row",
    )


def _refuse_size(path: Path, width: int, height: int) -> None:
    found = size_problem(width, height)
    if found is not None:
        problem, action = found
        raise ImageReadError(f"{path}: {problem}. What to do: {action}.")


def _centre_crop_square(arr: np.ndarray, crop: float = 1.0) -> np.ndarray:
    h, w = arr.shape[:2]
    side = min(h, w)
    if crop != 1.0:
        side = max(1, int(round(side * crop)))
    if h == w == side:
        return arr
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
    """Zoobot's inference view of a square uint8 image (galaxy-datasets 0.0.25,
    ``transforms.get_galaxy_transform(minimal_view_config())`` on a PIL image): a bilinear zoom
    by ``1 / crop`` about the centre at the image's own size (``T.RandomAffine``, whose scale
    torchvision draws as a float32), then a bilinear resize (``T.Resize(antialias=True)``,
    PIL's filtered resize). The same PIL calls torchvision makes, so the pixels are identical.
    """
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
    path : image file (PNG, JPEG, ... or FITS, read with astropy when it is installed).
    size : resize to ``size x size`` pixels; None keeps the (square) size.
    crop : framing: the fraction of the square frame's side kept around its centre before
        resizing (1 = the whole frame; 0.5 = the central half). See :func:`catalogue_crops`.
    resample : ``"lanczos"`` (default): cut the central ``crop`` out (whole pixels) and resize
        it with Lanczos. ``"zoobot"``: Zoobot's own resampling of the same framing (a bilinear
        zoom by ``1 / crop``, then a bilinear resize; pixel for pixel Zoobot's inference
        transform), which a model's metadata asks for (:func:`model_resample`).

    Raises
    ------
    ImageReadError naming the file when it is missing, truncated or not an image, has more
    pixels than PIL's limit (PIL's bomb errors and warnings never escape) or a shorter side
    under ``MIN_IMAGE_SIDE`` pixels.
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
                _refuse_size(path, *img.size)  # before decoding: a bomb is never expanded
                img.load()
                arr = _to_rgb_uint8(img)
        except ImageReadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            problem, action = bomb_problem(err)
            raise ImageReadError(f"{path}: {problem}. What to do: {action}.") from err
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ImageReadError(
                f"{path}: cannot read image ({err}). The file may be truncated or not an image; "
                "re-download it or remove its row from the catalogue."
            ) from err
    _refuse_size(path, arr.shape[1], arr.shape[0])
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
    """Read many images into one uint8 array ``(N, size, size, 3)``.

    Decoding runs in a thread pool (PIL releases the GIL while decoding). Errors name the
    failing file. ``crop`` is the framing of :func:`read_image`: one value for every image, or
    one per path (as :func:`catalogue_crops` returns); ``resample`` its resampling (the
    model's :func:`model_resample`).
    """
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
    threads = num_threads or min(8, (os.cpu_count() or 1) * 2)

    def work(i):
        out[i] = read_image(paths[i], size, crops[i], resample)

    iterator = range(len(paths))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(work, iterator)
        if progress and len(paths) > 500:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(paths), desc="Reading images", unit="img")
        for _ in results:
            pass
    return out


def model_crop(metadata: dict | None) -> float:
    """The centre crop a model applies to every input: ``metadata["framing"]["crop"]``.

    A checkpoint records its framing (as Zoobot records its fixed central crop), so every
    loader of images for that model sees galaxies at the scale it was trained on. Absent
    framing means the whole frame (1.0).
    """
    framing = (metadata or {}).get("framing") or {}
    return check_crop(framing.get("crop", 1.0), "the model's framing crop")


def model_resample(metadata: dict | None) -> str:
    """How a model's framing is resampled: ``metadata["framing"]["resample"]``.

    ``"lanczos"`` (absent: every course checkpoint) or ``"zoobot"`` (the Zoobot encoders:
    Zoobot's own bilinear zoom and resize, see :func:`read_image`). Pass it to
    :func:`load_images` with the crops of :func:`catalogue_crops`.
    """
    framing = (metadata or {}).get("framing") or {}
    return _check_resample(framing.get("resample", "lanczos"))


def catalogue_crops(catalogue, metadata: dict | None = None) -> np.ndarray:
    """One framing crop per catalogue row: the row's survey framing times the model's.

    A catalogue's optional ``crop`` column is the fraction of each image's side that shows the
    galaxy at the reference framing (synthetic sky and DECaLS cutouts: 1; the Kaggle Galaxy Zoo
    2 cutouts, whose galaxy sits in the central third: 0.5); the model's own framing
    (:func:`model_crop`) applies on top, so rows of several surveys can share a catalogue.

    Parameters
    ----------
    catalogue : pandas.DataFrame (the catalogue contract; ``crop`` optional)
    metadata : the model's metadata (checkpoint JSON), or None for the whole frame.

    Returns
    -------
    numpy.ndarray of float, one per row, each in (0, 1].
    """
    n = len(catalogue)
    base = model_crop(metadata)
    if "crop" not in getattr(catalogue, "columns", ()):
        return np.full(n, base, dtype=np.float64)
    values = np.asarray(catalogue["crop"], dtype=np.float64)
    bad = ~((values > 0) & (values <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
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
):
    """uint8 images ``(N, H, W, 3)`` (or one ``(H, W, 3)``) -> float32 tensor ``(N, C, H, W)``.

    Pixels are scaled to [0, 1]; ``channels=1`` averages the three colours (as the paper's
    greyscale models do), or with ``greyscale="luma"`` weighs them 0.299, 0.587, 0.114
    (ITU-R 601-2, PIL's ``convert("L")``: Zoobot's greyscale conversion, which a model's
    metadata asks for with ``"greyscale": "luma"``); ``mean``/``std`` (per channel or scalar)
    normalise afterwards. Accepts a torch uint8 tensor too (kept on its device).
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

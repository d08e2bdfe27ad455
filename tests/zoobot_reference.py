"""Zoobot's inference transform, copied so the parity tests run without zoobot installed.

Upstream (PyPI): zoobot 2.9.0 and galaxy-datasets 0.0.25 (the version zoobot 2.9.0 requires).
Zoobot predicts on a ``CatalogDataModule`` (``zoobot/pytorch/predictions/predict_on_catalog.py``,
``predict``), whose default inference transform is
``get_galaxy_transform(minimal_view_config())``
(``galaxy_datasets/pytorch/galaxy_datamodule.py``, ``CatalogDataModule.__init__``). Both
functions are in ``galaxy_datasets/transforms.py``: :data:`MINIMAL_VIEW_CONFIG` is that
config, and :func:`zoobot_inference_transform` the steps ``get_galaxy_transform`` appends
for it, in its order, with the same torchvision calls. Images are opened as
``galaxy_datasets/pytorch/galaxy_dataset.py`` ``load_img_file`` opens them (PIL,
``Image.open`` then ``load``). ``tests/test_zoobot_parity.py`` checks that this copy and the
installed packages give identical tensors whenever they are installed (``.ci/run`` installs
them with ``pip install --no-deps``).
"""

from __future__ import annotations

import numpy as np

UPSTREAM = {"zoobot": "2.9.0", "galaxy-datasets": "0.0.25"}

# galaxy_datasets/transforms.py, minimal_view_config() (0.0.25), verbatim.
MINIMAL_VIEW_CONFIG = dict(
    pil_to_tensor=True,
    flux_to_jpg_like_dynamic_range=False,
    fixed_crop=False,
    output_size=224,
    greyscale=False,
    interpolation_method="bilinear",
    # no rotation, no translate, less aggressive crop, no shear
    random_affine=dict(degrees=0, translate=None, scale=(1.2, 1.2), shear=None),
    random_perspective=False,
    center_crop=False,
    random_resized_crop=False,
    flip_prob=0.0,
    rotation_prob=0.0,
    color_jitter_prob=0.0,
    erase_iterations=0,
    posterize=False,
    elastic_prob=0.0,
    normalize=False,  # {mean, std} from timm cfg 'mean' and 'std'
)


def zoobot_inference_transform(greyscale: bool = False):
    """``get_galaxy_transform(minimal_view_config())`` (with ``greyscale`` set as Zoobot's
    greyscale models set it), step by step."""
    import torch
    import torchvision.transforms.v2 as T
    from torchvision.transforms import InterpolationMode

    cfg = MINIMAL_VIEW_CONFIG
    interpolation = InterpolationMode[cfg["interpolation_method"].upper()]
    steps = [T.Grayscale(num_output_channels=1)] if greyscale else []
    steps += [
        T.RandomAffine(**cfg["random_affine"], interpolation=interpolation),
        T.Resize(cfg["output_size"], interpolation=interpolation, antialias=True),
        T.CenterCrop(cfg["output_size"]),
        T.RandomHorizontalFlip(p=cfg["flip_prob"]),
        T.RandomVerticalFlip(p=cfg["flip_prob"]),
        T.PILToTensor(),
        T.ToDtype(torch.float32, scale=True),
    ]
    return T.Compose(steps)


def zoobot_view(path, transform) -> np.ndarray:
    """``transform`` applied to the file as galaxy-datasets loads it: float32 ``(C, H, W)``."""
    from PIL import Image

    with Image.open(path, mode="r") as im:
        im.load()
        return transform(im).numpy()

"""A tiny catalogue of drawn galaxies for fast training tests (no synthetic-sky dependency).

Round blobs get mostly "smooth" votes, elongated ones mostly "featured-or-disk" (and then
"edge-on yes"), so a model can learn something in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from galaxy_helpers.schema import DECALS_DR5


def make_toy_catalogue(folder, n: int = 64, size: int = 32, seed: int = 0) -> pd.DataFrame:
    """Write ``n`` PNG images into ``folder`` and return a catalogue with all 34 vote columns."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    rows = []
    for i in range(n):
        elongated = i % 2 == 1
        q = rng.uniform(0.2, 0.4) if elongated else rng.uniform(0.85, 1.0)
        ang = rng.uniform(0, np.pi)
        u = xx * np.cos(ang) + yy * np.sin(ang)
        v = -xx * np.sin(ang) + yy * np.cos(ang)
        r2 = (u / (size * 0.2)) ** 2 + (v / (size * 0.2 * q)) ** 2
        img = np.exp(-r2)[..., None] * np.array([1.0, 0.8, 0.6]) * 230
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"toy_{i:04d}.png"
        Image.fromarray(img).save(path)
        counts = dict.fromkeys(DECALS_DR5.answer_columns, 0)
        n_vol = int(rng.integers(5, 40))
        p_feat = 0.85 if elongated else 0.1
        feat = int(rng.binomial(n_vol, p_feat))
        counts["smooth-or-featured-dr5_smooth"] = n_vol - feat
        counts["smooth-or-featured-dr5_featured-or-disk"] = feat
        if feat:
            yes = int(rng.binomial(feat, 0.9 if elongated else 0.2))
            counts["disk-edge-on-dr5_yes"] = yes
            counts["disk-edge-on-dr5_no"] = feat - yes
        if n_vol - feat:
            counts["how-rounded-dr5_round" if not elongated else "how-rounded-dr5_cigar-shaped"] = (
                n_vol - feat
            )
        counts["merging-dr5_none"] = n_vol
        split = "train" if i < int(0.75 * n) else ("val" if i < int(0.875 * n) else "test")
        rows.append(
            {
                "id_str": f"toy{i}",
                "file_loc": str(path.resolve()),
                **counts,
                "split": split,
                "truth_elongated": elongated,
            }
        )
    return pd.DataFrame(rows)

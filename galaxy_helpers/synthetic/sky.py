"""The whole synthetic sky: truth, votes and images on disk, cached by configuration."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .. import core
from ..schema import DECALS_DR5
from .render import render_galaxy
from .truth import GENERATOR_VERSION, TAGS, SkyConfig, config_with, draw_truth, generator_source
from .volunteers import simulate_votes


def sky_dir(config: SkyConfig | None = None, *, cache_dir=None, **overrides) -> Path:
    """Folder ``<cache_dir>/synthetic/<config hash>`` of the sky :func:`make_sky` would make."""
    config = config_with(config, overrides)
    root = core.cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return root / "synthetic" / config.key()


def _render_chunk(args):
    """Worker: render ``records`` and write their PNGs (top-level, so it pickles)."""
    records, seed, size, folder = args
    from PIL import Image
    from threadpoolctl import threadpool_limits

    # One BLAS thread per worker: a galaxy's matrix products are too small to gain from threads,
    # and N workers x N threads oversubscribe the cores (15 workers on 16: 8x slower than expected).
    with threadpool_limits(limits=1, user_api="blas"):
        for rec in records:
            rng = np.random.default_rng([int(seed), int(rec["_index"]), 1])
            img = render_galaxy(rec, size, rng)
            Image.fromarray(img).save(Path(folder) / f"{rec['id_str']}.png", compress_level=1)
    return len(records)


def _default_workers(n: int) -> int:
    return 1 if n < 1500 else max(1, min(2, os.cpu_count() or 1))


def make_sky(
    config: SkyConfig | None = None,
    *,
    cache_dir=None,
    progress: bool = True,
    workers: int | None = None,
    **overrides,
) -> pd.DataFrame:
    """Generate (or load from cache) a synthetic Galaxy Zoo catalogue with images on disk.

    Skies of 1,500 galaxies or more render in worker processes: a script making one needs an
    ``if __name__ == "__main__":`` guard.

    Parameters
    ----------
    config : a :class:`SkyConfig` (default ``SkyConfig()``: 5,000 galaxies, 64 px, seed 1).
    cache_dir : root of caches (default ``core.cache_dir()``); the sky goes to :func:`sky_dir`.
    progress : show a progress bar while rendering.
    workers : rendering processes (default: 2 for big skies, else 1); the result is the same.
    **overrides : SkyConfig fields, e.g. ``make_sky(n_galaxies=500, image_size=224)``.

    Returns
    -------
    DataFrame in the catalogue contract: ``id_str``, ``file_loc``, DR5 vote counts, ``tag_*``,
    ``truth_*`` and ``split`` (train/val/test, about 80/10/10).
    """
    config = config_with(config, overrides)
    final = sky_dir(config, cache_dir=cache_dir)
    if (final / "catalogue.parquet").exists() and (final / "config.json").exists():
        return _load_cached(final)
    with core.atomic_path(final) as tmp:
        (tmp / "images").mkdir(parents=True)
        catalogue = _build(config, final, tmp, progress, workers)
        catalogue.to_parquet(tmp / "catalogue.parquet", index=False)
        meta = {"config": asdict(config), "generator_version": GENERATOR_VERSION}
        meta |= {"generator_source": generator_source(), "key": config.key()}
        meta["created_unix"] = int(time.time())
        core.write_json(tmp / "config.json", meta)
    return _load_cached(final)


def _load_cached(folder: Path) -> pd.DataFrame:
    catalogue = pd.read_parquet(folder / "catalogue.parquet")
    # Rebuild paths from the ids so a moved cache folder still works.
    catalogue["file_loc"] = [str(folder / "images" / f"{i}.png") for i in catalogue["id_str"]]
    return catalogue


def _build(config: SkyConfig, final: Path, tmp: Path, progress: bool, workers) -> pd.DataFrame:
    from tqdm.auto import tqdm

    n, size, seed = config.n_galaxies, config.image_size, config.seed
    truth = draw_truth(n, seed, config)
    counts = simulate_votes(truth, DECALS_DR5, seed, config)
    ids = [f"synth-{seed}-{i:06d}" for i in range(n)]
    records = [r | {"_index": i, "id_str": ids[i]} for i, r in enumerate(truth.to_dict("records"))]
    chunk = 200
    jobs = [(records[s : s + chunk], seed, size, str(tmp / "images")) for s in range(0, n, chunk)]
    workers = _default_workers(n) if workers is None else int(workers)
    pool = contextlib.nullcontext()
    if workers > 1:  # forkserver (or spawn): forking a process with threads is unsafe
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))
    desc = f"Rendering {n} synthetic galaxies"
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar, pool as executor:
        for done in (executor.map if executor else map)(_render_chunk, jobs):
            bar.update(done)
    files = [str(final / "images" / f"{i}.png") for i in ids]
    cat = pd.DataFrame({"id_str": ids, "file_loc": files})
    votes = pd.DataFrame(counts, columns=DECALS_DR5.answer_columns)
    tags = truth[[f"tag_{t}" for t in TAGS]]
    truth_cols = truth[[c for c in truth.columns if c.startswith("truth_")]]
    return pd.concat([cat, votes, tags, truth_cols, truth[["split"]]], axis=1)

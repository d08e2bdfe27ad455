"""The whole synthetic sky: truth, votes and images on disk, cached by configuration."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from .. import core
from ..schema import DECALS_DR5
from .render import render_galaxy
from .truth import GENERATOR_VERSION, TAGS, SkyConfig, config_with, draw_truth
from .volunteers import simulate_votes


def sky_dir(config: SkyConfig | None = None, *, cache_dir=None, **overrides) -> Path:
    """Folder where :func:`make_sky` keeps (or will keep) the sky for this configuration.

    Takes the arguments of :func:`make_sky`; returns ``<cache_dir>/synthetic/<config hash>``.
    """
    config = config_with(config, overrides)
    root = core.cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return root / "synthetic" / config.key()


def _render_chunk(args):
    """Worker: render the galaxies of ``records`` and write their PNGs (top level, so it pickles)."""
    records, seed, size, folder = args
    from PIL import Image
    from threadpoolctl import threadpool_limits

    # One BLAS thread per worker: the matrix products of a 224-px galaxy are too small to gain
    # from threads, and N workers x N BLAS threads each oversubscribe the cores (measured: 29.6
    # ms per galaxy per worker with 2 workers on 2 cores, 19.5 ms with one thread each; 8x
    # slower than expected with 15 workers on a 16-core GPU machine).
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

    Scripts that render a big sky (1,500 galaxies or more uses worker processes) need an
    ``if __name__ == "__main__":`` guard; notebooks do not.

    Parameters
    ----------
    config : a :class:`SkyConfig` (default ``SkyConfig()``: 5,000 galaxies, 64 px, seed 1).
    cache_dir : root folder of caches (default ``core.cache_dir()``); the sky lives in
        ``<cache_dir>/synthetic/<config hash>/`` with ``images/``, ``catalogue.parquet`` and
        ``config.json``, written atomically.
    progress : show a progress bar while rendering.
    workers : processes used for rendering (default: 2 for big skies, else 1). Does not change
        the result.
    **overrides : SkyConfig fields, e.g. ``make_sky(n_galaxies=500, image_size=224)``.

    Returns
    -------
    DataFrame following the catalogue contract: ``id_str``, ``file_loc`` (absolute PNG path),
    one vote-count column per DECaLS DR5 answer, ``tag_*`` bools, ``truth_*`` columns and
    ``split`` (train/val/test, about 80/10/10).

    Examples
    --------
    >>> catalogue = make_sky(n_galaxies=500)  # doctest: +SKIP
    >>> catalogue.filter(like="tag_").sum()  # doctest: +SKIP
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
        meta |= {"key": config.key(), "created_unix": int(time.time())}
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
    records = truth.to_dict("records")
    for i, rec in enumerate(records):
        rec["_index"] = i
        rec["id_str"] = ids[i]
    chunk = 200
    jobs = [(records[s : s + chunk], seed, size, str(tmp / "images")) for s in range(0, n, chunk)]
    workers = _default_workers(n) if workers is None else int(workers)
    desc = f"Rendering {n} synthetic galaxies"
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                bar.update(_render_chunk(job))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            methods = mp.get_all_start_methods()
            ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for done in pool.map(_render_chunk, jobs):
                    bar.update(done)

    files = [str(final / "images" / f"{i}.png") for i in ids]
    cat = pd.DataFrame({"id_str": ids, "file_loc": files})
    votes = pd.DataFrame(counts, columns=DECALS_DR5.answer_columns)
    tags = truth[[f"tag_{t}" for t in TAGS]]
    truth_cols = truth[[c for c in truth.columns if c.startswith("truth_")]]
    return pd.concat([cat, votes, tags, truth_cols, truth[["split"]]], axis=1)

"""Ready-made training runs: the cached quick model, the committed checkpoints, the command line.

:func:`train_or_load` trains once, then loads from the cache (:func:`quick_model`: notebook 02).
The committed ``weights/synthetic_resnet10t`` (stage 1) and ``weights/course_resnet10t`` (stage 2:
plus real Galaxy Zoo 2 galaxies) are built from the recipes below.

Command line (also under ``torchrun --nproc_per_node N -m galaxy_helpers.recipes ...``)::

    python -m galaxy_helpers.recipes train --catalogue cat.parquet --out runs/model
    python -m galaxy_helpers.recipes train --synthetic 5000 --out runs/quick
    python -m galaxy_helpers.recipes course-checkpoint   # rebuild both committed stages
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import core
from . import schema as schema_mod
from .models import checkpoint_paths, load_checkpoint, save_checkpoint
from .training import History, TrainConfig, is_rank0, numerics, train

__all__ = [
    "train_or_load",
    "quick_model",
    "sky_description",
    "COURSE_CHECKPOINT_RECIPE",
    "SYNTHETIC_CHECKPOINT_RECIPE",
    "QUICK_PROFILE",
    "WEIGHTS_DIR",
    "build_course_checkpoint",
    "build_synthetic_checkpoint",
    "course_checkpoint_path",
    "course_training_catalogue",
    "synthetic_checkpoint_path",
    "main",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# The quick profile of notebook 02 (TrainConfig fields; the rest are TrainConfig's defaults):
# the network sees the central half of each 64-px frame at its own pixel scale (32 px, where most
# of the galaxy's light is: a quarter of the pixels per step, so more steps per CPU minute), its
# head starts at the training set's mean vote fractions, and it trains in bfloat16 on CPUs that
# compute it natively (1.6x float32 here). Measured over 5 skies and seeds against the previous
# profiles: DEVELOPERS.md, "Quick profile".
QUICK_PROFILE = {
    "image_size": 32,
    "framing_crop": 0.5,
    "epochs": 10,
    "init_head_from_data": True,
    "amp": "auto",
}
COMMAND = "python -m galaxy_helpers.recipes course-checkpoint"

# Stage 1: a bigger sky with a seed the course sky does not use, more data and epochs than the
# quick profile, one-cycle LR. About 1 h 50 min on a 2-core CPU (rendering 4 minutes, then 10
# epochs of 8.5 minutes at ~400 images/s in bfloat16).
SYNTHETIC_CHECKPOINT_RECIPE = {
    "sky": {"n_galaxies": 240000, "image_size": 64, "seed": 1000},
    "train": {
        "architecture": "resnet10t",
        "epochs": 10,
        "batch_size": 64,
        "lr": 3e-3,
        "schedule": "onecycle",
        "patience": 5,
        "seed": 1000,
        "augment": "lossless",  # flips and quarter turns only, no resampling
        # bfloat16 autocast: 1.7x float32 on CPUs with AVX512-BF16; set False on CPUs without it.
        "amp": True,
    },
}

# Stage 2, the course checkpoint: continue stage 1 (same settings but epochs, lr and seed) on a
# fresh synthetic sky mixed with the 4,000 "train" galaxies of gz2_kaggle_subset (their Q1/Q2/Q7
# votes only; every 10th is validation; the "test" split never enters). Real rows keep their
# survey framing (crop 0.5).
COURSE_CHECKPOINT_RECIPE = {
    "stage1": SYNTHETIC_CHECKPOINT_RECIPE,
    "sky": {"n_galaxies": 40000, "image_size": 64, "seed": 1001},
    "real": {"dataset": "gz2_kaggle_subset", "split": "train", "val_every": 10},
    "train": {**SYNTHETIC_CHECKPOINT_RECIPE["train"], "epochs": 6, "lr": 1e-3, "seed": 2000},
}


def course_checkpoint_path(architecture: str | None = None) -> Path:
    """Path (without suffix) of the committed course checkpoint (default: the recipe's)."""
    arch = architecture or COURSE_CHECKPOINT_RECIPE["train"]["architecture"]
    return WEIGHTS_DIR / f"course_{arch}"


def synthetic_checkpoint_path(architecture: str | None = None) -> Path:
    """Path (without suffix) of the committed stage-1 checkpoint: synthetic galaxies only."""
    arch = architecture or SYNTHETIC_CHECKPOINT_RECIPE["train"]["architecture"]
    return WEIGHTS_DIR / f"synthetic_{arch}"


def train_or_load(
    catalogue: pd.DataFrame,
    config: TrainConfig | None = None,
    schema=schema_mod.DECALS_DR5,
    data_description: dict | None = None,
    cache: bool = True,
    refresh: bool = False,
):
    """:func:`train`, or load an identical earlier run (same config, tree and catalogue).

    Parameters
    ----------
    catalogue, config, schema, data_description : as :func:`train`.
    cache : look in and write to the cache.
    refresh : always train, then replace the cached run (as notebook 02 does).

    Returns
    -------
    (model, history)
    """
    config = config or TrainConfig()
    schema = schema_mod.get_schema(schema)
    df = schema_mod.canonical_columns(catalogue, schema)
    cols = [c for c in ["id_str", "file_loc", "split", *schema.answer_columns] if c in df.columns]
    rows = pd.util.hash_pandas_object(df[cols].astype(str), index=False).to_numpy()
    # the trainer's code and numerics too: a model trained by code since changed is not reused
    made_by = [core.source_key("galaxy_helpers.training"), numerics(config.device)]
    key = core.content_key(config.cache_key(), rows, schema.answer_columns, *made_by)
    folder = core.cache_dir("models") / key
    done = all((folder / name).exists() for name in ("model.json", "history.json"))
    if cache and not refresh and done:
        model, _ = load_checkpoint(folder / "model", schema=schema)
        history = History.from_dict(core.read_json(folder / "history.json", what="history"))
        if config.progress:
            print(f"Loaded the trained model from the cache: {folder}")
        return model, history
    model, history = train(catalogue, config, schema, data_description)
    if cache and is_rank0():
        with core.atomic_path(folder) as tmp:
            tmp.mkdir()
            save_checkpoint(model, tmp / "model")
            core.write_json(tmp / "history.json", history.to_dict(), indent=None)
    return model, history


def sky_description(sky_config) -> dict:
    """The ``data`` entry of a checkpoint trained on ``synthetic.make_sky(sky_config)``."""
    d = dataclasses.asdict(sky_config) if dataclasses.is_dataclass(sky_config) else {}
    return {"source": "galaxy_helpers.synthetic.make_sky", "sky_config": d}


def quick_model(progress: bool = True):
    """The quick-profile model of notebook 02 (trained once, then loaded from the cache).

    Returns
    -------
    (model, history)
    """
    from . import synthetic

    sky_config = synthetic.SkyConfig()
    sky = synthetic.make_sky(sky_config, progress=progress)
    config = TrainConfig(**QUICK_PROFILE, progress=progress)
    return train_or_load(sky, config, data_description=sky_description(sky_config))


def _train_and_save(catalogue, config, path, recipe, data_description, test, progress):
    """Train, evaluate on ``test``, write a float16 checkpoint (``<path>_partial`` each epoch)."""
    from .evaluation import evaluate

    t0 = time.perf_counter()
    partial = path.with_name(path.name + "_partial")

    def save_partial(model, history):
        extra = {"partial": True, "epochs": len(history.epoch), "recipe": recipe}
        extra["history"] = history.as_frame().to_dict(orient="list")
        save_checkpoint(model, partial, extra, half=True)

    model, history = train(
        catalogue, config, data_description=data_description, on_epoch_end=save_partial
    )
    for name, (rows, base) in test.items():
        model.metadata["metrics"][name] = evaluate(model, rows, base, progress=progress).summary()
    model.metadata.update(
        recipe=recipe,
        command=COMMAND,
        train_seconds=round(time.perf_counter() - t0, 1),
        history=history.as_frame().to_dict(orient="list"),
        partial=False,
    )
    save_checkpoint(model, path, half=True)
    for p in checkpoint_paths(partial):
        p.unlink(missing_ok=True)
    return model, history


def build_synthetic_checkpoint(
    out: str | os.PathLike | None = None, progress: bool = True, recipe: dict | None = None
):
    """Stage 1: train on a large synthetic sky only (about 1 h 50 min on a 2-core CPU).

    Returns ``(model, history)``; the checkpoint goes to ``out`` (default: the committed
    ``weights/synthetic_<arch>``).
    """
    from . import synthetic

    recipe = recipe or SYNTHETIC_CHECKPOINT_RECIPE
    sky_config = synthetic.SkyConfig(**recipe["sky"])
    sky = synthetic.make_sky(sky_config, progress=progress)
    config = TrainConfig(
        image_size=recipe["sky"]["image_size"], progress=progress, **recipe["train"]
    )
    path = Path(out) if out else synthetic_checkpoint_path(config.architecture)
    test = {"test": (sky[sky["split"] == "test"], sky[sky["split"] == "train"])}
    return _train_and_save(sky, config, path, recipe, sky_description(sky_config), test, progress)


def course_training_catalogue(recipe: dict | None = None, progress: bool = True):
    """The stage-2 catalogue: a fresh synthetic sky and real Galaxy Zoo 2 galaxies together.

    Returns
    -------
    (catalogue, tests, description): the mixed catalogue (``split`` train/val, per-row
    ``crop``), ``{name: (test rows, baseline rows)}`` and the checkpoint's ``data`` entry.
    """
    from . import data, synthetic

    recipe = recipe or COURSE_CHECKPOINT_RECIPE
    sky_config = synthetic.SkyConfig(**recipe["sky"])
    sky = synthetic.make_sky(sky_config, progress=progress)
    real_spec = recipe["real"]
    real = data.load_dataset(real_spec["dataset"], progress=progress)
    columns = ["id_str", "file_loc", *schema_mod.DECALS_DR5.answer_columns]
    pool = real[real["split"] == real_spec["split"]].copy()
    every = int(real_spec["val_every"])
    pool["split"] = np.where(np.arange(len(pool)) % every == every - 1, "val", "train")
    synthetic_rows = sky[sky["split"] != "test"][columns + ["split"]].assign(crop=1.0)
    mixed = pd.concat([synthetic_rows, pool[columns + ["split", "crop"]]], ignore_index=True)
    tests = {
        "test": (sky[sky["split"] == "test"], sky[sky["split"] == "train"]),
        "test_gz2": (real[real["split"] == "test"], pool),
    }
    description = {
        "source": "galaxy_helpers.synthetic.make_sky + galaxy_helpers.data.load_dataset",
        "sky_config": sky_description(sky_config)["sky_config"],
        "real": {**real_spec, "n_galaxies": len(pool), "votes": "Q1, Q2, Q7 only"},
        "n_synthetic": len(synthetic_rows),
    }
    return mixed, tests, description


def build_course_checkpoint(
    out: str | os.PathLike | None = None, progress: bool = True, recipe: dict | None = None
):
    """Stage 2: continue the stage-1 checkpoint (rebuilt first when missing) on the course mix.

    Returns ``(model, history)`` like :func:`build_synthetic_checkpoint`.
    """
    recipe = recipe or COURSE_CHECKPOINT_RECIPE
    stage1 = synthetic_checkpoint_path(recipe["train"]["architecture"])
    if not stage1.with_suffix(".safetensors").exists():
        build_synthetic_checkpoint(stage1, progress=progress, recipe=recipe["stage1"])
    catalogue, tests, description = course_training_catalogue(recipe, progress=progress)
    config = TrainConfig(
        image_size=recipe["sky"]["image_size"],
        progress=progress,
        init_checkpoint=str(stage1),
        **recipe["train"],
    )
    path = Path(out) if out else course_checkpoint_path(config.architecture)
    return _train_and_save(catalogue, config, path, recipe, description, tests, progress)


def _parse_bool(text: str, word: str | None = None):
    """true/false (or ``word`` itself, for fields such as ``amp="auto"``)."""
    if text == word:
        return word
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    expected = f"true, false or {word!r}" if word else "true/false"
    raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m galaxy_helpers.recipes",
        description="Train a GalaxyModel on vote counts (single process or under torchrun).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("course-checkpoint", help="rebuild both committed checkpoints")
    c.add_argument("--out", default=None, help="checkpoint path without suffix (default: weights/)")
    t = sub.add_parser("train", help="train on a catalogue or a synthetic sky")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--catalogue", help="catalogue file (.parquet or .csv)")
    src.add_argument("--synthetic", type=int, metavar="N", help="train on a synthetic sky of N")
    t.add_argument("--sky-seed", type=int, default=1)
    t.add_argument("--schema", default="decals_dr5")
    t.add_argument("--out", required=True, help="checkpoint path (without suffix)")
    t.add_argument("--config", help="JSON file of TrainConfig fields (flags override it)")
    t.add_argument("--history", help="write the per-epoch history here (JSON)")
    t.add_argument("--half", action="store_true", help="store float16 weights")
    words = {"amp": "auto", "augment": "lossless"}  # fields taking true/false or one word
    types = {"int": int, "int | None": int, "float": float}
    for f in dataclasses.fields(TrainConfig):
        if f.type in ("bool", "bool | None") or f.name in words:
            kind = functools.partial(_parse_bool, word=words.get(f.name))
        else:
            kind = types.get(f.type, str)
        t.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None)
    return p


def _train_command(args, rank0: bool) -> None:
    values = core.read_json(args.config, what="training config") if args.config else {}
    for f in dataclasses.fields(TrainConfig):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    if not rank0:
        values["progress"] = False
    config = TrainConfig(**values)
    if args.synthetic:
        from . import synthetic

        sky_config = synthetic.SkyConfig(
            n_galaxies=args.synthetic, image_size=config.image_size, seed=args.sky_seed
        )
        catalogue = synthetic.make_sky(sky_config, progress=rank0)
        description = sky_description(sky_config)
    else:
        read = pd.read_parquet if args.catalogue.endswith(".parquet") else pd.read_csv
        catalogue = read(args.catalogue)
        description = {"catalogue": str(Path(args.catalogue).resolve())}
    model, history = train(catalogue, config, args.schema, description)
    if rank0:
        path = save_checkpoint(model, args.out, half=args.half)
        if args.history:
            core.write_json(args.history, history.to_dict(), indent=None)
        print(
            f"Saved {path} (best epoch {history.best_epoch}, "
            f"validation loss {history.best_val_loss:.4f})"
        )


@contextlib.contextmanager
def _distributed():
    """Join torchrun's process group (``WORLD_SIZE`` > 1) for the block; yields is-rank-0."""
    import torch.distributed as dist

    started = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if started:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    try:
        yield is_rank0()
    finally:
        if started:
            dist.destroy_process_group()


def main(argv=None) -> int:
    """The command line: ``train`` or ``course-checkpoint`` (see ``--help``)."""
    args = _parser().parse_args(argv)
    with _distributed() as rank0:
        if args.command == "course-checkpoint":
            build_course_checkpoint(args.out, progress=rank0)
        else:
            _train_command(args, rank0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

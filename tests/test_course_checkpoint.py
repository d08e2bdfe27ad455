"""The committed course checkpoint: loads, is small, says how it was made, and still scores
its recorded metrics on a fresh sample of synthetic galaxies it has never seen."""

import numpy as np
import pytest

from galaxy_helpers import recipes, synthetic
from galaxy_helpers.checkpoints import load_model
from galaxy_helpers.evaluation import evaluate
from galaxy_helpers.schema import DECALS_DR5

FRESH_SEED = 4242  # neither the course sky (1) nor the checkpoint's training sky


@pytest.fixture(scope="module")
def checkpoint():
    return load_model("course")


def test_checkpoint_is_small_and_complete(checkpoint):
    model, meta = checkpoint
    path = recipes.course_checkpoint_path(meta["architecture"]).with_suffix(".safetensors")
    # resnet10t: 4.9 M parameters as float16 = 9.9 MB; keep the committed file that small.
    assert path.stat().st_size < 11e6, "commit a few MB at most (float16 weights)"
    assert meta["weights_dtype"] == "float16"
    assert meta["partial"] is False
    assert meta["schema"] == "decals_dr5" and meta["answer_columns"] == DECALS_DR5.answer_columns
    assert meta["image_size"] == 64 and meta["channels"] == 3
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3
    # the command that rebuilt it (galaxy_helpers.training before the recipes got their module)
    assert meta["command"].endswith("course-checkpoint")
    assert meta["recipe"] == recipes.COURSE_CHECKPOINT_RECIPE
    # and the run recorded in the checkpoint is the recipe's, setting by setting
    for key, value in meta["recipe"]["train"].items():
        assert meta["train_config"][key] == value, key
    sky = meta["data"]["sky_config"]
    assert sky["seed"] == meta["recipe"]["sky"]["seed"] != synthetic.SkyConfig().seed
    assert sky["n_galaxies"] > synthetic.SkyConfig().n_galaxies  # bigger than the course sky
    assert meta["epochs"] >= 1 and meta["best_epoch"] >= 1
    assert model.representation_dim == meta["representation_dim"]
    # stage 2 starts from the committed stage-1 checkpoint and mixes in real galaxies
    assert meta["train_config"]["init_checkpoint"].endswith(
        recipes.synthetic_checkpoint_path(meta["architecture"]).name
    )
    assert meta["data"]["real"]["dataset"] == "gz2_kaggle_subset"
    assert meta["data"]["real"]["split"] == "train"  # the held-out test split never trains
    assert meta["framing"] == {"crop": 1.0}  # real rows bring their survey's crop


def test_stage1_checkpoint_is_the_synthetic_recipe():
    model, meta = load_model("synthetic")
    recipe = recipes.SYNTHETIC_CHECKPOINT_RECIPE
    assert meta["recipe"] == recipe == recipes.COURSE_CHECKPOINT_RECIPE["stage1"]
    for key, value in recipe["train"].items():
        assert meta["train_config"][key] == value, key
    assert meta["data"]["sky_config"]["n_galaxies"] == recipe["sky"]["n_galaxies"]
    assert meta["weights_dtype"] == "float16" and meta["partial"] is False


@pytest.mark.slow
def test_recorded_metrics_hold_on_a_fresh_sample(checkpoint, tmp_path):
    model, meta = checkpoint
    recorded = meta["metrics"]["test"]
    sky = synthetic.make_sky(n_galaxies=600, seed=FRESH_SEED, image_size=meta["image_size"],
                             cache_dir=tmp_path, progress=False)  # fmt: skip
    train_part = sky.iloc[:300]  # baseline fractions from one half, evaluation on the other
    result = evaluate(model, sky.iloc[300:], baseline_catalogue=train_part, progress=False)
    fresh = result.summary()
    # 300 galaxies give ~100 confident smooth-or-featured galaxies: allow a few points of noise.
    for question in ("smooth-or-featured-dr5", "disk-edge-on-dr5"):
        if fresh["n_confident"][question] >= 20:
            assert (
                fresh["accuracy_confident"][question]
                >= recorded["accuracy_confident"][question] - 0.06
            ), (question, fresh, recorded)
    assert fresh["accuracy_confident"]["smooth-or-featured-dr5"] >= 0.9
    assert fresh["vote_fraction_mae"] <= recorded["vote_fraction_mae"] * 1.2 + 0.005
    assert fresh["mae_reduction"] >= 0.3
    assert np.isfinite(result.predicted).all()


@pytest.mark.slow
def test_the_recipe_builds_stage_2_from_stage_1_with_real_galaxies(tmp_path, monkeypatch):
    """One command rebuilds the checkpoint: a tiny version of the recipe runs end to end."""
    import copy
    import json
    import os
    from pathlib import Path

    from galaxy_helpers import data

    mirror = Path(os.environ.get(data.MIRROR_ENV) or "/work/shared/data")
    if not (mirror / "gz2_kaggle_subset").is_dir():
        pytest.skip("needs the data mirror")
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    recipe = copy.deepcopy(recipes.COURSE_CHECKPOINT_RECIPE)
    recipe["sky"]["n_galaxies"] = 600
    recipe["train"].update(epochs=1, max_steps_per_epoch=2)
    recipes.build_course_checkpoint(tmp_path / "tiny", progress=False, recipe=recipe)
    meta = json.loads((tmp_path / "tiny.json").read_text())
    assert meta["recipe"] == recipe and meta["partial"] is False
    assert meta["command"] == "python -m galaxy_helpers.recipes course-checkpoint"
    assert meta["data"]["real"]["n_galaxies"] == 4000  # every train galaxy of the subset
    assert set(meta["metrics"]) >= {"test", "test_gz2"}
    assert meta["metrics"]["test_gz2"]["n_galaxies"] == 1000  # the held-out split only
    assert not list(tmp_path.glob("tiny_partial*"))

"""Tests of the synthetic Galaxy Zoo sky: contract, determinism, tree, population, cache, errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galaxy_helpers import synthetic
from galaxy_helpers.schema import DECALS_DR5, total_votes, vote_counts, vote_fractions
from galaxy_helpers.synthetic import TAGS, SkyConfig

SMALL = {"n_galaxies": 40, "image_size": 32}


def _bytes(paths):
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


@pytest.fixture(scope="module")
def small_sky(tmp_path_factory):
    root = tmp_path_factory.mktemp("sky")
    return synthetic.make_sky(cache_dir=root, progress=False, **SMALL), root


@pytest.fixture(scope="module")
def default_population():
    """Truth and votes of the default 5,000-galaxy sky, without rendering (fast)."""
    config = SkyConfig()
    truth = synthetic.draw_truth(config.n_galaxies, config.seed, config)
    counts = synthetic.simulate_votes(truth, DECALS_DR5, config.seed, config)
    return truth, counts


# --- catalogue contract ------------------------------------------------------------------------
def test_catalogue_contract(small_sky):
    cat, _ = small_sky
    assert len(cat) == SMALL["n_galaxies"]
    assert cat["id_str"].is_unique
    for path in cat["file_loc"]:
        assert os.path.isabs(path) and path.endswith(".png") and Path(path).is_file()
    for col in DECALS_DR5.answer_columns:
        assert col in cat.columns, col
        assert pd.api.types.is_integer_dtype(cat[col]), col
        assert (cat[col] >= 0).all() and not cat[col].isna().any()
    for tag in TAGS:
        assert cat[f"tag_{tag}"].dtype == bool
    truth_cols = [
        "truth_type", "truth_roundness", "truth_bulge", "truth_bar", "truth_arms",
        "truth_winding", "truth_edge_bulge", "truth_merging", "truth_magnitude",
        "truth_radius_px", "truth_axis_ratio", "truth_angle_deg",
    ]  # fmt: skip
    for col in truth_cols:
        assert col in cat.columns, col
    assert set(cat["split"]) <= {"train", "val", "test"}
    assert set(cat["truth_type"]) <= set(synthetic.TYPES)
    vote_counts(cat)  # the schema's own validation accepts it


def test_images_have_requested_size(small_sky):
    from PIL import Image

    cat, _ = small_sky
    with Image.open(cat["file_loc"].iloc[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"


def test_render_any_size_and_not_blank():
    truth = synthetic.draw_truth(12, seed=3)
    row = truth[truth["truth_type"] == "featured"].iloc[0]
    for size in (16, 224):
        img = synthetic.render_galaxy(row, size, np.random.default_rng(0))
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        a, b = size // 2 - size // 8, size // 2 + size // 8
        centre = img[a:b, a:b].mean()
        assert centre > 2 * img[: size // 8, : size // 8].mean()  # galaxy brighter than sky


# --- determinism ---------------------------------------------------------------------------------
def test_same_seed_same_table_and_bytes(small_sky, tmp_path):
    cat, _ = small_sky
    again = synthetic.make_sky(cache_dir=tmp_path, progress=False, **SMALL)
    pd.testing.assert_frame_equal(cat.drop(columns="file_loc"), again.drop(columns="file_loc"))
    assert _bytes(cat["file_loc"]) == _bytes(again["file_loc"])


def test_other_seed_differs(small_sky, tmp_path):
    cat, _ = small_sky
    other = synthetic.make_sky(cache_dir=tmp_path, progress=False, seed=2, **SMALL)
    assert _bytes(cat["file_loc"][:5]) != _bytes(other["file_loc"][:5])
    assert not cat["truth_type"].equals(other["truth_type"])


def test_small_sky_is_prefix_of_bigger(small_sky, tmp_path):
    cat, _ = small_sky
    big = synthetic.make_sky(cache_dir=tmp_path, progress=False, n_galaxies=55, image_size=32)
    head = big.iloc[: len(cat)].reset_index(drop=True)
    pd.testing.assert_frame_equal(cat.drop(columns="file_loc"), head.drop(columns="file_loc"))
    assert _bytes(cat["file_loc"]) == _bytes(head["file_loc"])


def test_workers_do_not_change_result(small_sky, tmp_path):
    cat, _ = small_sky
    par = synthetic.make_sky(cache_dir=tmp_path, progress=False, workers=2, **SMALL)
    assert _bytes(cat["file_loc"]) == _bytes(par["file_loc"])


# --- volunteers ----------------------------------------------------------------------------------
def test_every_vote_respects_the_tree(default_population):
    _, counts = default_population
    totals = total_votes(counts, DECALS_DR5)
    cols = DECALS_DR5.answer_columns
    for qi, q in enumerate(DECALS_DR5.questions):
        if not q.requires:
            assert (totals[:, qi] >= 3).all() and (totals[:, qi] <= 45).all()
            continue
        # Each volunteer gives one answer per question, so exactly those who gave a required
        # answer were asked: no more, no fewer.
        parents = sum(counts[:, cols.index(f"{p}_{a}")] for p, a in q.requires)
        np.testing.assert_array_equal(totals[:, qi], parents, err_msg=q.name)
    # Unasked questions are 0, and fractions are never NaN.
    assert (totals == 0).any()
    assert np.isfinite(vote_fractions(counts, DECALS_DR5)).all()


def test_volunteer_numbers_like_gz_decals(default_population):
    _, counts = default_population
    n = total_votes(counts, DECALS_DR5)[:, 0]
    deep = n >= 30
    assert 0.25 < deep.mean() < 0.35
    assert 5 <= np.median(n[~deep]) <= 10
    assert n[deep].max() <= 45


def test_every_answer_and_tag_occurs_at_default_size(default_population):
    truth, counts = default_population
    for j, col in enumerate(DECALS_DR5.answer_columns):
        assert counts[:, j].sum() > 0, f"no volunteer answered {col}"
    for q in DECALS_DR5.questions:
        for answer in q.answers:
            if answer == "cant-tell":
                continue  # a perception, not a truth
            n = synthetic.truth_matches_answer(truth, q.name, answer).sum()
            assert n >= 10, f"only {n} galaxies are truly {q.name}={answer}"
    for tag in TAGS:
        n = truth[f"tag_{tag}"].sum()
        assert n >= 20, f"tag {tag}: {n} members"
        assert n / len(truth) <= 0.06, f"tag {tag} is not rare: {n}"


def test_population_shares(default_population):
    truth, _ = default_population
    share = truth["truth_type"].value_counts(normalize=True)
    assert 0.35 < share["smooth"] < 0.47
    assert share["artifact"] + share["star"] < 0.08
    rings = truth["tag_ring"]
    assert 0.025 < rings.mean() < 0.05
    assert (truth.loc[rings, "truth_type"] == "featured").mean() > 0.75
    ring_disks = truth[rings & (truth["truth_type"] == "featured")]
    other_disks = truth[~rings & (truth["truth_type"] == "featured")]
    assert (ring_disks["truth_bar"] != "no").mean() > (other_disks["truth_bar"] != "no").mean()


def _frac(counts, column):
    f = vote_fractions(counts, DECALS_DR5)
    return f[:, DECALS_DR5.answer_columns.index(column)]


def test_votes_follow_truth(default_population):
    truth, counts = default_population
    featured = _frac(counts, "smooth-or-featured-dr5_featured-or-disk")
    t = truth["truth_type"].to_numpy()
    assert featured[t == "featured"].mean() > featured[t == "smooth"].mean() + 0.3
    edge = _frac(counts, "disk-edge-on-dr5_yes")
    asked = total_votes(counts, DECALS_DR5)[:, 1] >= 3
    assert edge[asked & (t == "edge-on")].mean() > edge[asked & (t == "featured")].mean() + 0.4
    art = _frac(counts, "smooth-or-featured-dr5_artifact")
    assert art[t == "artifact"].mean() > 0.6


def test_faint_featured_galaxies_drift_to_smooth(default_population):
    truth, counts = default_population
    featured = _frac(counts, "smooth-or-featured-dr5_featured-or-disk")
    disks = (truth["truth_type"] == "featured").to_numpy() & ~truth.filter(like="tag_").any(
        axis=1
    ).to_numpy()
    mag = truth["truth_magnitude"].to_numpy()
    assert featured[disks & (mag < 16)].mean() > featured[disks & (mag > 17.3)].mean() + 0.15


def test_rare_features_sway_answers(default_population):
    truth, counts = default_population
    disks = (truth["truth_type"] == "featured").to_numpy()
    ring = truth["tag_ring"].to_numpy()
    featured = _frac(counts, "smooth-or-featured-dr5_featured-or-disk")
    assert featured[disks & ring].mean() > featured[disks & ~ring].mean() + 0.05
    t = truth["truth_type"].to_numpy()
    art = _frac(counts, "smooth-or-featured-dr5_artifact")
    over = truth["tag_overlapping"].to_numpy()
    assert art[over].mean() > art[~over & (t != "artifact") & (t != "star")].mean() + 0.03
    major = _frac(counts, "merging-dr5_major-disturbance")
    tidal = truth["tag_tidal"].to_numpy()
    assert major[tidal].mean() > major[~tidal].mean() + 0.2
    edge = _frac(counts, "disk-edge-on-dr5_yes")
    dust = truth["tag_dust-lane"].to_numpy()
    asked = total_votes(counts, DECALS_DR5)[:, 1] >= 3
    assert edge[asked & dust].mean() > edge[asked & ~dust].mean() + 0.2


def test_votes_prefix_stable_and_generator_ok():
    truth = synthetic.draw_truth(60, seed=4)
    a = synthetic.simulate_votes(truth, DECALS_DR5, seed=4)
    b = synthetic.simulate_votes(truth.iloc[:20], DECALS_DR5, seed=4)
    np.testing.assert_array_equal(a[:20], b)
    g = synthetic.simulate_votes(truth, DECALS_DR5, seed=np.random.default_rng(0))
    assert g.shape == a.shape and (g >= 0).all()


# --- cache -----------------------------------------------------------------------------------------
def test_cache_hit_does_not_render(small_sky, monkeypatch):
    cat, root = small_sky

    def boom(*args, **kwargs):
        raise AssertionError("render_galaxy called on a cache hit")

    monkeypatch.setattr(synthetic.sky, "render_galaxy", boom)
    again = synthetic.make_sky(cache_dir=root, progress=False, **SMALL)
    pd.testing.assert_frame_equal(cat, again)
    folder = synthetic.sky_dir(cache_dir=root, **SMALL)
    assert (folder / "catalogue.parquet").is_file() and (folder / "config.json").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp dirs


def test_crash_leaves_no_half_cache(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash while rendering")

    monkeypatch.setattr(synthetic.sky, "render_galaxy", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        synthetic.make_sky(cache_dir=tmp_path, progress=False, n_galaxies=5, image_size=32)
    assert list((tmp_path / "synthetic").iterdir()) == []


def test_half_cache_from_an_old_crash_is_replaced(tmp_path):
    folder = synthetic.sky_dir(cache_dir=tmp_path, n_galaxies=3, image_size=16)
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "junk.png").write_bytes(b"")
    cat = synthetic.make_sky(cache_dir=tmp_path, progress=False, n_galaxies=3, image_size=16)
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(
        Path(p).name for p in cat["file_loc"]
    )


def test_moved_cache_still_finds_images(small_sky, tmp_path):
    import shutil

    _, root = small_sky
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    cat = synthetic.make_sky(cache_dir=moved, progress=False, **SMALL)
    assert all(p.startswith(str(moved)) and Path(p).is_file() for p in cat["file_loc"])


def test_env_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path))
    folder = synthetic.sky_dir(n_galaxies=10)
    assert str(folder).startswith(str(tmp_path)) and folder.parent.name == "synthetic"


# --- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 8}, "image_size"),
        ({"image_size": 32.5}, "image_size"),
        ({"image_size": "64"}, "image_size"),
        ({"n_galaxies": 0}, "n_galaxies"),
        ({"tag_rates": {"rings": 0.1}}, "Unknown tag"),
        ({"tag_rates": {"ring": 0.9}}, "ring"),
        ({"colour": "red"}, "Unknown SkyConfig field"),
        ({"smooth_fraction": 0.9}, "featured"),
    ],
)
def test_bad_config_raises_clear_error(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        synthetic.make_sky(cache_dir=tmp_path, progress=False, **overrides)


def test_bad_inputs_elsewhere():
    truth = synthetic.draw_truth(5, seed=1)
    with pytest.raises(ValueError, match="size"):
        synthetic.render_galaxy(truth.iloc[0], 10)
    with pytest.raises(ValueError, match="n"):
        synthetic.draw_truth(0)
    with pytest.raises(ValueError, match="missing columns"):
        synthetic.simulate_votes(truth.drop(columns="truth_bar"))
    with pytest.raises(ValueError, match="Unknown tag"):
        synthetic.montage_by_tag(truth, tags=["spiral"])
    with pytest.raises(ValueError, match="no answer"):
        synthetic.truth_matches_answer(truth, "bar-dr5", "maybe")


def test_montages(small_sky):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cat, _ = small_sky
    fig = synthetic.montage_by_tag(cat, per_tag=2, tags=["artifact", "tidal"])
    assert len(fig.axes) == 4
    plt.close(fig)
    fig = synthetic.montage_by_answer(cat, per_answer=1)
    assert len(fig.axes) >= DECALS_DR5.n_answers
    plt.close(fig)


def test_answer_probabilities_sum_to_one_per_question():
    truth = synthetic.draw_truth(200, seed=5)
    p = synthetic.answer_probabilities(truth)
    assert p.shape == (200, DECALS_DR5.n_answers) and (p > 0).all()
    for a, b in DECALS_DR5.answer_slices:
        np.testing.assert_allclose(p[:, a:b].sum(axis=1), 1.0)


def test_unknown_schema_questions_rejected():
    from galaxy_helpers.schema import GZ2

    truth = synthetic.draw_truth(5, seed=1)
    with pytest.raises(ValueError, match="something-odd"):
        synthetic.simulate_votes(truth, GZ2)


def test_render_accepts_dict_rows_and_is_deterministic():
    truth = synthetic.draw_truth(8, seed=6)
    row = truth.iloc[3]
    a = synthetic.render_galaxy(row, 48, np.random.default_rng([6, 3, 1]))
    b = synthetic.render_galaxy(row.to_dict(), 48, np.random.default_rng([6, 3, 1]))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="truth_type"):
        synthetic.render_galaxy({"truth_type": "quasar"}, 48)


def test_cache_key_depends_on_what_changes_the_sky():
    base = SkyConfig(n_galaxies=100)
    assert base.key() == SkyConfig(n_galaxies=np.int64(100)).key()
    assert base.key() == SkyConfig(n_galaxies=100, tag_rates={"ring": 0.035}).key()
    assert base.key() != SkyConfig(n_galaxies=100, tag_rates={"ring": 0.04}).key()
    assert base.key() != SkyConfig(n_galaxies=100, seed=2).key()


def test_command_line_makes_a_sky_and_its_montages(tmp_path, monkeypatch, capsys):
    import matplotlib

    matplotlib.use("Agg")
    from galaxy_helpers.synthetic.__main__ import main

    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    sky = ["--n-galaxies", "12", "--image-size", "16"]
    assert main(["make", *sky]) == 0
    assert str(synthetic.sky_dir(n_galaxies=12, image_size=16)) in capsys.readouterr().out
    out = tmp_path / "images"
    assert main(["montage", *sky, "--out", str(out), "--per", "1", "--render-size", "16"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_answers.png", "synthetic_tags.png"]


def test_cache_key_follows_the_generator_source(monkeypatch):
    from galaxy_helpers.synthetic import truth

    key = SkyConfig().key()
    monkeypatch.setattr(truth, "_GENERATOR_FILES", ("truth.py", "render.py"))
    assert SkyConfig().key() != key


def test_montage_by_answer_shows_one_part_of_the_tree(small_sky):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from galaxy_helpers import schema

    cat, _ = small_sky
    part = schema.DECALS_DR5_PARTS[1]
    n_answers = sum(len(q.answers) for q in schema.select_questions("decals_dr5", part))
    fig = synthetic.montage_by_answer(cat, per_answer=1, questions=part, answers_per_row=2)
    assert len(fig.axes) == n_answers and n_answers < DECALS_DR5.n_answers
    with pytest.raises(ValueError, match="bar-dr6"):
        synthetic.montage_by_answer(cat, per_answer=1, questions=["bar-dr6"])
    plt.close(fig)

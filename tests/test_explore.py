"""Tests for galaxy_helpers.explore (behind notebook 01)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from galaxy_helpers import explore, images, schema, synthetic
from galaxy_helpers.schema import DECALS_DR5

matplotlib.use("Agg")  # tests only; never set globally
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(scope="module")
def sky(tmp_path_factory):
    """A small synthetic sky with images, cached in a temporary folder."""
    cache = tmp_path_factory.mktemp("sky_cache")
    return synthetic.make_sky(
        n_galaxies=300, image_size=32, seed=3, cache_dir=cache, progress=False
    )


def hand_catalogue() -> pd.DataFrame:
    """Two galaxies with votes we can count by hand: 10 volunteers all say smooth; 40 say
    featured (30 face-on, 10 edge-on)."""
    counts = pd.DataFrame(0, index=[0, 1], columns=DECALS_DR5.answer_columns)
    counts.loc[0, ["smooth-or-featured-dr5_smooth", "how-rounded-dr5_round"]] = 10
    counts.loc[0, "merging-dr5_none"] = 10
    counts.loc[1, "smooth-or-featured-dr5_featured-or-disk"] = 40
    counts.loc[1, "disk-edge-on-dr5_no"] = 30
    counts.loc[1, "disk-edge-on-dr5_yes"] = 10
    counts.loc[1, "edge-on-bulge-dr5_boxy"] = 10
    counts.loc[1, ["has-spiral-arms-dr5_no", "bar-dr5_no", "bulge-size-dr5_small"]] = 30
    counts.loc[1, "merging-dr5_none"] = 40
    cat = pd.concat([pd.DataFrame({"id_str": ["a", "b"], "file_loc": ["x", "y"]}), counts], axis=1)
    cat["tag_ring"] = [False, True]
    return cat


def test_tree_depths_follow_the_decals_tree():
    depths = explore.tree_table(DECALS_DR5)["depth"].to_dict()
    assert depths == {
        "smooth-or-featured-dr5": 0,
        "disk-edge-on-dr5": 1,
        "has-spiral-arms-dr5": 2,
        "bar-dr5": 2,
        "bulge-size-dr5": 2,
        "how-rounded-dr5": 1,
        "edge-on-bulge-dr5": 2,
        "spiral-winding-dr5": 3,
        "spiral-arm-count-dr5": 3,
        "merging-dr5": 1,
    }
    assert explore.tree_table("gz2")["depth"].max() == 3


def test_draw_decision_tree_has_one_box_per_question_and_labelled_arrows(sky):
    fig = explore.draw_decision_tree(DECALS_DR5, catalogue=sky)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(ax.patches) == DECALS_DR5.n_questions
    for q in DECALS_DR5.questions:
        assert any(t.startswith(q.name.removesuffix("-dr5")) for t in texts), q.name
    # merging is reached from two answers of the first question: one arrow naming both
    assert "smooth or featured-or-disk" in texts
    assert sum(t.startswith("asked for") for t in texts) == DECALS_DR5.n_questions
    assert "asked for 100% of galaxies" in texts
    plt.close(fig)


def test_votes_of_a_hand_built_catalogue():
    cat = hand_catalogue()
    np.testing.assert_array_equal(explore._volunteers(cat, DECALS_DR5), [10, 40])
    metrics = explore.sky_metrics(cat)
    assert metrics["n_galaxies"] == 2
    assert metrics["mean_votes_per_galaxy"] == 25.0
    assert metrics["fraction_ge_30_votes"] == 0.5
    assert metrics["tag_counts"] == {"ring": 1}
    assert metrics["share_asked"]["edge-on-bulge-dr5"] == 0.5
    summary = explore.question_summary(cat)
    assert summary.loc["how-rounded-dr5", "share_asked"] == 0.5
    assert summary.loc["bar-dr5", "mean_votes_when_asked"] == 30
    assert summary.loc["bar-dr5", "share_of_volunteers"] == pytest.approx(30 / 50)
    assert summary.loc["bar-dr5", "asked_of"] == "disk-edge-on=no"


def test_volunteer_release_spelling_is_accepted():
    cat = hand_catalogue()
    renamed = cat.rename(columns=lambda c: c.replace("-dr5_", "_"))
    assert "smooth-or-featured_smooth" in renamed.columns
    assert explore.sky_metrics(renamed) == explore.sky_metrics(cat)


def test_missing_or_negative_votes_are_named():
    cat = hand_catalogue().drop(columns="bar-dr5_weak")
    with pytest.raises(ValueError, match="bar-dr5_weak"):
        explore.question_summary(cat)
    cat = hand_catalogue()
    cat.loc[1, "bar-dr5_no"] = -1
    with pytest.raises(ValueError, match="bar-dr5_no"):
        explore.sky_metrics(cat)
    cat = hand_catalogue().astype({"how-rounded-dr5_round": float})
    cat.loc[0, "how-rounded-dr5_round"] = np.nan
    with pytest.raises(ValueError, match="how-rounded-dr5_round"):
        explore.galaxy_votes(cat, 0)


def test_galaxy_votes_marks_unasked_questions():
    cat = hand_catalogue()
    table = explore.galaxy_votes(cat, 0)
    assert len(table) == DECALS_DR5.n_answers
    spiral = table[table["question"] == "has-spiral-arms"]
    assert not spiral["asked"].any() and (spiral["votes"] == 0).all()
    assert (spiral["fraction"] == 0).all()  # zero, never NaN
    smooth = table[(table["question"] == "smooth-or-featured") & (table["answer"] == "smooth")]
    assert smooth["votes"].item() == 10 and smooth["fraction"].item() == 1.0
    with pytest.raises(IndexError, match="outside"):
        explore.galaxy_votes(cat, 5)


def test_unasked_example_finds_a_galaxy_nobody_was_asked_about():
    cat = hand_catalogue()
    assert explore.unasked_example(cat, "has-spiral-arms-dr5") == 0
    assert explore.unasked_example(cat, "how-rounded") == 1  # either spelling
    with pytest.raises(ValueError, match="every galaxy"):
        explore.unasked_example(cat, "merging-dr5")
    with pytest.raises(schema.UnknownQuestionError, match="bar-dr5"):
        explore.unasked_example(cat, "bars")
    # among galaxies nobody was asked about, the one most volunteers saw is the clearest
    votes = DECALS_DR5.answer_columns
    more = cat.iloc[[0, 1, 0]].reset_index(drop=True)
    more.loc[2, votes] = more.loc[2, votes] * 3
    assert explore.unasked_example(more, "has-spiral-arms-dr5") == 2
    # ... unless its volunteers disagreed on the first question
    more.loc[2, "smooth-or-featured-dr5_artifact"] = 1
    more.loc[2, "smooth-or-featured-dr5_smooth"] -= 1
    assert explore.unasked_example(more, "has-spiral-arms-dr5") == 0


def test_fractions_by_truth_rows_are_distributions_and_mostly_right(sky):
    table = explore._fractions_by_truth(sky, "smooth-or-featured-dr5", DECALS_DR5)
    values = table.drop(columns="n_galaxies")
    populated = table["n_galaxies"] > 0
    np.testing.assert_allclose(values[populated].sum(axis=1), 1.0, atol=1e-9)
    # volunteers are noisy but, on average, pick the true answer
    for answer in ("smooth", "featured-or-disk"):
        assert values.loc[answer, answer] == values.loc[answer].max()
        assert values.loc[answer, answer] > 0.5
    assert table["n_galaxies"].sum() <= len(sky)


def test_truth_figures_need_a_synthetic_catalogue(sky):
    with pytest.raises(ValueError, match="truth"):
        explore._fractions_by_truth(hand_catalogue(), "bar-dr5", DECALS_DR5)
    with pytest.raises(ValueError, match="truth"):
        explore.plot_faint_drift(hand_catalogue())
    with pytest.raises(ValueError, match="n_bins"):
        explore.plot_faint_drift(sky, n_bins=1)
    with pytest.raises(schema.UnknownQuestionError):
        explore._fractions_by_truth(sky, "is-it-a-galaxy", DECALS_DR5)


def test_plots_return_figures(sky):
    for fig in (
        explore.plot_vote_distribution(sky),
        explore.plot_fractions_by_truth(sky, ["disk-edge-on-dr5", "bar-dr5"]),
        explore.plot_faint_drift(sky, n_bins=4),
    ):
        assert isinstance(fig, matplotlib.figure.Figure)
        assert fig.axes
        plt.close(fig)


def test_real_beside_synthetic_places_real_left_and_synthetic_right(sky, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"real_{i}.png"
        images.save_image(rng.integers(0, 255, (50, 40, 3), dtype=np.uint8), path)
        paths.append(str(path))
    examples = pd.DataFrame(
        {
            "id_str": ["r0", "r1", "r2"],
            "file_loc": paths,
            "dr5_answers": [
                "smooth-or-featured-dr5_smooth",
                "smooth-or-featured-dr5_smooth;how-rounded-dr5_round",
                "",
            ],
        }
    )
    fig = explore.real_beside_synthetic(
        sky, examples, ["smooth-or-featured-dr5_smooth", "bar-dr5_strong"], per_side=2
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 8
    assert titles[0].startswith("real: smooth/feat: smooth")
    assert titles[2].startswith("synthetic")
    assert titles[4] == titles[5] == "(no real example)"
    plt.close(fig)
    # by default: one row for every answer that has a real example (here smooth and round)
    fig = explore.real_beside_synthetic(sky, examples, per_side=1)
    titles = [ax.get_title() for ax in fig.axes]
    assert [t for t in titles if t.startswith("real")] == [
        "real: smooth/feat: smooth",
        "real: rounded: round",
    ]
    plt.close(fig)
    # one part of the tree: only its questions' answers
    fig = explore.real_beside_synthetic(sky, examples, per_side=1, questions=["how-rounded-dr5"])
    assert [t for t in (ax.get_title() for ax in fig.axes) if t.startswith("real")] == [
        "real: rounded: round"
    ]
    plt.close(fig)
    with pytest.raises(ValueError, match="how-round-dr5"):
        explore.real_beside_synthetic(sky, examples, questions=["how-round-dr5"])
    with pytest.raises(ValueError, match="bar-dr5_maybe"):
        explore.real_beside_synthetic(sky, examples, ["bar-dr5_maybe"])
    with pytest.raises(ValueError, match="dr5_answers"):
        explore.real_beside_synthetic(sky, examples.drop(columns="dr5_answers"))


def test_sky_metrics_of_the_synthetic_sky(sky):
    metrics = explore.sky_metrics(sky)
    assert metrics["n_galaxies"] == 300
    assert set(metrics["tag_counts"]) == set(synthetic.TAGS)
    assert sum(metrics["tag_counts"].values()) == int(sky.filter(like="tag_").to_numpy().sum())
    # GZ DECaLS-like: most galaxies have 5-10 volunteers, a sizeable share 30-45
    assert 3 <= metrics["median_votes_per_galaxy"] <= 12
    assert 0.1 <= metrics["fraction_ge_30_votes"] <= 0.5
    assert metrics["share_asked"]["smooth-or-featured-dr5"] == 1.0


def test_tree_table_lists_every_question_once():
    table = explore.tree_table(DECALS_DR5)
    assert list(table.index) == DECALS_DR5.question_names
    assert table["n_answers"].sum() == 34
    assert table.loc["smooth-or-featured-dr5", "asked_when"] == "always"
    assert table.loc["spiral-winding-dr5", "asked_when"] == "has-spiral-arms = yes"
    assert table.loc["merging-dr5", "asked_when"] == (
        "smooth-or-featured = smooth or smooth-or-featured = featured-or-disk"
    )


def test_confident_vs_truth_counts_matches(sky):
    result = explore.confident_vs_truth(sky, "smooth-or-featured-dr5", min_votes=10)
    volunteers = explore._volunteers(sky, DECALS_DR5)
    assert result["n_confident"] <= int((volunteers >= 10).sum())
    assert result["share_confident"] == pytest.approx(result["n_confident"] / len(sky))
    assert result["accuracy"] > 0.8  # agreeing volunteers are usually right
    stricter = explore.confident_vs_truth(sky, "smooth-or-featured-dr5", min_fraction=0.95)
    assert stricter["n_confident"] <= result["n_confident"]
    with pytest.raises(ValueError, match="min_fraction"):
        explore.confident_vs_truth(sky, min_fraction=1.5)


def test_load_real_examples_explains_how_to_get_missing_data(monkeypatch, capsys):
    from galaxy_helpers import data

    monkeypatch.setattr(data, "dataset_available", lambda name: False)
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: pytest.fail("must not download"))
    assert explore.load_real_examples("gz_decals_examples") is None
    out = capsys.readouterr().out
    assert "gz_decals_examples" in out and "GALAXY_DATA_MIRROR" in out

    frame = pd.DataFrame({"id_str": ["a"]})
    monkeypatch.setattr(data, "dataset_available", lambda name: True)
    monkeypatch.setattr(data, "load_dataset", lambda name, progress=True: frame)
    assert explore.load_real_examples("gz_decals_examples") is frame

"""Tests for galaxy_helpers.anomaly: small arrays, seconds each."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from galaxy_helpers import anomaly as A


def planted(n=1500, d=24, n_special=30, seed=0):
    """Gaussian features with a tight cluster of 'interesting' galaxies planted off-centre."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    special = rng.choice(n, n_special, replace=False)
    X[special, :3] += 4.0
    truth = np.zeros(n, dtype=int)
    truth[special] = 5
    # researchers grade: galaxies on the way to the cluster are "a bit interesting"
    rest = np.setdiff1d(np.arange(n), special)
    near = rng.choice(rest, 4 * n_special, replace=False)
    X[near[: 2 * n_special], :3] += 2.5
    truth[near[: 2 * n_special]] = 3
    X[near[2 * n_special :], :3] += 1.2
    truth[near[2 * n_special :]] = 1
    # a second, bigger, boring-but-weird group the isolation forest likes
    weird = rng.choice(np.setdiff1d(rest, near), 60, replace=False)
    X[weird, 3:6] += rng.normal(scale=6.0, size=(60, 3))
    truth[weird] = 1
    return X, truth, special


# ---------------------------------------------------------------- isolation forest
def test_isolation_forest_scores_span_0_to_5_and_rank_outliers_high():
    X, _, _ = planted()
    X[0] = 40.0  # one extreme outlier
    sc = A.IsolationForestScorer(random_state=0).fit(X)
    s = sc.score_samples(X)
    assert s.min() == pytest.approx(0.0) and s.max() == pytest.approx(5.0)
    assert np.argmax(s) == 0
    np.testing.assert_allclose(sc.predict(X), s)
    # new data is clipped to the fitted range
    assert sc.score_samples(np.full((1, X.shape[1]), 1e6)).item() == pytest.approx(5.0)


def test_unfitted_and_bad_input_errors_are_clear():
    with pytest.raises(RuntimeError, match="not fitted"):
        A.IsolationForestScorer().score_samples(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2-d"):
        A.ActiveLearner().fit(np.zeros(5))
    bad = np.zeros((4, 3))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 2 \(id '2'\) column 'dim_1'"):
        A.ActiveLearner().fit(bad)


def test_scores_outside_0_to_5_or_fractional_are_refused():
    X, _, _ = planted(n=400, n_special=10)
    learner = A.ActiveLearner(n_components=5).fit(X)
    for bad in (6, -1, 2.5):
        y = np.full(len(X), np.nan)
        y[3] = bad
        with pytest.raises(ValueError, match=r"rows \[3\]"):
            learner.update(y)
    with pytest.raises(ValueError, match="shape"):
        learner.update(np.zeros(len(X) - 1))


# ---------------------------------------------------------------- astronomaly
def test_astronomaly_combination_matches_published_formula():
    sc = A.AstronomalyScorer(alpha=1.0, min_score=0.1, max_score=5.0)
    d = np.array([0.0, 1.0, 3.0])
    u = np.array([0.0, 5.0, 2.0])
    s = np.array([5.0, 2.0, 1.0])
    f_u = 0.1 + 0.85 * u / 5
    expected = s * np.tanh(np.exp(d / d.mean()) - 1 + np.arctanh(f_u))
    np.testing.assert_allclose(sc.combine(d, u, s), expected)
    # at a labelled galaxy (d=0) a boring prediction (U=0) keeps only tanh(arctanh(0.1)) = 0.1
    assert sc.combine(d, u, s)[0] == pytest.approx(5.0 * 0.1)
    # far from every label the anomaly score comes back
    far = sc.combine(np.array([0.0, 100.0]), np.zeros(2), np.array([3.0, 3.0]))
    assert far[1] == pytest.approx(3.0, rel=1e-4)


def test_astronomaly_fold_in_pushes_labelled_boring_region_down():
    X, truth, special = planted()
    y = np.full(len(X), np.nan)
    sc = A.AstronomalyScorer(random_state=0).fit(X, y)
    np.testing.assert_allclose(sc.predict(), sc.anomaly_scores_)
    first = sc.next_batch(40)
    y[first] = truth[first]
    sc.update(y)
    boring = first[truth[first] < 4]
    assert boring.size, "the forest's top 40 should include boring-but-weird galaxies"
    assert (sc.predict()[boring] < sc.anomaly_scores_[boring]).all()
    # folding in can only lower scores (tanh(...) <= 1)
    assert (sc.predict() <= sc.anomaly_scores_ + 1e-12).all()
    # predict on new rows equals predict on the fitted ones
    np.testing.assert_allclose(sc.predict(X[:50]), sc.predict()[:50], rtol=1e-9)
    assert not set(sc.next_batch(10, exclude=first)) & set(first)


# ---------------------------------------------------------------- GP learner
def test_expected_improvement_properties():
    mean = np.array([0.0, 1.0, 2.0, 2.0])
    std = np.array([1.0, 1.0, 1.0, 0.1])
    ei = A.expected_improvement(mean, std, best=1.5, xi=0.0)
    assert (ei >= 0).all()
    assert ei[2] > ei[1] > ei[0]  # higher mean, same std -> more improvement
    assert ei[2] > ei[3]  # same mean, more uncertainty -> more improvement (mean above best)
    # far above the best with no uncertainty, EI is just the improvement
    assert A.expected_improvement([5.0], [1e-9], best=1.0, xi=0.5)[0] == pytest.approx(3.5)


def test_fast_posterior_equals_scikit_learn_predict():
    X, truth, special = planted(n=800)
    y = np.full(len(X), np.nan)
    rng = np.random.default_rng(1)
    lab = np.concatenate([rng.choice(len(X), 40, replace=False), special[:5]])
    y[lab] = truth[lab]
    learner = A.ActiveLearner(n_components=10, random_state=0).fit(X, y)
    mean, std = learner.predict(return_std=True)
    ref_mean, ref_std = learner.gp_.predict(learner.embedding_, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-6)
    np.testing.assert_allclose(std, ref_std, atol=1e-4)
    # new rows go through the same PCA + scaling
    np.testing.assert_allclose(learner.predict(X[:20]), mean[:20], atol=1e-6)


def test_first_batch_without_labels_random_or_isolation_forest():
    X, _, _ = planted(n=500)
    a = A.ActiveLearner(n_components=8, random_state=3).fit(X).next_batch(10)
    b = A.ActiveLearner(n_components=8, random_state=3).fit(X).next_batch(10)
    c = A.ActiveLearner(n_components=8, random_state=4).fit(X).next_batch(10)
    assert len(set(a)) == 10 and list(a) == list(b) and set(a) != set(c)
    iso_learner = A.ActiveLearner(n_components=8, first_batch="isolation_forest").fit(X)
    forest = A.IsolationForestScorer(random_state=0).fit(iso_learner.embedding_).train_scores_
    np.testing.assert_array_equal(iso_learner.next_batch(5), np.argsort(-forest)[:5])
    with pytest.raises(ValueError, match="first_batch"):
        A.ActiveLearner(first_batch="kmeans").fit(X)


def test_next_batch_excludes_labelled_and_finds_planted_cluster():
    X, truth, special = planted()
    learner = A.ActiveLearner(n_components=20, random_state=0)
    y = np.full(len(X), np.nan)
    y[special[:2]] = 5
    rest = np.setdiff1d(np.arange(len(X)), special)
    y[rest[:20]] = 0
    learner.fit(X, y)
    batch = learner.next_batch(10, exclude=[special[2]])
    labelled = np.flatnonzero(~np.isnan(y))
    assert len(batch) == 10
    assert not set(batch) & set(labelled) and special[2] not in batch
    # two examples are enough to point the GP at the planted cluster
    assert np.isin(batch, special).mean() >= 0.8


def test_estimators_clone_and_take_params():
    learner = A.ActiveLearner(n_components=12, xi=0.1)
    assert clone(learner).get_params()["n_components"] == 12
    assert A.AstronomalyScorer(alpha=2).get_params()["alpha"] == 2


# ---------------------------------------------------------------- metrics
def test_rank_weighted_score_and_precision():
    sorted_int = np.array([1, 1, 0, 0])
    assert A.rank_weighted_score(sorted_int, 2) == pytest.approx(1.0)
    # weights 4,3,2,1 over sum 10: first two interesting = 7/10
    assert A.rank_weighted_score(sorted_int, 4) == pytest.approx(0.7)
    m = A.ranking_metrics(np.arange(4), sorted_int.astype(bool), top_n=(2, 4))
    assert m["precision_at_2"] == 1.0 and m["precision_at_4"] == 0.5
    assert m["recall_at_2"] == 1.0 and m["average_precision"] == pytest.approx(1.0)
    m = A.ranking_metrics(np.array([2, 0, 3, 1]), sorted_int.astype(bool), top_n=(2,))
    # hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2
    assert m["average_precision"] == pytest.approx(0.5)
    # agrees with scikit-learn on a random ranking
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    interesting = rng.random(300) < 0.1
    order = rng.permutation(300)
    rank_score = np.empty(300)
    rank_score[order] = -np.arange(300)
    assert A.ranking_metrics(order, interesting)["average_precision"] == pytest.approx(
        average_precision_score(interesting, rank_score)
    )


def test_ranking_places_labelled_first_and_rejected_last():
    scores = np.array([0.1, 0.9, 0.5, 0.3])
    assert list(A.ranking(scores)) == [1, 2, 3, 0]
    labelled = np.array([5.0, 0.0, np.nan, np.nan])
    assert list(A.ranking(scores, labelled)) == [0, 2, 3, 1]


# ---------------------------------------------------------------- researchers
def sky_like(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id_str": [f"g{i}" for i in range(n)],
            "truth_type": rng.choice(["smooth", "featured", "edge-on"], n),
            "truth_merging": rng.choice(
                ["none", "minor-disturbance", "major-disturbance", "merger"],
                n,
                p=[0.9, 0.05, 0.04, 0.01],
            ),
            "truth_edge_bulge": rng.choice(["", "boxy", "rounded", "none"], n),
            "tag_ring": rng.random(n) < 0.05,
            "tag_lens": rng.random(n) < 0.01,
            "tag_dust-lane": rng.random(n) < 0.03,
            "tag_tidal": rng.random(n) < 0.5,
        }
    )


def test_researchers_score_0_to_5_from_truth():
    cat = sky_like()
    for r in A.RESEARCHERS.values():
        s = r.score(cat)
        assert s.dtype.kind == "i" and s.min() >= 0 and s.max() <= 5
    merger = A.get_researcher("merger hunter").score(cat)
    np.testing.assert_array_equal(merger == 5, cat["truth_merging"].eq("merger") & cat["tag_tidal"])
    np.testing.assert_array_equal(
        merger == 3, cat["truth_merging"].eq("merger") & ~cat["tag_tidal"]
    )
    lens = A.get_researcher("lens hunter").is_interesting(cat)
    np.testing.assert_array_equal(lens, cat["tag_lens"])
    table = A.describe_researchers(cat)
    assert set(table["researcher"]) == set(A.RESEARCHERS)
    with pytest.raises(KeyError, match="merger hunter"):
        A.get_researcher("nobody")
    with pytest.raises(KeyError, match="truth_merging"):
        A.get_researcher("merger hunter").score(cat.drop(columns="truth_merging"))


# ---------------------------------------------------------------- simulation
def test_run_simulation_gp_beats_astronomaly_on_planted_cluster():
    X, truth, special = planted()
    res = A.run_simulation(
        X,
        truth,
        A.ActiveLearner(n_components=20),
        n_labels=60,
        batch=10,
        repeats=2,
        progress=False,
        top_n=(10, 30),
    )
    assert set(res["ranking"]) == {"labelled_first", "predicted"}
    assert sorted(res["n_labels"].unique()) == [10, 20, 30, 40, 50, 60]
    final = res[(res["n_labels"] == 60) & (res["ranking"] == "labelled_first")]
    assert len(final) == 2
    base = A.run_simulation(
        X,
        truth,
        A.AstronomalyScorer(),
        n_labels=60,
        batch=10,
        repeats=1,
        progress=False,
        top_n=(10, 30),
    )
    base_final = base[(base["n_labels"] == 60) & (base["ranking"] == "labelled_first")]
    assert final["precision_at_30"].mean() >= 0.75  # chance: 0.02
    assert final["average_precision"].mean() > 1.3 * base_final["average_precision"].mean()
    iso = A.isolation_forest_metrics(X, truth, top_n=(10,))
    assert 0 <= iso["average_precision"] < final["average_precision"].mean()


def test_repeats_share_one_embedding_but_not_their_first_batch(monkeypatch):
    """The PCA is fitted once per simulation (the paper fits it once on every galaxy); each
    repeat still starts from its own random batch."""
    X, truth, _ = planted(n=400, d=12, n_special=10)
    fits = []
    original = A.ActiveLearner.fit

    def counting_fit(self, X, y=None, embedding_from=None):
        fits.append(embedding_from is None)
        return original(self, X, y, embedding_from=embedding_from)

    monkeypatch.setattr(A.ActiveLearner, "fit", counting_fit)
    res = A.run_simulation(
        X, truth, A.ActiveLearner(n_components=8), n_labels=20, repeats=3, progress=False, jobs=1
    )
    assert fits == [True, False, False, False]  # one PCA, reused by every repeat
    first = res[res["n_labels"] == 10].groupby("repeat")["n_interesting_labelled"].first()
    assert len(first) == 3
    a = A.ActiveLearner(n_components=8, random_state=0).fit(X)
    b = A.ActiveLearner(n_components=8, random_state=1).fit(X, embedding_from=a)
    assert b.embedding_ is a.embedding_
    assert not np.array_equal(a.next_batch(10), b.next_batch(10))
    with pytest.raises(ValueError, match="same galaxies and components"):
        A.ActiveLearner(n_components=6).fit(X, embedding_from=a)
    with pytest.raises(RuntimeError, match="not fitted"):
        A.ActiveLearner(n_components=8).fit(X, embedding_from=A.ActiveLearner())


def test_repeats_in_worker_processes_give_the_same_tables():
    """Each repeat is seeded on its own: 2 workers, 1 worker and one pooled call agree."""
    X, truth, _ = planted(n=500, d=12, n_special=10)
    args = dict(n_labels=30, repeats=3, progress=False, top_n=(10, 30))
    gp = A.ActiveLearner(n_components=8)
    one = A.run_simulation(X, truth, gp, jobs=1, **args)
    two = A.run_simulation(X, truth, gp, jobs=2, **args)
    pd.testing.assert_frame_equal(one, two)
    assert sorted(one["repeat"].unique()) == [0, 1, 2]
    forest = A.run_simulation(X, truth, A.AstronomalyScorer(), jobs=1, **args | {"repeats": 1})
    runs = [dict(X=X, researcher_scores=truth, learner=gp, **args)]
    runs.append(dict(X=X, researcher_scores=truth, learner=A.AstronomalyScorer(), **args))
    runs[1]["repeats"] = 1
    for r in runs:
        r.pop("progress")
    pooled = A.run_simulations(runs, jobs=2, progress=False)
    pd.testing.assert_frame_equal(pooled[0], one)
    pd.testing.assert_frame_equal(pooled[1], forest)


def test_tables_and_figures_from_simulation_results():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X, truth, _ = planted(n=600, n_special=12)
    Z = A.pca_embedding(X, n_components=10)
    assert Z.shape == (600, 10)
    np.testing.assert_allclose(Z.std(0), 1.0, rtol=1e-6)
    res = {
        "GP": A.run_simulation(
            X,
            truth,
            A.ActiveLearner(n_components=10),
            n_labels=20,
            repeats=2,
            progress=False,
            top_n=(5, 10, 20),
        ),
        "Astronomaly": A.run_simulation(
            Z,
            truth,
            A.AstronomalyScorer(),
            n_labels=20,
            repeats=1,
            progress=False,
            top_n=(5, 10, 20),
        ),
    }
    table = A.comparison_table(res, metrics=("precision_at_10", "average_precision"))
    assert list(table.index) == ["GP", "Astronomaly"]
    assert table.loc["GP", "repeats"] == 2 and table.loc["GP", "n_labels"] == 20
    final = res["GP"][(res["GP"]["n_labels"] == 20) & (res["GP"]["ranking"] == "labelled_first")]
    assert table.loc["GP", "precision_at_10"] == pytest.approx(final["precision_at_10"].mean())
    fig = A.plot_learning_curves(
        res,
        metrics=("precision_at_10", "average_precision"),
        baselines={"forest": {"precision_at_10": 0.1, "average_precision": 0.1}},
    )
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3
    fig2 = A.plot_rank_weighted_scores(res)
    assert [len(line.get_xdata()) for line in fig2.axes[0].lines] == [3, 3]
    plt.close("all")


def test_compare_methods_tables_metrics_and_headline():
    X, truth, _ = planted(n=500, d=12, n_special=10)
    table = pd.DataFrame(X, columns=[f"feat_{i:03d}" for i in range(X.shape[1])])
    table.insert(0, "id_str", [f"g{i}" for i in range(len(X))])
    res = A.compare_methods(table, truth, n_components=8, n_labels=20, repeats=2, progress=False)
    assert list(res) == [A.PAPER, A.ASTRONOMALY]
    # the table and the array give the same search; Astronomaly runs on the paper's embedding
    same = A.run_simulation(
        X, truth, A.ActiveLearner(n_components=8), n_labels=20, repeats=2, progress=False
    )
    pd.testing.assert_frame_equal(res[A.PAPER], same)
    forest = A.isolation_forest_metrics(A.pca_embedding(X, 8), truth)
    shown = res.table(20, no_labels=forest, std=False)
    assert list(shown.columns) == [
        "n_labels",
        "repeats",
        "precision_at_50",
        "precision_at_200",
        "average_precision",
    ]
    assert shown.loc["isolation forest, no labels", "n_labels"] == 0
    m = res.metrics(20, no_labels=forest)
    assert m["repeats"] == 2 and m["n_labels"] == 20
    assert m["average_precision"] == shown.loc[A.PAPER, "average_precision"]
    assert m["precision_at_50_isolation_forest_no_labels"] == forest["precision_at_50"]
    head = res.headline(20)
    assert head["GP precision@50 after 20 labels"] == m["precision_at_50"]


def test_plot_ranking_and_researcher_examples(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n = 30
    files = []
    for i in range(n):
        path = tmp_path / f"g{i}.png"
        Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8)).save(path)
        files.append(str(path))
    cat = pd.DataFrame({"id_str": [f"g{i}" for i in range(n)], "file_loc": files})
    cat["truth_merging"] = np.where(np.arange(n) % 5 == 0, "merger", "none")
    cat["tag_tidal"] = np.arange(n) % 10 == 0
    researcher = A.get_researcher("merger hunter")
    fig = researcher.plot_examples(cat, k=4)
    # rows 0, 10, 20 are mergers with tidal tails (5); 5, 15, 25 plain mergers (3) fall below 4
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["score 5"] * 3
    scores = researcher.score(cat)
    labels = np.full(n, np.nan)
    labels[[0, 1]] = scores[[0, 1]]
    predicted = np.linspace(0, 1, n)
    fig, found = A.plot_ranking(cat, predicted, labels, scores, k=6)
    order = A.ranking(predicted, labels)
    assert found == A.ranking_metrics(order, scores >= A.INTERESTING_SCORE, top_n=(50,))
    assert fig.axes[0].get_title().startswith(f"{scores[order[0]]} (labelled)")
    plt.close("all")

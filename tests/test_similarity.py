"""Tests of the similarity index: exact against brute force, backends agree, clear errors."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import pairwise_distances

from galaxy_helpers.similarity import (
    SimilarityIndex,
    build_index,
    faiss_available,
    feature_matrix,
    precision_at_k_by_tag,
    summarise_comparison,
)

METRICS = ["cosine", "euclidean", "manhattan"]
BACKENDS = ["numpy", "kdtree"] + (["faiss"] if faiss_available() else [])


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((600, 6)) * np.linspace(3, 0.5, 6)).astype(np.float32)
    df = pd.DataFrame(x, columns=[f"pca_{i:02d}" for i in range(6)])
    df.insert(0, "id_str", [f"g{i:04d}" for i in range(600)])
    return df


def brute_force(x, queries, metric, k, exclude=None):
    d = pairwise_distances(queries.astype(np.float64), x.astype(np.float64), metric=metric)
    if exclude is not None:
        d[np.arange(len(exclude)), exclude] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_query_by_id_matches_brute_force(table, metric, backend):
    # chunk_size smaller than the table exercises the merge of per-chunk candidates
    index = SimilarityIndex(metric=metric, backend=backend, chunk_size=97).fit(table)
    ids = table["id_str"].to_numpy()
    x = table.drop(columns="id_str").to_numpy()
    queries = [5, 77, 401]
    found = index.query(list(ids[queries]), k=10)
    order, dist = brute_force(x, x[queries], metric, 10, exclude=queries)
    assert found["id_str"].tolist() == list(ids[order].ravel())
    np.testing.assert_allclose(found["distance"], dist.ravel(), rtol=1e-5, atol=1e-6)
    assert found["rank"].tolist() == list(range(1, 11)) * 3
    assert found["query"].tolist() == sum([[ids[q]] * 10 for q in queries], [])


@pytest.mark.parametrize("metric", METRICS)
def test_backends_identical(table, metric):
    ids = table["id_str"].tolist()[:50]
    results = [
        SimilarityIndex(metric=metric, backend=b, chunk_size=128).fit(table).query(ids, k=7)
        for b in BACKENDS
    ]
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other)


def test_vector_query_and_self_kept(table):
    index = SimilarityIndex(metric="euclidean").fit(table)
    v = table.iloc[3, 1:].to_numpy(dtype=float)
    found = index.query(v, k=3)
    assert found["query"].tolist() == ["vector_0"] * 3
    assert found["id_str"].iloc[0] == "g0003"
    assert found["distance"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    both = index.query(np.stack([v, v]), k=2)
    assert both["query"].tolist() == ["vector_0", "vector_0", "vector_1", "vector_1"]
    # by id, the query itself is excluded unless asked
    assert "g0003" not in index.query("g0003", k=5)["id_str"].tolist()
    assert index.query("g0003", k=1, exclude_self=False)["id_str"].iloc[0] == "g0003"


def test_ties_broken_by_catalogue_order():
    x = np.zeros((6, 2), dtype=np.float32)
    x[0] = [1, 0]
    for backend in BACKENDS:
        index = SimilarityIndex(metric="euclidean", backend=backend).fit(x, ids=list("abcdef"))
        assert index.query("a", k=5)["id_str"].tolist() == list("bcdef")


def test_k_larger_than_index():
    index = SimilarityIndex(metric="euclidean").fit(np.eye(3), ids=["a", "b", "c"])
    assert index.query("a", k=10)["id_str"].tolist() == ["b", "c"]


def test_unknown_id_is_a_clear_error(table):
    index = SimilarityIndex().fit(table)
    with pytest.raises(KeyError, match="unknown galaxy id 'g9999'.*600 galaxies"):
        index.query("g9999")
    with pytest.raises(KeyError, match="g00x1"):
        index.query(["g0001", "g00x1"])


def test_empty_and_nan_tables_are_refused(table):
    with pytest.raises(ValueError, match="empty"):
        SimilarityIndex().fit(table.iloc[:0])
    with pytest.raises(ValueError, match="empty"):
        SimilarityIndex().fit(np.zeros((0, 4)))
    bad = table.copy()
    bad.loc[7, "pca_02"] = np.nan
    with pytest.raises(ValueError, match=r"row 7 \(id 'g0007'\) column 'pca_02'"):
        SimilarityIndex().fit(bad)
    with pytest.raises(ValueError, match="duplicate ids"):
        SimilarityIndex().fit(np.ones((2, 2)), ids=["a", "a"])
    with pytest.raises(ValueError, match="not numeric"):
        SimilarityIndex().fit(table.assign(note="x"))


def test_mismatched_dimensions_and_bad_settings(table):
    index = SimilarityIndex().fit(table)
    with pytest.raises(ValueError, match="query has 4 dimensions but the index was fitted on 6"):
        index.query(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        index.query(np.full(6, np.nan))
    with pytest.raises(ValueError, match="unknown metric"):
        SimilarityIndex(metric="hamming").fit(table)
    with pytest.raises(ValueError, match="unknown backend"):
        SimilarityIndex(backend="annoy").fit(table)
    with pytest.raises(RuntimeError, match="not fitted"):
        SimilarityIndex().query("g0001")
    with pytest.raises(ValueError, match="all-zero"):
        SimilarityIndex(metric="cosine").fit(np.zeros((3, 2)), ids=["a", "b", "c"])


def test_feature_matrix_keeps_ids_and_columns(table):
    ids, x, cols = feature_matrix(table)
    assert ids[0] == "g0000" and x.dtype == np.float32 and cols[0] == "pca_00"


def test_precision_at_k_by_tag_on_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    labels = np.repeat([0, 1, 2], 30)
    x = centres[labels] + rng.normal(0, 0.5, (90, 2))
    ids = [f"g{i}" for i in range(90)]
    cat = pd.DataFrame(
        {
            "id_str": ids,
            "tag_ring": labels == 1,
            # a tag spread at random over the clusters: precision near chance
            "tag_diffuse": np.arange(90) % 3 == 0,
        }
    )
    index = SimilarityIndex(metric="euclidean").fit(x, ids=ids)
    scores = precision_at_k_by_tag(index, cat, k=10).set_index("tag")
    assert scores.loc["ring", "precision_at_k"] == 1.0
    assert scores.loc["ring", "n_members"] == 30
    assert scores.loc["ring", "chance"] == pytest.approx(29 / 89)
    assert abs(scores.loc["diffuse", "precision_at_k"] - 29 / 89) < 0.15
    only = precision_at_k_by_tag(index, cat, tags=["tag_ring"], k=5, min_members=31)
    assert only.empty
    with pytest.raises(ValueError, match="tags available"):
        precision_at_k_by_tag(index, cat, tags=["lens"])


def test_build_index_with_pca(table):
    index, pca = build_index(table, n_components=3, metric="manhattan")
    assert index.n_features_in_ == 3 and pca.n_features_in_ == 6
    assert len(index.query("g0001", k=4)) == 4
    assert pca.scale_features  # search standardises each dimension before the PCA by default
    _, plain = build_index(table, n_components=3, scale_features=False)
    assert "scale" not in plain.pipeline_.named_steps and "scale" in pca.pipeline_.named_steps


def test_numpy_backend_bounds_memory_by_blocking_queries(table, monkeypatch):
    import galaxy_helpers.similarity as sim

    ids = table["id_str"].tolist()[:50]
    expected = SimilarityIndex(metric="euclidean", backend="kdtree").fit(table).query(ids, k=5)
    # 500 distances at a time: chunks of 97 rows x blocks of 5 queries
    monkeypatch.setattr(sim, "_BLOCK_ELEMENTS", 500)
    index = SimilarityIndex(metric="euclidean", backend="numpy", chunk_size=97).fit(table)
    pd.testing.assert_frame_equal(index.query(ids, k=5), expected)


def test_summarise_comparison_means_and_wins():
    table = pd.DataFrame(
        {
            "tag": ["a", "b", "c", "d"],
            "representation": [0.5, 0.4, 0.1, 0.8],
            "pixel_pca": [0.1, 0.5, 0.1, 0.2],
            "random_weights": [0.2, 0.1, 0.0, 0.3],
            "chance": [0.05, 0.05, 0.05, 0.05],
        }
    )
    s = summarise_comparison(table)
    assert list(s.index) == ["representation", "pixel_pca", "random_weights", "chance"]
    assert s.loc["representation", "mean_precision"] == pytest.approx(0.45)
    assert s.loc["pixel_pca", "mean_precision"] == pytest.approx(0.225)
    # a tie (tag c, 0.1 vs 0.1) is not a win
    assert s.loc["pixel_pca", "representation_wins"] == pytest.approx(0.5)
    assert s.loc["random_weights", "representation_wins"] == pytest.approx(1.0)
    assert np.isnan(s.loc["representation", "representation_wins"])
    with pytest.raises(ValueError, match="compare_with_baselines"):
        summarise_comparison(table.drop(columns="representation"))


def test_comparison_metrics_and_headline_are_the_notebooks_entries():
    from galaxy_helpers.similarity import comparison_headline, comparison_metrics

    table = pd.DataFrame(
        {
            "tag": ["ring", "lens"],
            "n_members": [170, 55],
            "chance": [0.03, 0.01],
            "representation": [0.5, 0.3],
            "pixel_pca": [0.1, 0.2],
            "random_weights": [0.2, 0.1],
        }
    )
    m = comparison_metrics(table, k=10)
    assert list(m)[:5] == [
        "precision_at_10",
        "precision_at_10_pixel_pca",
        "precision_at_10_random_weights",
        "chance_at_10",
        "tag_members",
    ]
    assert m["precision_at_10"] == {"ring": 0.5, "lens": 0.3}
    assert m["tag_members"] == {"ring": 170, "lens": 55}
    assert m["mean_precision_at_10_pixel_pca"] == pytest.approx(0.15)
    assert comparison_headline(table) == {
        "mean precision@10": 0.4,
        "raw-pixel baseline": 0.15,
        "random-weights baseline": 0.15,
    }


def test_tag_query_marks_the_neighbours_that_share_the_tag(table):
    from galaxy_helpers.similarity import tag_query

    index = SimilarityIndex(metric="euclidean").fit(table)
    catalogue = table[["id_str"]].assign(tag_ring=np.arange(len(table)) % 3 == 0)
    found = tag_query(index, catalogue, "ring", k=5, seed=0)
    ring_ids = catalogue.loc[catalogue["tag_ring"], "id_str"]
    query = str(np.random.default_rng(0).choice(ring_ids))
    assert (found["query"] == query).all() and len(found) == 5
    assert found["tag_ring"].tolist() == found["id_str"].isin(set(ring_ids)).tolist()

"""Similarity search (notebook 04): :class:`SimilarityIndex`, an exact nearest-neighbour index,
fitted by :func:`build_index` on a PCA of notebook 03's table; baselines and figures."""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_helpers.representations import (
    RepresentationPCA,
    embed_images,
    extract_representations,
    feature_matrix,
    pixel_features,
    random_weights_model,
)

METRICS = ("cosine", "euclidean", "manhattan")
BACKENDS = ("auto", "numpy", "kdtree", "faiss")

_BLOCK_ELEMENTS = 1 << 22  # distances the NumPy backend holds at once (rows x queries), 32 MB
_KDTREE_MAX_DIMS = 24  # above this a k-d tree stops paying off and "auto" uses brute force


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package can be imported."""
    return importlib.util.find_spec("faiss") is not None


class SimilarityIndex:
    """Exact k-nearest-neighbour search over galaxy representations.

    Parameters
    ----------
    metric : {"cosine", "euclidean", "manhattan"}
        ``1 - cos(a, b)``, L2 or L1.
    chunk_size : int
        Rows compared at once by the NumPy backend.
    backend : {"auto", "numpy", "kdtree", "faiss"}
        All give identical results; ``"auto"``: a k-d tree up to 24 dims, else FAISS, else NumPy.

    Attributes
    ----------
    ids_, backend_ : the fitted galaxy ids (catalogue order) and the backend used

    Examples
    --------
    >>> index = SimilarityIndex(metric="euclidean").fit(pca_table)  # doctest: +SKIP
    >>> index.query("synth_000042", k=10)                           # doctest: +SKIP
    """

    def __init__(self, metric: str = "cosine", chunk_size: int = 65536, backend: str = "auto"):
        self.metric = metric
        self.chunk_size = chunk_size
        self.backend = backend

    def fit(self, features, ids=None) -> SimilarityIndex:
        """Index the representations (a table, or an array with ``ids``); returns self."""
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {METRICS}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}")
        if int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {self.chunk_size!r}")
        ids, matrix, columns = feature_matrix(features, ids)
        self.ids_ = ids
        self.feature_names_in_ = columns
        self.n_features_in_ = matrix.shape[1]
        self._id_index = pd.Index(ids)
        # the search space: candidates are found by Minkowski p (cosine: L2 on unit vectors)
        self._matrix = self._to_search_space(matrix, ids)
        self._p = 1 if self.metric == "manhattan" else 2
        backend = self.backend
        if backend == "auto":
            fast = "faiss" if faiss_available() else "numpy"
            backend = "kdtree" if self.n_features_in_ <= _KDTREE_MAX_DIMS else fast
        self.backend_ = backend
        self._tree = self._faiss = self._sq_norms = None
        if backend == "numpy" and self._p == 2:
            self._sq_norms = (self._matrix.astype(np.float64) ** 2).sum(axis=1)
        if backend == "kdtree":
            from scipy.spatial import cKDTree

            self._tree = cKDTree(
                self._matrix, leafsize=32, balanced_tree=False, compact_nodes=False
            )
        elif backend == "faiss":
            if not faiss_available():
                raise ImportError(
                    "backend='faiss' needs the optional faiss package: `pip install faiss-cpu`, "
                    "or use backend='auto' (exact search without it)"
                )
            import faiss

            d, l1 = self.n_features_in_, faiss.METRIC_L1
            self._faiss = faiss.IndexFlatL2(d) if self._p == 2 else faiss.IndexFlat(d, l1)
            self._faiss.add(self._matrix)
        return self

    def _to_search_space(self, matrix: np.ndarray, ids, dtype=np.float32) -> np.ndarray:
        """Unit-normalise for cosine (cosine ranking == Euclidean ranking on unit vectors)."""
        if self.metric != "cosine":
            return np.ascontiguousarray(matrix, dtype=dtype)
        norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
        zero = np.flatnonzero(norms == 0)
        if len(zero):
            raise ValueError(
                f"cosine distance is undefined for all-zero vectors: rows {list(zero[:5])} "
                f"(ids {[str(ids[i]) for i in zero[:5]]}); use metric='euclidean' or drop them"
            )
        return np.ascontiguousarray(matrix / norms[:, None], dtype=dtype)

    def _check_fitted(self):
        if not hasattr(self, "ids_"):
            raise RuntimeError("this SimilarityIndex is not fitted yet: call .fit(features) first")

    def __len__(self) -> int:
        self._check_fitted()
        return len(self.ids_)

    def rows_of(self, ids) -> np.ndarray:
        """Row numbers of galaxy ids; a clear error names any unknown id."""
        self._check_fitted()
        ids = [str(g) for g in ([ids] if isinstance(ids, str) else ids)]
        rows = self._id_index.get_indexer(ids)
        for gid, row in zip(ids, rows, strict=True):
            if row < 0:
                close = difflib.get_close_matches(gid, self.ids_[:100000].tolist(), n=3)
                hint = f" Did you mean {close}?" if close else ""
                raise KeyError(
                    f"unknown galaxy id {gid!r}: it is not among the {len(self.ids_)} galaxies "
                    f"of this index.{hint} Query with an id from the catalogue, or pass a "
                    "vector / use query_image for a galaxy outside it."
                )
        return np.asarray(rows, dtype=np.int64)

    def __contains__(self, galaxy_id) -> bool:
        self._check_fitted()
        return str(galaxy_id) in self._id_index

    def query(self, query, k: int = 10, exclude_self: bool = True) -> pd.DataFrame:
        """The k nearest neighbours of one or more galaxy ids or vectors.

        Parameters
        ----------
        query : str, sequence of str, or array-like
            A galaxy id, a list of ids, or vectors (D,) / (M, D) in the fitted space.
        k : int
            Neighbours per query (``exclude_self``: a query galaxy is not its own neighbour).

        Returns
        -------
        pandas.DataFrame
            ``query`` (the id, or ``vector_<i>``), ``rank`` (1 = nearest), ``id_str``,
            ``distance``; ``k`` rows per query.
        """
        self._check_fitted()
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if isinstance(query, str) or (
            isinstance(query, Sequence | np.ndarray | pd.Series | pd.Index)
            and len(query) > 0
            and isinstance(np.asarray(query, dtype=object).ravel()[0], str)
        ):
            names = [query] if isinstance(query, str) else [str(q) for q in query]
            rows = self.rows_of(names)
            vectors = self._matrix[rows].astype(np.float64)
            self_rows = rows if exclude_self else None
        else:
            names, vectors, _ = feature_matrix(query, what="query vectors", dtype=np.float64)
            if vectors.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"query has {vectors.shape[1]} dimensions but the index was fitted on "
                    f"{self.n_features_in_}; transform the query the same way as the indexed "
                    "features (e.g. the same PCA)"
                )
            vectors = self._to_search_space(vectors, names, dtype=np.float64)
            names = [f"vector_{i}" for i in names]
            self_rows = None
        idx, dist = self._search(vectors, k, self_rows)
        n_found = idx.shape[1]
        return pd.DataFrame(
            {
                "query": np.repeat(np.asarray(names, dtype=object), n_found),
                "rank": np.tile(np.arange(1, n_found + 1), len(names)),
                "id_str": self.ids_[idx.ravel()],
                "distance": dist.ravel(),
            }
        )

    def query_image(self, path, model, metadata: dict, pca=None, k: int = 10) -> pd.DataFrame:
        """The neighbours of an image outside the catalogue (``representations.embed_images``,
        then ``pca``, the index's if any); as :meth:`query`, ``query`` = the file name."""
        vector = embed_images([path], model, metadata)
        if pca is not None:
            vector = pca.transform(vector)
        if vector.shape[1] != getattr(self, "n_features_in_", vector.shape[1]):
            raise ValueError(
                f"the model gives {vector.shape[1]}-d vectors but the index has "
                f"{self.n_features_in_} dimensions: pass the PCA used to build the index as pca=..."
            )
        result = self.query(vector, k=k)
        result["query"] = Path(path).name
        return result

    def _search(self, vectors: np.ndarray, k: int, self_rows):
        """Exact search: candidates from the backend, then one float64 re-ranking for all."""
        n = len(self.ids_)
        want = min(k + (1 if self_rows is not None else 0), n)
        # A margin of extra candidates makes the final float64 ranking immune to the rounding
        # of each backend's own float32 arithmetic near the k-th distance.
        n_cand = min(n, want + max(k, 8))
        if self.backend_ == "kdtree":
            _, cand = self._tree.query(vectors, k=n_cand, p=self._p)
            cand = np.asarray(cand, dtype=np.int64).reshape(len(vectors), n_cand)
        elif self.backend_ == "faiss":
            import faiss

            # OpenMP threads only pay off for batches; for one click they spin and wait.
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1 if len(vectors) < 16 else threads)
            q32 = np.ascontiguousarray(vectors, dtype=np.float32)
            try:
                _, cand = self._faiss.search(q32, n_cand)
            finally:
                faiss.omp_set_num_threads(threads)
            cand = cand.astype(np.int64)
        else:
            cand = self._numpy_candidates(vectors, n_cand)
        dist = self._exact_distances(vectors, cand)
        order = np.lexsort((cand, dist), axis=1)  # by distance, ties by catalogue row
        cand = np.take_along_axis(cand, order, axis=1)
        dist = np.take_along_axis(dist, order, axis=1)
        if self_rows is not None and len(cand):  # drop the query itself, keep k of the rest
            keep = cand != self_rows[:, None]
            cand = np.stack([c[m][:k] for c, m in zip(cand, keep, strict=True)])
            dist = np.stack([d[m][:k] for d, m in zip(dist, keep, strict=True)])
        else:
            cand, dist = cand[:, :k], dist[:, :k]
        return cand, dist

    def _numpy_candidates(self, vectors: np.ndarray, n_cand: int) -> np.ndarray:
        """Chunked brute force, L2 as ``|x|^2 - 2 x.q`` (made exact by the float64 re-ranking)."""
        from scipy.spatial.distance import cdist

        matrix = self._matrix
        chunk = max(1, min(int(self.chunk_size), len(matrix)))
        q_block = max(1, _BLOCK_ELEMENTS // chunk)
        out = []
        for q0 in range(0, len(vectors), q_block):
            qv = vectors[q0 : q0 + q_block]
            q32 = qv.astype(np.float32)
            m = len(qv)
            best_d = np.full((m, 0), np.inf)
            best_i = np.zeros((m, 0), dtype=np.int64)
            for start in range(0, len(matrix), chunk):
                block = matrix[start : start + chunk]
                if self._p == 2:
                    d = self._sq_norms[start : start + chunk][None, :] - 2.0 * (q32 @ block.T)
                else:
                    d = cdist(qv, block.astype(np.float64), metric="cityblock")
                rows = np.broadcast_to(np.arange(start, start + len(block)), d.shape)
                best_d = np.concatenate([best_d, d], axis=1)
                best_i = np.concatenate([best_i, rows], axis=1)
                if best_d.shape[1] > n_cand:
                    keep = np.argpartition(best_d, n_cand - 1, axis=1)[:, :n_cand]
                    best_d = np.take_along_axis(best_d, keep, axis=1)
                    best_i = np.take_along_axis(best_i, keep, axis=1)
            out.append(best_i)
        return np.concatenate(out)

    def _exact_distances(self, vectors: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Float64 distances between each query and its candidate rows, in the user's metric."""
        rows = self._matrix[cand].astype(np.float64)  # (M, C, D)
        diff = rows - vectors[:, None, :]
        if self.metric == "manhattan":
            return np.abs(diff).sum(axis=2)
        if self.metric == "euclidean":
            return np.sqrt((diff**2).sum(axis=2))
        # cosine on unit vectors; clip the rounding of 1 - cos for identical vectors
        return np.clip(1.0 - np.einsum("mcd,md->mc", rows, vectors), 0.0, 2.0)


def build_index(
    features,
    n_components: int | None = 10,
    metric: str = "euclidean",
    backend: str = "auto",
    scale_features: bool = True,
):
    """``(index, pca)``: a :class:`SimilarityIndex` on ``n_components`` PCA components (``None``:
    all features, pca None), as the paper searches PCA-10. ``scale_features`` standardises each
    dimension first, so rare features such as rings are not left to components a 10-d search
    drops (course checkpoint, mean precision@10: 0.56 scaled, 0.49 not)."""
    pca = None
    if n_components is not None:
        pca = RepresentationPCA(n_components, scale_features=scale_features).fit(features)
        features = pca.transform(features)
    return SimilarityIndex(metric=metric, backend=backend).fit(features), pca


def tag_columns(catalogue: pd.DataFrame, tags=None) -> dict[str, str]:
    """``{tag: column}`` (``ring`` -> ``tag_ring``) for ``tags``, default all; an unknown tag
    raises a ValueError listing those that exist."""
    available = {c[4:]: c for c in catalogue.columns if str(c).startswith("tag_")}
    if tags is None:
        if not available:
            raise ValueError("the catalogue has no tag_<name> columns to evaluate against")
        return available
    out = {}
    for tag in [tags] if isinstance(tags, str) else tags:
        name = str(tag).removeprefix("tag_")
        if name not in available:
            raise ValueError(
                f"no column 'tag_{name}' in the catalogue; tags available: {sorted(available)}"
            )
        out[name] = available[name]
    return out


def tag_members(index: SimilarityIndex, catalogue: pd.DataFrame, tags=None) -> dict:
    """``{tag: ids}``: the galaxies of ``index`` carrying each tag, in catalogue order."""
    ids = catalogue["id_str"].astype(str)
    in_index = ids.isin(set(index.ids_)).to_numpy()
    return {
        name: ids[in_index & catalogue[column].fillna(False).astype(bool).to_numpy()].tolist()
        for name, column in tag_columns(catalogue, tags).items()
    }


def precision_at_k_by_tag(
    index: SimilarityIndex,
    catalogue: pd.DataFrame,
    tags=None,
    k: int = 10,
    min_members: int = 1,
) -> pd.DataFrame:
    """Precision@k per tag: the share of each tagged galaxy's k neighbours carrying its tag.

    ``tags``: ``"ring"`` or ``"tag_ring"`` (default every ``tag_`` column); tags with under
    ``min_members`` galaxies are left out. Returns one row per tag: ``tag``, ``n_members``,
    ``precision_at_k``, ``chance`` (the tag's share of the other galaxies)."""
    index._check_fitted()
    if "id_str" not in catalogue.columns:
        raise ValueError("catalogue needs an 'id_str' column to match the index")
    n = len(index)
    rows = []
    for name, members in tag_members(index, catalogue, tags).items():
        if len(members) < max(1, int(min_members)):
            continue
        found = index.query(members, k=k, exclude_self=True)
        hit = found["id_str"].isin(set(members)).to_numpy()
        per_query = pd.Series(hit).groupby(found["query"].to_numpy()).mean()
        chance = (len(members) - 1) / max(n - 1, 1)
        rows.append([name, len(members), float(per_query.mean()), chance])
    return pd.DataFrame(rows, columns=["tag", "n_members", "precision_at_k", "chance"])


def compare_with_baselines(
    representations: pd.DataFrame,
    catalogue: pd.DataFrame,
    model=None,
    metadata: dict | None = None,
    tags=None,
    k: int = 10,
    n_components: int = 10,
    metric: str = "euclidean",
    min_members: int = 20,
    pixel_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    scale_features: bool = True,
) -> pd.DataFrame:
    """Precision@k of the representation table, of raw pixels (``pixel_pca``, at
    ``pixel_size``) and of random weights (``random_weights``, ``seed``; the architecture of
    ``model`` or ``metadata``) with the same components, metric and k (as
    :func:`precision_at_k_by_tag` and :func:`build_index`); ``catalogue`` needs ``id_str``,
    ``file_loc`` and ``tag_`` columns. Returns ``tag``, ``n_members``, ``chance`` and one
    precision column per method."""
    if metadata is None:
        from galaxy_helpers.checkpoints import load_model

        _, metadata = load_model(model)
    by_id = catalogue.set_index(catalogue["id_str"].astype(str))
    cat = by_id.loc[representations["id_str"].astype(str)].reset_index(drop=True)
    random_model = random_weights_model(metadata, seed=seed)
    tables = {
        "representation": representations,
        "pixel_pca": pixel_features(cat, image_size=pixel_size, progress=progress),
        "random_weights": extract_representations(random_model, cat, progress=progress),
    }
    result = None
    for method, table in tables.items():
        index, _ = build_index(
            table, n_components=n_components, metric=metric, scale_features=scale_features
        )
        scores = precision_at_k_by_tag(index, cat, tags=tags, k=k, min_members=min_members)
        scores = scores.rename(columns={"precision_at_k": method})
        first = scores[["tag", "n_members", "chance", method]]
        result = first if result is None else result.merge(scores[["tag", method]], on="tag")
    return result


def summarise_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Each method's mean precision@k over the tags of a :func:`compare_with_baselines` table
    (``mean_precision``) and the share of tags the representation wins against it
    (``representation_wins``), indexed by method."""
    methods = [m for m in ("representation", "pixel_pca", "random_weights", "chance") if m in table]
    if "representation" not in methods or table.empty:
        raise ValueError(
            "summarise_comparison needs the table of compare_with_baselines (a 'representation' "
            f"column and at least one tag); got columns {list(table.columns)}"
        )
    rows, ours = {}, table["representation"]
    for m in methods:
        wins = np.nan if m == "representation" else float((ours > table[m]).mean())
        rows[m] = {"mean_precision": float(table[m].mean()), "representation_wins": wins}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def comparison_metrics(table: pd.DataFrame, k: int = 10) -> dict:
    """A :func:`compare_with_baselines` table as metrics-file entries: per-tag precision@k of
    each method, chance and members, then each method's mean over the tags."""
    per_tag, means = table.set_index("tag"), summarise_comparison(table)["mean_precision"]
    names = {"representation": "", "pixel_pca": "_pixel_pca", "random_weights": "_random_weights"}
    out = {f"precision_at_{k}{s}": per_tag[m].to_dict() for m, s in names.items()}
    out[f"chance_at_{k}"] = per_tag["chance"].to_dict()
    out["tag_members"] = per_tag["n_members"].astype(int).to_dict()
    out.update({f"mean_precision_at_{k}{s}": float(means[m]) for m, s in names.items()})
    return out


def comparison_headline(table: pd.DataFrame, k: int = 10) -> dict:
    """Mean precision@k of the representation and of both baselines, rounded to 3 digits."""
    means = summarise_comparison(table)["mean_precision"]
    return {
        f"mean precision@{k}": round(float(means["representation"]), 3),
        "raw-pixel baseline": round(float(means["pixel_pca"]), 3),
        "random-weights baseline": round(float(means["random_weights"]), 3),
    }


def plot_precision_by_tag(table: pd.DataFrame, k: int = 10, ax=None):
    """Grouped bars: precision@k per tag for each method of ``table``, with the chance level."""
    import matplotlib.pyplot as plt

    labels = {
        "representation": "trained representation",
        "pixel_pca": "PCA of raw pixels",
        "random_weights": "random weights",
        "precision_at_k": "precision@k",
    }
    methods = [c for c in labels if c in table]
    size = (max(6.0, 1.1 * len(table) + 2), 4.0)
    fig, ax = plt.subplots(figsize=size) if ax is None else (ax.figure, ax)
    x = np.arange(len(table))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, table[m], width, label=labels[m])
    if "chance" in table:
        ax.scatter(x, table["chance"], marker="_", s=400, color="k", zorder=3, label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"#{t}\n(n={n})" for t, n in zip(table["tag"], table["n_members"], strict=True)]
    )
    ax.set(ylabel=f"precision@{k}", ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"How many of the {k} nearest neighbours share the query's tag")
    fig.tight_layout()
    return fig


def query_rows(
    index: SimilarityIndex,
    catalogue: pd.DataFrame,
    tags=None,
    k: int = 7,
    seed: int = 0,
    queries: dict | None = None,
    image_size: int | None = None,
):
    """The paper's figure: per tag one query (random with ``seed``, or ``queries[tag]``) and its
    k neighbours, those with the query's tag framed; images at ``image_size``. A Figure."""
    from galaxy_helpers.plotting import galaxy_grid

    rng = np.random.default_rng(seed)
    by_id = catalogue.set_index(catalogue["id_str"].astype(str))
    files, titles, frames = [], [], []
    queries = dict(queries or {})
    for name, members in tag_members(index, catalogue, tags).items():
        if name not in queries:
            if len(members) == 0:
                continue
            queries[name] = str(rng.choice(np.asarray(members)))
        qid = queries[name]
        found = index.query(qid, k=k)
        files.append(by_id.loc[qid, "file_loc"])
        titles.append(f"#{name} query")
        frames.append(True)
        member_set = set(members)
        for gid, d in zip(found["id_str"], found["distance"], strict=True):
            files.append(by_id.loc[gid, "file_loc"])
            titles.append(f"{'#' + name if gid in member_set else ''} d={d:.2f}")
            frames.append(gid in member_set)
    if not files:
        raise ValueError("no tagged galaxy of the catalogue is in the index: nothing to show")
    return galaxy_grid(
        files,
        titles=titles,
        ncols=k + 1,
        highlight=frames,
        image_size=image_size,
        suptitle="Query (left) and its nearest neighbours; framed = same tag",
    )


def tag_query(index: SimilarityIndex, catalogue: pd.DataFrame, tag: str, k=10, seed=0):
    """The ``k`` neighbours of a random galaxy carrying ``tag``: :meth:`SimilarityIndex.query`
    plus a bool column ``tag_<tag>``."""
    members = catalogue.loc[catalogue[f"tag_{tag}"], "id_str"]
    found = index.query(str(np.random.default_rng(seed).choice(members)), k=k)
    found[f"tag_{tag}"] = found["id_str"].isin(set(members))
    return found


def image_query(index, catalogue, path, model, metadata, pca=None, k=7, tag="ring"):
    """Search from an image outside the catalogue and show it beside its neighbours, framing
    those that carry ``tag``. Returns ``(found, figure)``: :meth:`SimilarityIndex.query_image`
    plus a bool column ``tag_<tag>``, and the Figure."""
    from galaxy_helpers.plotting import galaxy_grid

    found = index.query_image(path, model, metadata, pca=pca, k=k)
    members = set(catalogue.loc[catalogue[f"tag_{tag}"], "id_str"])
    found[f"tag_{tag}"] = found["id_str"].isin(members)
    fig = galaxy_grid(
        [path] + catalogue.set_index("id_str").loc[found["id_str"], "file_loc"].tolist(),
        titles=[f"new #{tag}"] + [f"d={d:.2f}" for d in found["distance"]],
        ncols=k + 1,
        highlight=[True] + found[f"tag_{tag}"].tolist(),
    )
    return found, fig


REAL_DATASETS = ("gz_decals_rings", "gz_decals_examples")


def real_search_catalogue(datasets=REAL_DATASETS, progress: bool = False):
    """The real Galaxy Zoo DECaLS ring set and tagged examples as one catalogue (``id_str``,
    ``file_loc``, ``dataset``, every ``tag_`` column, False where a set lacks it), or None
    with a printed how-to."""
    from galaxy_helpers import data

    missing = [name for name in datasets if not data.dataset_available(name)]
    if missing:
        print(
            f"Real data not available here: {missing}. To run this section, point "
            "GALAXY_DATA_MIRROR at a folder holding a copy (e.g. the course's shared/data), or "
            "fetch it once online with `galaxy_helpers.data.fetch(<name>)` (it verifies every "
            "file's checksum); then run the notebook again."
        )
        return None
    parts = []
    for name in datasets:
        df = data.load_dataset(name, progress=progress)
        keep = ["id_str", "file_loc"] + [c for c in df.columns if str(c).startswith("tag_")]
        parts.append(df[keep].assign(dataset=name))
    out = pd.concat(parts, ignore_index=True)
    tags = [c for c in out.columns if str(c).startswith("tag_")]
    out[tags] = out[tags].fillna(False).astype(bool)
    dup = out["id_str"].duplicated()
    if dup.any():  # the same galaxy in two sets: keep one row, with the tags of both
        out = out.groupby("id_str", as_index=False, sort=False).agg(
            {"file_loc": "first", "dataset": "first", **{t: "max" for t in tags}}
        )
    return out

"""Do the tools work on real galaxies? One function per transfer protocol on a feature array
(:func:`tag_precision`, :func:`anomaly_search`, :func:`linear_probe`), so every encoder from
:func:`encoder_features` is measured the same way; ``compare_*`` add both baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import core
from .anomaly import ActiveLearner, run_simulations
from .images import catalogue_crops, model_resample
from .representations import (
    catalogue_hash,
    extract_representations,
    random_weights_model,
    read_pixels,
)
from .similarity import build_index, precision_at_k_by_tag

__all__ = ["GZ2_INTERESTING_ODD", "odd_researcher_scores", "encoder_features", "tag_precision"]
__all__ += ["anomaly_search", "linear_probe", "compare_similarity", "compare_anomaly_search"]
__all__ += ["compare_linear_probe", "held_out_votes", "similarity_metrics", "anomaly_metrics"]

#: The paper's definition of an interesting Galaxy Zoo 2 galaxy (odd vote fraction above it).
GZ2_INTERESTING_ODD = 0.9


def odd_researcher_scores(odd) -> np.ndarray:
    """The paper's simulated Galaxy Zoo 2 researcher: score ``round(5 x odd fraction)``."""
    odd = np.asarray(odd, dtype=np.float64)
    if not np.all(np.isfinite(odd)) or odd.min(initial=0) < 0 or odd.max(initial=0) > 1:
        raise ValueError("odd fractions must be finite and in [0, 1]")
    return np.rint(5 * odd).astype(int)


def _read(
    catalogue: pd.DataFrame,
    size: int,
    crops,
    cache: dict | None,
    progress: bool,
    resample="lanczos",
):
    key = (size, resample, tuple(np.round(np.asarray(crops), 6)), tuple(catalogue["file_loc"]))
    cache = {} if cache is None else cache
    if key not in cache:  # decoded by an earlier notebook's encoder, or decoded and kept now
        cache[key] = read_pixels(catalogue, size, crops, resample, progress)
    return cache[key]


def _pixel_features(catalogue, meta: dict, pixel_size: int, cache, progress: bool) -> np.ndarray:
    """Raw-pixel baseline rows, kept on disk beside the representation tables (the same
    catalogue hash) so that notebooks 04-06 decode each survey's images once, not three times.
    Read as the model reads them (its size, framing and resampling), so the block means share
    the encoders' decode."""
    size, resample = int(meta["image_size"]), model_resample(meta)
    crops = catalogue_crops(catalogue, meta)
    key = core.content_key(
        "pixels", 3, size, resample, pixel_size, crops, catalogue_hash(catalogue),
        core.source_key(__name__),
    )  # fmt: skip
    path = core.cache_dir("representations") / f"pixels_{key}.npy"
    if path.exists():
        try:
            return np.load(path)
        except Exception:  # a corrupt cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    if size % pixel_size == 0:  # block means of the model's own input: one decode
        f = size // pixel_size
        arr = _read(catalogue, size, crops, cache, progress, resample)
        # integer block sums, then one division: exact, and 8x faster than float means
        blocks = arr.reshape(len(arr), pixel_size, f, pixel_size, f, 3)
        arr = blocks.sum(axis=(2, 4), dtype=np.uint32).astype(np.float32) / np.float32(255 * f * f)
    else:
        arr = _read(catalogue, pixel_size, crops, cache, progress, resample)
        arr = arr.astype(np.float32) / 255.0
    arr = arr.astype(np.float32, copy=False).reshape(len(arr), -1)
    with core.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    return arr


def encoder_features(
    encoder,
    catalogue: pd.DataFrame,
    reference=None,
    pixel_size: int = 32,
    cache: dict | None = None,
    progress: bool = False,
) -> np.ndarray:
    """One representation row per catalogue galaxy (float32 ``(N, D)``) of ``encoder``:
    anything ``checkpoints.load_model`` takes, ``"random"`` (``reference``'s architecture with
    random weights) or ``"pixels"`` (``pixel_size``-px block means of ``reference``'s input;
    default reference ``"course"``). ``catalogue`` needs ``file_loc`` (and ``crop`` for a
    survey's framing); ``cache``, a dict reused between calls, decodes pixels once per size."""
    from .checkpoints import load_model

    if isinstance(encoder, str) and encoder in ("random", "pixels"):
        _, meta = load_model(reference if reference is not None else "course", progress=progress)
        if encoder == "pixels":
            return _pixel_features(catalogue, meta, pixel_size, cache, progress)
        model, meta = random_weights_model(meta, seed=0)
    else:
        model, meta = load_model(encoder, progress=progress)
    size, crops = int(meta["image_size"]), catalogue_crops(catalogue, meta)

    def pixels():  # decoded once per size and framing for every encoder sharing ``cache``
        return _read(catalogue, size, crops, cache, progress, model_resample(meta))

    table = extract_representations((model, meta), catalogue, progress=progress, images=pixels)
    return table.filter(like="feat_").to_numpy(dtype=np.float32)


def tag_precision(features, catalogue: pd.DataFrame, tags, k: int = 10) -> dict[str, float]:
    """``{tag: precision@k, <tag>_chance: base rate}`` (standardised PCA-10, Euclidean)."""
    table = pd.DataFrame(np.asarray(features, dtype=np.float32)).add_prefix("feat_")
    index, _ = build_index(table.assign(id_str=catalogue["id_str"].astype(str).to_numpy()))
    result = precision_at_k_by_tag(index, catalogue, tags=tags, k=k)
    out = {}
    for row in result.itertuples():
        out[row.tag] = float(row.precision_at_k)
        out[f"{row.tag}_chance"] = float(row.chance)
    return out


def _anomaly_run(features, odd, n_labels=200, batch=10, repeats=5, seed=0) -> dict:
    """The :func:`run_simulation` arguments of the paper's Galaxy Zoo 2 experiment."""
    # round(5 x odd) >= 5 exactly when odd > 0.9 (4.5 rounds to 4): threshold 5 is the paper's
    return dict(
        X=np.asarray(features, dtype=np.float64),
        researcher_scores=odd_researcher_scores(odd),
        learner=ActiveLearner(random_state=seed),
        n_labels=n_labels,
        batch=batch,
        repeats=repeats,
        seed=seed,
        threshold=5,
    )


def _anomaly_summary(results: pd.DataFrame, odd) -> dict[str, float]:
    final = results[results["n_labels"] == results["n_labels"].max()]
    interesting = np.asarray(odd) > GZ2_INTERESTING_ODD
    out = {"n_interesting": int(interesting.sum()), "n_galaxies": int(len(interesting))}
    for name, prefix in (("labelled_first", ""), ("predicted", "predicted_")):
        part = final[final["ranking"] == name]
        out[f"{prefix}precision_at_50"] = float(part["precision_at_50"].mean())
        out[f"{prefix}average_precision"] = float(part["average_precision"].mean())
    return out


def anomaly_search(
    features,
    odd,
    n_labels: int = 200,
    batch: int = 10,
    repeats: int = 5,
    seed: int = 0,
    progress: bool = False,
    jobs: int | None = None,
) -> dict[str, float]:
    """The paper's Galaxy Zoo 2 anomaly experiment (score ``round(5 x odd)``, interesting =
    ``odd > 0.9``): ``precision_at_50``, ``average_precision`` (mean over repeats), the same
    for the prediction alone (``predicted_*``), ``n_interesting`` and ``n_galaxies``; the
    repeats run in ``jobs`` worker processes (:func:`galaxy_helpers.core.n_jobs`)."""
    run = _anomaly_run(features, odd, n_labels, batch, repeats, seed)
    (results,) = run_simulations([run], jobs=jobs, progress=progress)
    return _anomaly_summary(results, odd)


def linear_probe(
    features,
    labels,
    budgets=(10, 30, 100),
    repeats: int = 20,
    seed: int = 0,
) -> dict[int, float]:
    """``{budget: mean balanced accuracy}`` of a logistic regression on a frozen representation,
    each repeat trained on ``budget / 2`` random galaxies per class, tested on all others."""
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    classes = np.unique(y)
    if len(classes) != 2:
        raise ValueError(f"linear_probe needs two classes; got {classes.tolist()}")
    rng = np.random.default_rng(seed)
    out = {}
    for budget in budgets:
        per_class = int(budget) // 2
        scores = []
        for _ in range(repeats):
            train = np.concatenate(
                [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes]
            )
            test = np.ones(len(y), dtype=bool)
            test[train] = False
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(X[train], y[train])
            pred = classes[(_decision_function(clf, X) > 0).astype(int)]
            scores.append(balanced_accuracy_score(y[test], pred[test]))
        out[int(budget)] = float(np.mean(scores))
    return out


def _decision_function(clf, X: np.ndarray) -> np.ndarray:
    """``clf.decision_function(X)`` of a fitted StandardScaler + binary LogisticRegression as one
    matrix-vector product: the scaler folded into the weights, so a 5,000 x 3,072 pixel table is
    neither copied nor standardised again for each of a probe's 60 fits."""
    scaler, lr = clf[0], clf[-1]
    w = lr.coef_[0] / scaler.scale_
    return X @ w + (lr.intercept_[0] - scaler.mean_ @ w)


#: The encoders every comparison measures in the same run, with the names tables show.
BASELINES = {"random weights": "random", "raw pixels": "pixels"}


def _features_by_encoder(catalogue: pd.DataFrame, encoder) -> dict[str, np.ndarray]:
    cache: dict = {}
    encoders = {"representation": encoder, **BASELINES}
    return {
        name: encoder_features(enc, catalogue, reference=encoder, cache=cache)
        for name, enc in encoders.items()
    }


def held_out_votes(encoder, catalogue: pd.DataFrame) -> dict:
    """How well a model predicts the votes of the ``test`` rows against the ``train`` rows'
    mean (``evaluation.evaluate``): ``mae_reduction``, ``accuracy_smooth_or_featured``,
    ``accuracy_edge_on``, ``n_test``; ``{}`` without a vote head."""
    from .checkpoints import load_model
    from .evaluation import evaluate

    model, _ = load_model(encoder, progress=False)
    if getattr(model, "head", None) is None:
        return {}
    test = catalogue[catalogue["split"] == "test"].reset_index(drop=True)
    train = catalogue[catalogue["split"] == "train"]
    summary = evaluate(model, test, baseline_catalogue=train, progress=False).summary()
    accuracy = summary["accuracy_confident"]
    return {
        "mae_reduction": summary["mae_reduction"],
        "accuracy_smooth_or_featured": accuracy.get("smooth-or-featured-dr5"),
        "accuracy_edge_on": accuracy.get("disk-edge-on-dr5"),
        "n_test": len(test),
    }


def compare_similarity(
    catalogue: pd.DataFrame, encoder="course", tags=("ring", "merger", "irregular"), k: int = 10
) -> pd.DataFrame:
    """Precision@k per tag (and ``mean``) of ``encoder`` and both baselines: columns
    ``representation``, ``random weights``, ``raw pixels``, ``chance``, ``n_members``."""
    columns = {
        name: tag_precision(X, catalogue, tags, k=k)
        for name, X in _features_by_encoder(catalogue, encoder).items()
    }
    rows = []
    for tag in tags:
        row = {"tag": tag, **{name: col[tag] for name, col in columns.items()}}
        row["chance"] = columns["representation"][f"{tag}_chance"]
        row["n_members"] = int(catalogue[f"tag_{tag}"].sum())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("tag")
    table.loc["mean"] = table.mean(numeric_only=True)
    table.loc["mean", "n_members"] = np.nan
    return table


def compare_anomaly_search(
    catalogue: pd.DataFrame, encoder="course", repeats: int = 5, seed: int = 0
) -> pd.DataFrame:
    """:func:`anomaly_search` for ``encoder`` and both baselines, one row each (every
    search's repeats in one pool of worker processes)."""
    features = _features_by_encoder(catalogue, encoder)
    odd = catalogue["odd"]
    runs = [_anomaly_run(X, odd, repeats=repeats, seed=seed) for X in features.values()]
    results = run_simulations(runs, progress=False)
    rows = {name: _anomaly_summary(r, odd) for name, r in zip(features, results, strict=True)}
    table = pd.DataFrame(rows).T
    cols = ["precision_at_50", "average_precision", "predicted_average_precision"]
    return table[cols + ["n_interesting", "n_galaxies"]]


def compare_linear_probe(
    catalogue: pd.DataFrame,
    label: str,
    encoder="course",
    budgets=(10, 30, 100),
    repeats: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`linear_probe` per label budget for ``encoder`` and both baselines (rows), the
    encoders in worker processes (:func:`galaxy_helpers.core.parallel_map`)."""
    features = _features_by_encoder(catalogue, encoder)
    tasks = [(X, catalogue[label].to_numpy(), budgets, repeats, seed) for X in features.values()]
    rows = dict(zip(features, core.parallel_map(linear_probe, tasks), strict=True))
    return pd.DataFrame(rows).T.rename(columns=lambda b: f"{b} labels")


def similarity_metrics(table: pd.DataFrame, prefix: str = "gz2", k: int = 10) -> dict:
    """A :func:`compare_similarity` table as metrics-file entries."""
    tags = table.drop(index="mean")
    out = {f"{prefix}_precision_at_{k}": tags["representation"].to_dict()}
    for name in BASELINES:
        out[f"{prefix}_precision_at_{k}_{name.replace(' ', '_')}"] = tags[name].to_dict()
    out[f"{prefix}_chance_at_{k}"] = tags["chance"].to_dict()
    out[f"{prefix}_mean_precision_at_{k}"] = float(table.loc["mean", "representation"])
    return out


def anomaly_metrics(table: pd.DataFrame, repeats: int, prefix: str = "gz2") -> dict:
    """A :func:`compare_anomaly_search` table as metrics-file entries, per encoder."""
    out = {
        f"{prefix}_{col}": table[col].to_dict()
        for col in ("precision_at_50", "average_precision", "predicted_average_precision")
    }
    out[f"{prefix}_n_interesting"] = int(table["n_interesting"].iloc[0])
    out[f"{prefix}_repeats"] = repeats
    return out

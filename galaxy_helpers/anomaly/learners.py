"""Anomaly learners (scikit-learn style) on a representation table or a matrix ``X`` (N, D),
user scores NaN where unlabelled: the paper's Gaussian process (:class:`ActiveLearner`) and
Astronomaly's isolation forest with user scores folded in (:class:`AstronomalyScorer`)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular
from scipy.special import ndtr
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import IsolationForest, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RationalQuadratic, WhiteKernel
from threadpoolctl import ThreadpoolController

from galaxy_helpers.representations import RepresentationPCA, feature_matrix


@functools.cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


def _one_blas_thread():
    """``threadpool_limits(1, "blas")`` without its cost: a new limiter scans every loaded
    library (a few ms), and a search makes two per label batch; one controller, found once
    (numpy's and scipy's BLAS are loaded by this module's imports), is reused."""
    return _controller().limit(limits=1, user_api="blas")


SCORE_MIN = 0
SCORE_MAX = 5
INTERESTING_SCORE = 4  # a galaxy is "interesting" to a simulated researcher at score >= this


def _as_features(X, name: str = "X") -> np.ndarray:
    if not isinstance(X, pd.DataFrame) and np.ndim(X) != 2:
        raise ValueError(
            f"{name} must be a 2-d feature matrix (n_galaxies, n_features); got shape "
            f"{np.shape(X)}: pass the representation table or its feature columns as an array"
        )
    return feature_matrix(X, what=name, dtype=np.float64)[1]


def _as_scores(y, n: int) -> np.ndarray:
    """User scores: length n, NaN = unlabelled, otherwise integer 0..5."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(
            f"user scores must have shape ({n},) to match X (NaN for unlabelled); got {y.shape}"
        )
    given = ~np.isnan(y)
    bad = given & ((y < SCORE_MIN) | (y > SCORE_MAX) | (np.round(y) != y))
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(
            f"user scores must be whole numbers {SCORE_MIN} to {SCORE_MAX} (NaN = unlabelled); "
            f"rows {rows} hold {y[rows].tolist()}"
        )
    return y


def _check_fitted(est, attr: str):
    if not hasattr(est, attr):
        raise RuntimeError(f"{type(est).__name__} is not fitted yet: call .fit(X, ...) first.")


def _nearest_labelled_distance(X, labelled, chunk: int = 8192) -> np.ndarray:
    """Euclidean distance from every row of X to its nearest row of ``labelled``."""
    sq_l = (labelled**2).sum(1)
    out = np.empty(len(X))
    for start in range(0, len(X), chunk):
        block = X[start : start + chunk]
        d2 = (block**2).sum(1)[:, None] - 2 * block @ labelled.T + sq_l[None, :]
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


class IsolationForestScorer(BaseEstimator):
    """Isolation-forest anomaly score, 0 (boring) to 5 (weird), as Astronomaly's:
    ``-decision_function`` min-max rescaled over the fitted galaxies (new ones clipped).

    Examples
    --------
    >>> scores = IsolationForestScorer(random_state=0).fit(X).score_samples(X)  # doctest: +SKIP
    """

    def __init__(self, n_estimators: int = 100, random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the forest on all galaxies (``y`` is ignored); returns self."""
        X = _as_features(X)
        forest = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state)
        self.forest_ = forest.fit(X)
        raw = -self.forest_.decision_function(X)
        self.raw_min_, self.raw_max_ = float(raw.min()), float(raw.max())
        self.train_scores_ = self._scale(raw)
        return self

    def _scale(self, raw):
        span = self.raw_max_ - self.raw_min_
        if span == 0:
            return np.zeros_like(raw)
        return np.clip(SCORE_MAX * (raw - self.raw_min_) / span, SCORE_MIN, SCORE_MAX)

    def score_samples(self, X) -> np.ndarray:
        """Anomaly score 0..5 (N,) per galaxy (higher = more anomalous)."""
        _check_fitted(self, "forest_")
        return self._scale(-self.forest_.decision_function(_as_features(X)))

    predict = score_samples  # a ranking score, not inlier/outlier labels


class AstronomalyScorer(BaseEstimator):
    """Astronomaly's fold-in of user scores into an anomaly score (Lochner & Bassett 2021).

    As its ``NeighbourScore``: a random forest learns the user's scores and predicts Û
    everywhere; the anomaly score S (0..5) is re-weighted by the distance d to the nearest
    labelled galaxy over the mean such distance d̄ (it can only *lower* a score)::

        S' = S * tanh( exp(alpha * d / d̄) - 1 + arctanh( min_score + 0.85 * Û / max_score ) )

    Parameters
    ----------
    anomaly_scorer : estimator giving S, default :class:`IsolationForestScorer`
    alpha, min_score, max_score : trust in Û (1, as the paper), its ε (0.1), top user score (5)
    n_estimators, random_state : trees in the random-forest regressor; seed for both forests

    Examples
    --------
    >>> ranking_score = AstronomalyScorer(random_state=0).fit(X, y).predict()  # doctest: +SKIP
    """

    def __init__(
        self,
        anomaly_scorer=None,
        alpha: float = 1.0,
        min_score: float = 0.1,
        max_score: float = 5.0,
        n_estimators: int = 100,
        random_state: int | None = 0,
    ):
        self.anomaly_scorer = anomaly_scorer
        self.alpha = alpha
        self.min_score = min_score
        self.max_score = max_score
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the anomaly scorer on X, then fold in the user scores ``y`` (NaN = unlabelled)."""
        self.X_ = _as_features(X)
        scorer = self.anomaly_scorer
        if scorer is None:
            scorer = IsolationForestScorer(random_state=self.random_state)
        self.anomaly_scorer_ = clone(scorer).fit(self.X_)
        self.anomaly_scores_ = self.anomaly_scorer_.score_samples(self.X_)
        return self.update(np.full(len(self.X_), np.nan) if y is None else y)

    def update(self, y):
        """Refit only the user-score regressor on new labels ``y`` (N,) for the same galaxies."""
        _check_fitted(self, "X_")
        self.y_ = _as_scores(y, len(self.X_))
        labelled = ~np.isnan(self.y_)
        if not labelled.any():
            self.user_scores_ = None
            self.scores_ = self.anomaly_scores_.copy()
            return self
        self.regressor_ = RandomForestRegressor(
            n_estimators=self.n_estimators, random_state=self.random_state, n_jobs=1
        ).fit(self.X_[labelled], self.y_[labelled])
        self.user_scores_ = self.regressor_.predict(self.X_)
        dist = _nearest_labelled_distance(self.X_, self.X_[labelled])
        self.mean_distance_ = float(np.mean(dist))
        self.scores_ = self.combine(dist, self.user_scores_, self.anomaly_scores_)
        return self

    def combine(self, distance, user_score, anomaly_score, mean_distance=None) -> np.ndarray:
        """The class docstring's formula (d̄: default the mean of ``distance``)."""
        f_u = self.min_score + 0.85 * (np.asarray(user_score) / self.max_score)
        mean_d = np.mean(distance) if mean_distance is None else mean_distance
        scaled = distance / mean_d if mean_d > 0 else np.zeros_like(distance)
        # exp overflows harmlessly to inf -> tanh(inf) = 1; silence the warning
        with np.errstate(over="ignore"):
            penalty = np.exp(self.alpha * scaled)
        return anomaly_score * np.tanh(penalty - 1 + np.arctanh(f_u))

    def predict(self, X=None) -> np.ndarray:
        """Final ranking score (N,) for the fitted galaxies (``X=None``) or new ones."""
        _check_fitted(self, "scores_")
        if X is None:
            return self.scores_
        X = _as_features(X)
        s = self.anomaly_scorer_.score_samples(X)
        if self.user_scores_ is None:
            return s
        dist = _nearest_labelled_distance(X, self.X_[~np.isnan(self.y_)])
        return self.combine(dist, self.regressor_.predict(X), s, self.mean_distance_)

    def next_batch(self, n: int = 10, exclude=None) -> np.ndarray:
        """Indices of the ``n`` highest-scoring galaxies not in ``exclude``."""
        _check_fitted(self, "scores_")
        return _top_n(self.scores_, n, exclude)


def _top_n(values: np.ndarray, n: int, exclude=None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).copy()
    if exclude is not None and len(exclude):
        values[np.asarray(exclude, dtype=int)] = -np.inf
    n = min(int(n), int(np.isfinite(values).sum()))
    if n <= 0:
        return np.empty(0, dtype=int)
    idx = np.argpartition(-values, n - 1)[:n]
    return idx[np.argsort(-values[idx], kind="stable")]


def expected_improvement(mean, std, best: float, xi: float = 0.5) -> np.ndarray:
    """Expected improvement (>= 0) of a GP posterior over ``best``, as modAL's ``max_EI``:
    ``(mu - best - xi) Phi(z) + sigma phi(z)``, ``z = (mu - best - xi) / sigma``."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
    improvement = mean - best - xi
    z = improvement / std
    return improvement * ndtr(z) + std * np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)


class ActiveLearner(BaseEstimator):
    """The paper's learner: PCA-40 -> StandardScaler -> GP regression -> expected improvement.

    The embedding (``embedding_pca_``) is fitted once on every galaxy; the GP
    (rational-quadratic + white noise) on the labelled ones at every retrain.

    Parameters
    ----------
    n_components : PCA components (40 in the paper; capped at the number of features)
    xi : expected-improvement margin (``tradeoff=0.5`` in the paper's code)
    first_batch : "random" (the paper) or "isolation_forest" (its top) before any label
    warm_start : start each hyper-parameter search from the previous optimum (faster, but it
        can stay in the white-noise optimum of all-0 labels)
    random_state : seed for PCA's solver, the first batch and the GP optimiser

    Attributes
    ----------
    embedding_, gp_ : the (N, n_components) embedding and the GP (None before any label)
    """

    def __init__(
        self,
        n_components: int = 40,
        xi: float = 0.5,
        first_batch: str = "random",
        warm_start: bool = False,
        random_state: int | None = 0,
    ):
        self.n_components = n_components
        self.xi = xi
        self.first_batch = first_batch
        self.warm_start = warm_start
        self.random_state = random_state

    def fit(self, X, y=None, embedding_from: ActiveLearner | None = None):
        """Fit the embedding on every galaxy of X, then the GP on the labelled rows of ``y``
        (scores 0..5, NaN where unlabelled; None: no labels yet). ``embedding_from``: a learner
        already fitted on the same X with the same ``n_components`` whose embedding is reused
        (the PCA is the slow part of a fit; repeats of one search share it)."""
        if self.first_batch not in ("random", "isolation_forest"):
            raise ValueError(
                f"first_batch={self.first_batch!r}; choose 'random' or 'isolation_forest'"
            )
        X = _as_features(X)
        n_comp = min(self.n_components, X.shape[1], X.shape[0])
        if embedding_from is not None:
            _check_fitted(embedding_from, "embedding_")
            if embedding_from.embedding_.shape != (len(X), n_comp):
                raise ValueError(
                    f"embedding_from holds a {embedding_from.embedding_.shape} embedding; this "
                    f"fit needs ({len(X)}, {n_comp}): fit it on the same galaxies and components"
                )
            self.embedding_pca_ = embedding_from.embedding_pca_
            self.embedding_ = embedding_from.embedding_
        else:
            self.embedding_pca_ = RepresentationPCA(
                n_comp,
                incremental=False,
                standardise=True,
                random_state=self.random_state,
                dtype=np.float64,
            )
            self.embedding_ = self.embedding_pca_.fit_transform(X)
        self.gp_ = None
        self._kernel = None
        self._rng = np.random.default_rng(self.random_state)
        return self.update(np.full(len(X), np.nan) if y is None else y)

    def update(self, y):
        """Retrain the GP on new scores ``y`` (N,) for the same galaxies (the widget's step)."""
        _check_fitted(self, "embedding_")
        self.y_ = _as_scores(y, len(self.embedding_))
        self.labelled_ = labelled = np.flatnonzero(~np.isnan(self.y_))
        self._mean = self._std = None
        if len(labelled) == 0:
            self.gp_ = None
            return self
        warm = self.warm_start and self._kernel is not None
        kernel = self._kernel if warm else RationalQuadratic() + WhiteKernel()
        gp = GaussianProcessRegressor(kernel=kernel, random_state=self.random_state)
        # one BLAS thread: these matrices are tiny, and on a busy 2-core machine extra threads
        # made the hyper-parameter search 15x slower
        with warnings.catch_warnings(), _one_blas_thread():
            # noise at its lower bound is expected: a researcher's scores are exact
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(self.embedding_[labelled], self.y_[labelled])
        self.gp_ = gp
        self._kernel = gp.kernel_
        return self

    def _posterior(self, Z: np.ndarray, chunk: int = 4096):
        """``gp.predict(Z, return_std=True)`` (tested), 4x faster: the step the widget waits for."""
        gp = self.gp_
        if gp is None:
            return np.zeros(len(Z)), np.ones(len(Z))
        rq, noise = gp.kernel_.k1, gp.kernel_.k2.noise_level  # update() fits RQ + white noise
        train = gp.X_train_
        train_sq = (train**2).sum(1)
        l_inv = solve_triangular(gp.L_, np.eye(len(train)), lower=True, check_finite=False)
        l_inv32 = l_inv.T.astype(np.float32)
        means, stds = np.empty(len(Z)), np.empty(len(Z))
        z_sq = (Z**2).sum(1)
        # one BLAS thread: measured faster than two on the shared 2-core machine
        with _one_blas_thread():
            for start in range(0, len(Z), chunk):
                block = Z[start : start + chunk]
                k = block @ (-2 * train.T)
                k += z_sq[start : start + chunk, None]
                k += train_sq[None, :]
                np.maximum(k, 0, out=k)
                # (1 + d / (2 alpha l^2)) ** -alpha, in place
                k *= 1.0 / (2 * rq.alpha * rq.length_scale**2)
                np.log1p(k, out=k)
                k *= -rq.alpha
                np.exp(k, out=k)
                means[start : start + chunk] = k @ gp.alpha_
                v = k.astype(np.float32) @ l_inv32
                var = 1.0 + noise - np.einsum("ij,ij->i", v, v, dtype=np.float64)
                stds[start : start + chunk] = np.sqrt(np.maximum(var, 0))
        # scikit-learn's default normalize_y=False: the mean needs no rescaling
        return means, stds

    def _pool_posterior(self):
        if self._mean is None:
            self._mean, self._std = self._posterior(self.embedding_)
        return self._mean, self._std

    def predict(self, X=None, return_std: bool = False):
        """GP posterior mean (and std) of the fitted pool (``X=None``, cached) or new galaxies."""
        _check_fitted(self, "embedding_")
        if X is None:
            mean, std = self._pool_posterior()
        else:
            mean, std = self._posterior(self.embedding_pca_.transform(_as_features(X)))
        return (mean, std) if return_std else mean

    def acquisition(self) -> np.ndarray:
        """Expected improvement of every fitted galaxy (0 everywhere before any label)."""
        _check_fitted(self, "embedding_")
        if self.gp_ is None:
            return np.zeros(len(self.embedding_))
        mean, std = self._pool_posterior()
        return expected_improvement(mean, std, float(np.nanmax(self.y_)), self.xi)

    def next_batch(self, n: int = 10, exclude=None) -> np.ndarray:
        """Indices of the next ``n`` unlabelled galaxies not in ``exclude``: ``first_batch``'s
        choice before any label, then the highest expected improvement."""
        _check_fitted(self, "embedding_")
        skip = np.union1d(self.labelled_, np.asarray([] if exclude is None else exclude, int))
        if self.gp_ is None:
            if self.first_batch == "isolation_forest":
                forest = IsolationForestScorer(random_state=self.random_state)
                return _top_n(forest.fit(self.embedding_).train_scores_, n, skip)
            pool = np.setdiff1d(np.arange(len(self.embedding_)), skip)
            return self._rng.choice(pool, size=min(n, len(pool)), replace=False)
        return _top_n(self.acquisition(), n, skip)

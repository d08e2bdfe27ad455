"""Find the anomalies that interest *this* researcher (notebook 05).

Walmsley et al. 2022 (MNRAS 513, 1581, section 5) compress the CNN representation with PCA
to 40 components, standard-scale it, and let a Gaussian process learn one researcher's
0-to-5 interest scores, choosing what to show next by expected improvement. The baseline is
Astronomaly (Lochner & Bassett 2021, Astronomy and Computing 36, 100481): an isolation
forest's anomaly score, folded together with a regressor on the user's scores according to
how close each galaxy is to a labelled one.

Everything here is a scikit-learn-style estimator on a plain feature matrix ``X`` (N, D).
User scores are passed as a float array ``y`` of length N with ``NaN`` where a galaxy has not
been labelled yet (the convention of scikit-learn's semi-supervised estimators, with NaN
instead of -1 because scores are numbers).

Example
-------
>>> learner = ActiveLearner(random_state=0)
>>> y = np.full(len(X), np.nan)
>>> learner.fit(X, y)                                  # no labels yet: embedding only
>>> first = learner.next_batch(10)                     # chosen without labels
>>> y[first] = researcher_scores[first]
>>> learner.update(y)                                  # retrain the GP only
>>> nxt = learner.next_batch(10, exclude=np.flatnonzero(~np.isnan(y)))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular
from scipy.special import ndtr
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import IsolationForest, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RationalQuadratic, WhiteKernel
from threadpoolctl import threadpool_limits

from galaxy_helpers.representations import RepresentationPCA, feature_matrix

SCORE_MIN = 0
SCORE_MAX = 5
INTERESTING_SCORE = 4  # a galaxy is "interesting" to a simulated researcher at score >= this


# --------------------------------------------------------------------------- validation
def _as_features(X, name: str = "X") -> np.ndarray:
    if isinstance(X, pd.DataFrame):  # a representation table (id_str + feat_ columns)
        return feature_matrix(X, what=name, dtype=np.float64)[1]
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-d feature matrix (n_galaxies, n_features); got shape {X.shape}. "
            "Pass the representation columns as an array, e.g. df[feature_cols].to_numpy()."
        )
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])[:5].tolist()
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite values (first rows {rows}); "
            "drop or re-extract those galaxies before scoring."
        )
    return X


def _as_scores(y, n: int) -> np.ndarray:
    """Validate user scores: length n, NaN = unlabelled, otherwise integer 0..5."""
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


def rescale(values: np.ndarray, new_min: float = 0.0, new_max: float = 5.0) -> np.ndarray:
    """Min-max rescale to [new_min, new_max] (Astronomaly's ``ScoreConverter``).

    Parameters
    ----------
    values : array
        Any real scores (higher = more anomalous).
    new_min, new_max : float
        Target range.

    Returns
    -------
    np.ndarray
        Rescaled copy; constant input maps to ``new_min``.
    """
    values = np.asarray(values, dtype=np.float64)
    span = values.max() - values.min()
    if span == 0:
        return np.full_like(values, new_min)
    return (new_max - new_min) * (values - values.min()) / span + new_min


def nearest_labelled_distance(X: np.ndarray, labelled: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Euclidean distance from every row of X to its nearest labelled row (brute force, chunked).

    Parameters
    ----------
    X : (N, D) array
    labelled : (L, D) array, L >= 1
    chunk : int
        Rows per block, to bound memory.

    Returns
    -------
    np.ndarray (N,)
    """
    sq_l = (labelled**2).sum(1)
    out = np.empty(len(X))
    for start in range(0, len(X), chunk):
        block = X[start : start + chunk]
        d2 = (block**2).sum(1)[:, None] - 2 * block @ labelled.T + sq_l[None, :]
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


# --------------------------------------------------------------------------- baselines
class IsolationForestScorer(BaseEstimator):
    """Isolation-forest anomaly score on the representation, scaled 0 (boring) to 5 (weird).

    As in Astronomaly, the raw score is ``-decision_function`` (lower = weirder in scikit-learn)
    min-max rescaled to 0..5 over the galaxies it was fitted on; new galaxies are scaled with the
    same range and clipped.

    Parameters
    ----------
    n_estimators : int
        Trees in the forest (Astronomaly's default, 100).
    random_state : int or None
        Seed.

    Example
    -------
    >>> scores = IsolationForestScorer(random_state=0).fit(X).score_samples(X)  # 0..5
    """

    def __init__(self, n_estimators: int = 100, random_state: int | None = 0):
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, X, y=None):
        """Fit the forest on all galaxies (unsupervised; ``y`` is ignored).

        Returns
        -------
        self
        """
        X = _as_features(X)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, random_state=self.random_state
        ).fit(X)
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
        """Anomaly score 0..5 per galaxy (higher = more anomalous).

        Parameters
        ----------
        X : (N, D) array

        Returns
        -------
        np.ndarray (N,)
        """
        _check_fitted(self, "forest_")
        return self._scale(-self.forest_.decision_function(_as_features(X)))

    def predict(self, X) -> np.ndarray:
        """Same as :meth:`score_samples` (a ranking score, not inlier/outlier labels)."""
        return self.score_samples(X)


class AstronomalyScorer(BaseEstimator):
    """Astronomaly's fold-in of user scores into an anomaly score (Lochner & Bassett 2021).

    Following the published description (section 2.5 of the paper, ``NeighbourScore`` in the
    Astronomaly code): a random-forest regressor learns the user's scores U from the labelled
    galaxies and predicts Û everywhere; each galaxy's anomaly score S (0..5) is then re-weighted by
    how far it is from the nearest labelled galaxy, d, relative to the mean such distance d̄::

        S' = S * tanh( exp(alpha * d / d̄) - 1 + arctanh( min_score + 0.85 * Û / max_score ) )

    Near labelled galaxies the predicted user score dominates (boring-but-weird galaxies are
    pushed down); far from any label S' falls back towards S. Note that the fold-in can only
    *lower* a score: galaxies the isolation forest finds ordinary stay unseen.

    Parameters
    ----------
    anomaly_scorer : estimator or None
        Gives S via ``fit(X)`` / ``score_samples(X)`` on 0..5; default ``IsolationForestScorer``.
    alpha : float
        Trust in the predicted user score (the paper uses 1).
    min_score : float
        ε in the paper, > 0 (0.1).
    max_score : float
        Highest user score (5).
    n_estimators : int
        Trees in the random-forest regressor (100, as Astronomaly).
    random_state : int or None
        Seed for both forests.

    Example
    -------
    >>> scorer = AstronomalyScorer(random_state=0).fit(X, y)   # y: NaN where unlabelled
    >>> ranking_score = scorer.predict()                          # for the fitted galaxies
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
        """Fit the anomaly scorer on X, then fold in the user scores ``y`` (NaN = unlabelled).

        Returns
        -------
        self
        """
        self.X_ = _as_features(X)
        scorer = self.anomaly_scorer
        if scorer is None:
            scorer = IsolationForestScorer(random_state=self.random_state)
        self.anomaly_scorer_ = clone(scorer).fit(self.X_)
        self.anomaly_scores_ = self.anomaly_scorer_.score_samples(self.X_)
        return self.update(np.full(len(self.X_), np.nan) if y is None else y)

    def update(self, y):
        """Refit only the user-score regressor on new labels for the same galaxies.

        Parameters
        ----------
        y : (N,) array, NaN where unlabelled

        Returns
        -------
        self
        """
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
        dist = nearest_labelled_distance(self.X_, self.X_[labelled])
        self.mean_distance_ = float(np.mean(dist))
        self.scores_ = self.combine(dist, self.user_scores_, self.anomaly_scores_)
        return self

    def combine(self, distance, user_score, anomaly_score, mean_distance=None) -> np.ndarray:
        """Lochner & Bassett's distance-weighted combination (see class docstring).

        Parameters
        ----------
        distance, user_score, anomaly_score : (N,) arrays
        mean_distance : float or None
            d̄; default the mean of ``distance`` (as Astronomaly, over the scored galaxies).

        Returns
        -------
        np.ndarray (N,)
        """
        f_u = self.min_score + 0.85 * (np.asarray(user_score) / self.max_score)
        mean_d = np.mean(distance) if mean_distance is None else mean_distance
        scaled = distance / mean_d if mean_d > 0 else np.zeros_like(distance)
        # exp overflows harmlessly to inf -> tanh(inf) = 1; silence the warning
        with np.errstate(over="ignore"):
            penalty = np.exp(self.alpha * scaled)
        return anomaly_score * np.tanh(penalty - 1 + np.arctanh(f_u))

    def predict(self, X=None) -> np.ndarray:
        """Final ranking score for the fitted galaxies (``X=None``) or new ones.

        Returns
        -------
        np.ndarray (N,)
        """
        _check_fitted(self, "scores_")
        if X is None:
            return self.scores_
        X = _as_features(X)
        s = self.anomaly_scorer_.score_samples(X)
        if self.user_scores_ is None:
            return s
        labelled = ~np.isnan(self.y_)
        dist = nearest_labelled_distance(X, self.X_[labelled])
        return self.combine(dist, self.regressor_.predict(X), s, self.mean_distance_)

    def next_batch(self, n: int = 10, exclude=None) -> np.ndarray:
        """The ``n`` highest-scoring galaxies not yet labelled (Astronomaly shows the top first).

        Returns
        -------
        np.ndarray of int indices into the fitted X
        """
        _check_fitted(self, "scores_")
        return _top_n(self.scores_, n, exclude)


def _top_n(values: np.ndarray, n: int, exclude=None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).copy()
    if exclude is not None and len(exclude):
        values[np.asarray(exclude, dtype=int)] = -np.inf
    available = int(np.isfinite(values).sum())
    n = min(int(n), available)
    if n <= 0:
        return np.empty(0, dtype=int)
    idx = np.argpartition(-values, n - 1)[:n]
    return idx[np.argsort(-values[idx], kind="stable")]


# --------------------------------------------------------------------------- the paper's learner
def expected_improvement(mean, std, best: float, xi: float = 0.5) -> np.ndarray:
    """Expected improvement over the best score seen so far (maximisation).

    ``EI = (mu - best - xi) Phi(z) + sigma phi(z)``, ``z = (mu - best - xi) / sigma``: the same
    formula as modAL's ``max_EI``, which the paper's code calls with ``tradeoff=0.5``.

    Parameters
    ----------
    mean, std : arrays
        GP posterior mean and standard deviation.
    best : float
        Highest user score among the labelled galaxies.
    xi : float
        Exploration margin (larger explores more).

    Returns
    -------
    np.ndarray, >= 0
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
    improvement = mean - best - xi
    z = improvement / std
    return improvement * ndtr(z) + std * np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)


class ActiveLearner(BaseEstimator):
    """The paper's learner: PCA-40 -> StandardScaler -> GP regression -> expected improvement.

    The embedding (PCA and scaling) is fitted once on every galaxy, without labels; the Gaussian
    process (rational-quadratic + white-noise kernel, hyper-parameters refitted by maximum
    likelihood at every retrain) is fitted on the labelled galaxies only.

    The first batch is chosen without labels: ``first_batch="random"`` (the paper's choice, 10
    random galaxies) or ``"isolation_forest"`` (the isolation forest's top galaxies). Every later
    batch is the ``batch_size`` unlabelled galaxies with the highest expected improvement.

    Parameters
    ----------
    n_components : int
        PCA components (40 in the paper; capped at the number of features).
    xi : float
        Expected-improvement margin (``tradeoff=0.5`` in the paper's code).
    first_batch : {"random", "isolation_forest"}
        How the first batch is chosen before any label exists.
    warm_start : bool
        Start each retrain's hyper-parameter search from the previous optimum instead of the
        kernel defaults. Faster, but it can stay stuck in a degenerate optimum found while all
        labels were 0 (length scale at its bound: white noise), so the default is False, as in
        the paper's code (scikit-learn refits from the initial kernel).
    random_state : int or None
        Seed for PCA's solver, the first batch and the GP optimiser.

    Attributes
    ----------
    embedding_ : (N, n_components) array
        The scaled PCA embedding of the fitted galaxies.
    gp_ : GaussianProcessRegressor or None
        Fitted after the first labels.
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

    # -- fitting
    def fit(self, X, y=None):
        """Fit the embedding on all of X, then the GP on the labelled rows of ``y``.

        Parameters
        ----------
        X : (N, D) array
            Representation of every galaxy in the pool.
        y : (N,) array or None
            User scores 0..5, NaN where unlabelled (None = no labels yet).

        Returns
        -------
        self
        """
        if self.first_batch not in ("random", "isolation_forest"):
            raise ValueError(
                f"first_batch={self.first_batch!r}; choose 'random' or 'isolation_forest'"
            )
        X = _as_features(X)
        n_comp = min(self.n_components, X.shape[1], X.shape[0])
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
        """Retrain the GP on new scores for the same galaxies (the embedding is kept).

        This is the step the widget runs after every batch.

        Parameters
        ----------
        y : (N,) array, NaN where unlabelled

        Returns
        -------
        self
        """
        _check_fitted(self, "embedding_")
        self.y_ = _as_scores(y, len(self.embedding_))
        labelled = np.flatnonzero(~np.isnan(self.y_))
        self.labelled_ = labelled
        self._mean = self._std = None
        if len(labelled) == 0:
            self.gp_ = None
            return self
        if self.warm_start and self._kernel is not None:
            kernel = self._kernel
        else:
            kernel = RationalQuadratic() + WhiteKernel()
        gp = GaussianProcessRegressor(kernel=kernel, random_state=self.random_state)
        # one BLAS thread: these matrices are tiny, and on a busy 2-core machine extra threads
        # made the hyper-parameter search 15x slower
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            # noise at its lower bound is expected: a researcher's scores are exact
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(self.embedding_[labelled], self.y_[labelled])
        self.gp_ = gp
        self._kernel = gp.kernel_
        return self

    # -- predicting
    def _posterior(self, Z: np.ndarray, chunk: int = 4096):
        """GP posterior mean and std for embedded rows Z, equal to scikit-learn's ``predict``.

        Written out (distances by matrix product, the triangular solve replaced by a product
        with the precomputed inverse factor, variances in float32) because this is the step the
        widget waits for: about 4x faster than ``gp.predict(Z, return_std=True)`` on 50,000
        galaxies, and tested against it.
        """
        gp = self.gp_
        kernel = gp.kernel_
        fast = isinstance(kernel.k1, RationalQuadratic) and isinstance(kernel.k2, WhiteKernel)
        train = gp.X_train_
        train_sq = (train**2).sum(1)
        l_inv = solve_triangular(gp.L_, np.eye(len(train)), lower=True, check_finite=False)
        l_inv32 = l_inv.T.astype(np.float32)
        means = np.empty(len(Z))
        stds = np.empty(len(Z))
        z_sq = (Z**2).sum(1)
        # one BLAS thread: measured faster than two on the shared 2-core machine
        with threadpool_limits(limits=1, user_api="blas"):
            for start in range(0, len(Z), chunk):
                block = Z[start : start + chunk]
                if fast:
                    rq = kernel.k1
                    k = block @ (-2 * train.T)
                    k += z_sq[start : start + chunk, None]
                    k += train_sq[None, :]
                    np.maximum(k, 0, out=k)
                    # (1 + d / (2 alpha l^2)) ** -alpha, in place
                    k *= 1.0 / (2 * rq.alpha * rq.length_scale**2)
                    np.log1p(k, out=k)
                    k *= -rq.alpha
                    np.exp(k, out=k)
                    prior_var = 1.0 + kernel.k2.noise_level
                else:
                    k = kernel(block, train)
                    prior_var = kernel.diag(block)
                means[start : start + chunk] = k @ gp.alpha_
                v = k.astype(np.float32) @ l_inv32
                var = prior_var - np.einsum("ij,ij->i", v, v, dtype=np.float64)
                stds[start : start + chunk] = np.sqrt(np.maximum(var, 0))
        # scikit-learn's default normalize_y=False: the mean needs no rescaling
        return means, stds

    def _pool_posterior(self):
        if self._mean is None:
            if self.gp_ is None:
                n = len(self.embedding_)
                self._mean, self._std = np.zeros(n), np.ones(n)
            else:
                self._mean, self._std = self._posterior(self.embedding_)
        return self._mean, self._std

    def predict(self, X=None, return_std: bool = False):
        """Predicted user score (GP posterior mean) for the fitted pool or new galaxies.

        Parameters
        ----------
        X : (M, D) array or None
            None = every fitted galaxy (cached until the next update).
        return_std : bool
            Also return the posterior standard deviation.

        Returns
        -------
        mean : np.ndarray, or (mean, std)
        """
        _check_fitted(self, "embedding_")
        if X is None:
            mean, std = self._pool_posterior()
        else:
            Z = self.embedding_pca_.transform(_as_features(X))
            if self.gp_ is None:
                mean, std = np.zeros(len(Z)), np.ones(len(Z))
            else:
                mean, std = self._posterior(Z)
        return (mean, std) if return_std else mean

    def acquisition(self) -> np.ndarray:
        """Expected improvement of every fitted galaxy (0 everywhere before any label)."""
        _check_fitted(self, "embedding_")
        if self.gp_ is None:
            return np.zeros(len(self.embedding_))
        mean, std = self._pool_posterior()
        return expected_improvement(mean, std, float(np.nanmax(self.y_)), self.xi)

    def next_batch(self, n: int = 10, exclude=None) -> np.ndarray:
        """Indices of the next ``n`` galaxies to show the researcher.

        Before any label: ``first_batch`` decides (random, or isolation forest top). After:
        the highest expected improvement among galaxies not in ``exclude`` (the labelled ones
        are always excluded).

        Parameters
        ----------
        n : int
            Batch size (10 in the paper).
        exclude : array of int or None
            Extra indices never to propose.

        Returns
        -------
        np.ndarray of int
        """
        _check_fitted(self, "embedding_")
        skip = set(self.labelled_.tolist())
        if exclude is not None:
            skip.update(np.asarray(exclude, dtype=int).tolist())
        skip = np.fromiter(skip, dtype=int, count=len(skip))
        if self.gp_ is None:
            if self.first_batch == "isolation_forest":
                score = (
                    IsolationForestScorer(random_state=self.random_state)
                    .fit(self.embedding_)
                    .train_scores_
                )
                return _top_n(score, n, skip)
            pool = np.setdiff1d(np.arange(len(self.embedding_)), skip)
            return self._rng.choice(pool, size=min(n, len(pool)), replace=False)
        return _top_n(self.acquisition(), n, skip)


# --------------------------------------------------------------------------- simulated researchers
@dataclass(frozen=True)
class SimulatedResearcher:
    """A rule on the synthetic sky's truth/tag columns giving each galaxy a score 0..5.

    Parameters
    ----------
    name : str
        Short name used in notebook parameters (``researcher = "merger hunter"``).
    description : str
        What this researcher finds interesting, in words.
    rule : callable
        ``rule(catalogue) -> int array`` of scores 0..5.
    """

    name: str
    description: str
    rule: Callable[[pd.DataFrame], np.ndarray]

    def score(self, catalogue: pd.DataFrame) -> np.ndarray:
        """Scores 0..5 for every row of ``catalogue``.

        Returns
        -------
        np.ndarray of int
        """
        scores = np.asarray(self.rule(catalogue))
        if scores.shape != (len(catalogue),):
            raise ValueError(f"researcher {self.name!r} returned shape {scores.shape}")
        return np.clip(np.round(scores), SCORE_MIN, SCORE_MAX).astype(int)

    def is_interesting(self, catalogue: pd.DataFrame, threshold: int = INTERESTING_SCORE):
        """Boolean mask of the galaxies this researcher scores >= ``threshold``."""
        return self.score(catalogue) >= threshold


def _col(catalogue: pd.DataFrame, name: str, researcher: str) -> pd.Series:
    if name not in catalogue.columns:
        raise KeyError(
            f"simulated researcher {researcher!r} needs column {name!r}, which the catalogue "
            "lacks; simulated researchers work on the synthetic sky (synthetic.make_sky())."
        )
    return catalogue[name]


def _tag(catalogue, name, researcher) -> np.ndarray:
    return _col(catalogue, name, researcher).fillna(False).astype(bool).to_numpy()


def _merger_hunter(cat: pd.DataFrame) -> np.ndarray:
    merging = _col(cat, "truth_merging", "merger hunter").astype(str).to_numpy()
    tidal = _tag(cat, "tag_tidal", "merger hunter")
    return np.select(
        [
            (merging == "merger") & tidal,
            merging == "merger",
            merging == "major-disturbance",
            merging == "minor-disturbance",
        ],
        [5, 3, 2, 1],
        0,
    )


def _lens_hunter(cat: pd.DataFrame) -> np.ndarray:
    lens = _tag(cat, "tag_lens", "lens hunter")
    ring = _tag(cat, "tag_ring", "lens hunter") if "tag_ring" in cat.columns else 0
    # arcs and rings look alike at a glance: a ring earns a polite 2
    return np.where(lens, 5, np.where(ring, 2, 0))


def _rings_and_dust(cat: pd.DataFrame) -> np.ndarray:
    ring = _tag(cat, "tag_ring", "rings and dust lanes")
    dust = _tag(cat, "tag_dust-lane", "rings and dust lanes")
    featured = _col(cat, "truth_type", "rings and dust lanes").astype(str).to_numpy() == "featured"
    return np.select([ring & dust, ring | dust, featured], [5, 4, 1], 0)


def _edge_on_boxy(cat: pd.DataFrame) -> np.ndarray:
    edge = _col(cat, "truth_edge_bulge", "boxy bulge fan").astype(str).to_numpy()
    return np.select([edge == "boxy", edge == "rounded", edge == "none"], [5, 2, 1], 0)


RESEARCHERS: dict[str, SimulatedResearcher] = {
    r.name: r
    for r in [
        SimulatedResearcher(
            "merger hunter",
            "Wants mergers caught with tidal tails (5); other mergers are nice (3), disturbed "
            "galaxies less so (major 2, minor 1).",
            _merger_hunter,
        ),
        SimulatedResearcher(
            "lens hunter",
            "Wants gravitational lenses and arcs (5); rings look similar and earn 2.",
            _lens_hunter,
        ),
        SimulatedResearcher(
            "rings and dust lanes",
            "Wants rings or dust lanes (4), both at once (5); other disks earn 1.",
            _rings_and_dust,
        ),
        SimulatedResearcher(
            "boxy bulge fan",
            "Wants edge-on disks with boxy bulges (5); other edge-on bulges 1 or 2.",
            _edge_on_boxy,
        ),
    ]
}


def get_researcher(name: str | SimulatedResearcher) -> SimulatedResearcher:
    """Look up a simulated researcher by name (or pass one through).

    Raises
    ------
    KeyError naming the known researchers.
    """
    if isinstance(name, SimulatedResearcher):
        return name
    if name not in RESEARCHERS:
        raise KeyError(f"unknown simulated researcher {name!r}; choose from {sorted(RESEARCHERS)}")
    return RESEARCHERS[name]


def describe_researchers(catalogue: pd.DataFrame, threshold: int = INTERESTING_SCORE):
    """How many galaxies each simulated researcher finds interesting in ``catalogue``.

    Returns
    -------
    pd.DataFrame with columns researcher, description, n_interesting, fraction_interesting
    """
    rows = []
    for r in RESEARCHERS.values():
        try:
            mask = r.is_interesting(catalogue, threshold)
        except KeyError:
            continue
        rows.append(
            {
                "researcher": r.name,
                "description": r.description,
                "n_interesting": int(mask.sum()),
                "fraction_interesting": float(mask.mean()),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- metrics
def ranking(scores, labelled_scores=None, threshold: int = INTERESTING_SCORE) -> np.ndarray:
    """Order galaxies best first, optionally placing the already-labelled ones by their label.

    Parameters
    ----------
    scores : (N,) array
        The method's predicted score.
    labelled_scores : (N,) array or None
        User scores with NaN for unlabelled. When given, labelled galaxies the user scored
        >= ``threshold`` go first and the ones they scored below it go last (the paper's code
        replaces predictions by ``label * 100``); unlabelled galaxies keep their predicted order.

    Returns
    -------
    np.ndarray of int, a permutation of range(N)
    """
    key = np.asarray(scores, dtype=np.float64).copy()
    if labelled_scores is not None:
        ls = np.asarray(labelled_scores, dtype=np.float64)
        known = ~np.isnan(ls)
        top = key.max() if len(key) else 0.0
        bottom = key.min() if len(key) else 0.0
        key[known & (ls >= threshold)] = top + 1 + ls[known & (ls >= threshold)]
        key[known & (ls < threshold)] = bottom - 1 - (SCORE_MAX - ls[known & (ls < threshold)])
    return np.argsort(-key, kind="stable")


def rank_weighted_score(sorted_interesting, n: int) -> float:
    """Astronomaly's rank-weighted score of the top ``n`` (Lochner & Bassett 2021, eq. 4).

    ``RWS(N) = sum_{i=1..N} (N + 1 - i) I_i / (N (N + 1) / 2)``; 1 when the top N are all
    interesting, and the top of the list weighs most.
    """
    top = np.asarray(sorted_interesting[:n], dtype=np.float64)
    weights = n - np.arange(len(top))
    return float((weights * top).sum() / (n * (n + 1) / 2))


def ranking_metrics(
    order: np.ndarray, is_interesting: np.ndarray, top_n: Sequence[int] = (50, 100, 200)
) -> dict:
    """Precision@N, recall@N, rank-weighted score@N and average precision of one ranking.

    Parameters
    ----------
    order : permutation of indices, best first (from :func:`ranking`)
    is_interesting : (N,) bool
    top_n : the N values

    Returns
    -------
    dict with keys ``precision_at_N``, ``recall_at_N``, ``rws_at_N`` and
    ``average_precision``
    """
    interesting = np.asarray(is_interesting, dtype=bool)
    sorted_int = interesting[order]
    total = max(int(interesting.sum()), 1)
    out = {}
    for n in top_n:
        found = int(sorted_int[:n].sum())
        out[f"precision_at_{n}"] = found / n
        out[f"recall_at_{n}"] = found / total
        out[f"rws_at_{n}"] = rank_weighted_score(sorted_int, n)
    # average precision of a strict ranking: the mean, over interesting galaxies, of the
    # precision at each one's rank (what scikit-learn's average_precision_score gives for
    # distinct scores, computed directly because the simulation calls this hundreds of times)
    hits = np.flatnonzero(sorted_int)
    out["average_precision"] = (
        float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1))) if len(hits) else 0.0
    )
    return out


# --------------------------------------------------------------------------- simulation
def run_simulation(
    X,
    researcher_scores,
    learner=None,
    n_labels: int = 200,
    batch: int = 10,
    repeats: int = 5,
    seed: int = 0,
    threshold: int = INTERESTING_SCORE,
    top_n: Sequence[int] = (50, 100, 200),
    progress: bool = True,
) -> pd.DataFrame:
    """Let a simulated researcher answer every batch and measure the ranking as labels grow.

    Each repeat clones ``learner`` with ``random_state = seed + repeat``, fits it on X without
    labels, and loops: choose ``batch`` galaxies (``learner.next_batch``), reveal their
    ``researcher_scores``, retrain (``learner.update``), measure. The learner can be an
    :class:`ActiveLearner` or an :class:`AstronomalyScorer` (anything with fit / update /
    predict / next_batch).

    Two rankings are measured at every step (column ``ranking``):

    - ``"labelled_first"``: labelled galaxies the researcher scored >= ``threshold`` first,
      those scored below it last, the rest by prediction. **This is the one behind the paper's
      headline numbers** (its published analysis code, ``comparison_from_scratch/gp.py``, ranks
      ``preds_with_labels``: known labels times 100 replace the predictions), and what a
      researcher actually sees.
    - ``"predicted"``: every galaxy, labelled or not, ranked by the method's prediction alone,
      which measures what the model has learned.

    Parameters
    ----------
    X : (N, D) array
        Representation of every galaxy.
    researcher_scores : (N,) int array
        The simulated researcher's 0..5 score for every galaxy (revealed only when chosen).
    learner : estimator or None
        Default ``ActiveLearner()``.
    n_labels : int
        Labels per repeat (200 in the paper).
    batch : int
        Galaxies per batch (10).
    repeats : int
        Independent repeats (different first batches / seeds).
    seed : int
        Base seed.
    threshold : int
        Score at or above which a galaxy counts as interesting.
    top_n : the N of precision@N etc.
    progress : bool
        Show a tqdm bar over repeats.

    Returns
    -------
    pd.DataFrame, one row per (repeat, n_labels, ranking), with the metrics of
    :func:`ranking_metrics` and ``n_interesting_labelled``.
    """
    from tqdm.auto import tqdm

    X = _as_features(X)
    truth = np.asarray(researcher_scores, dtype=np.float64)
    if truth.shape != (len(X),):
        raise ValueError(f"researcher_scores has shape {truth.shape}; expected ({len(X)},)")
    _as_scores(truth, len(X))
    interesting = truth >= threshold
    base = ActiveLearner() if learner is None else learner
    rows = []
    for rep in tqdm(range(repeats), desc="repeats", disable=not progress):
        est = clone(base).set_params(random_state=seed + rep)
        y = np.full(len(X), np.nan)
        est.fit(X, y)
        labelled = 0
        while labelled < n_labels:
            idx = est.next_batch(
                min(batch, n_labels - labelled), exclude=np.flatnonzero(~np.isnan(y))
            )
            if len(idx) == 0:
                break
            y[idx] = truth[idx]
            labelled += len(idx)
            est.update(y)
            pred = est.predict()
            for name, labelled_scores in (("labelled_first", y), ("predicted", None)):
                order = ranking(pred, labelled_scores, threshold)
                row = {"repeat": rep, "n_labels": labelled, "ranking": name}
                row.update(ranking_metrics(order, interesting, top_n))
                row["n_interesting_labelled"] = int(np.nansum(y >= threshold))
                rows.append(row)
    return pd.DataFrame(rows)


def summarise_simulation(results: pd.DataFrame, n_labels: int | None = None) -> pd.DataFrame:
    """Mean and standard deviation over repeats of every metric, per ranking and label count.

    Parameters
    ----------
    results : output of :func:`run_simulation`
    n_labels : int or None
        Keep only this number of labels.

    Returns
    -------
    pd.DataFrame indexed by (ranking, n_labels) with (metric, mean/std) columns
    """
    df = results if n_labels is None else results[results["n_labels"] == n_labels]
    metrics = [c for c in df.columns if c not in ("repeat", "n_labels", "ranking")]
    return df.groupby(["ranking", "n_labels"])[metrics].agg(["mean", "std"])


def isolation_forest_metrics(
    X, researcher_scores, threshold: int = INTERESTING_SCORE, top_n=(50, 100, 200), seed: int = 0
) -> dict:
    """Metrics of the plain isolation forest ranking (no labels at all).

    Returns
    -------
    dict as :func:`ranking_metrics`
    """
    scores = IsolationForestScorer(random_state=seed).fit(X).train_scores_
    interesting = np.asarray(researcher_scores) >= threshold
    return ranking_metrics(ranking(scores), interesting, top_n)


def pca_embedding(X, n_components: int = 40, random_state: int | None = 0) -> np.ndarray:
    """The paper's anomaly-search embedding: PCA to ``n_components``, then standard scaling.

    The same embedding :class:`ActiveLearner` fits internally, for giving the baselines the
    same view of the galaxies.

    Returns
    -------
    np.ndarray (N, n_components)
    """
    return ActiveLearner(n_components=n_components, random_state=random_state).fit(X).embedding_


# --------------------------------------------------------------------------- figures and tables
def _final(results: pd.DataFrame, n_labels: int | None, ranking_name: str) -> pd.DataFrame:
    df = results[results["ranking"] == ranking_name]
    n = df["n_labels"].max() if n_labels is None else n_labels
    return df[df["n_labels"] == n]


def comparison_table(
    results: dict[str, pd.DataFrame],
    n_labels: int | None = None,
    ranking_name: str = "labelled_first",
    metrics: Sequence[str] = ("precision_at_50", "precision_at_200", "average_precision"),
) -> pd.DataFrame:
    """Mean (and std over repeats) of the headline metrics per method, at ``n_labels`` labels.

    Parameters
    ----------
    results : {method name: output of run_simulation}
    n_labels : int or None
        Default: the largest number of labels in each result.
    ranking_name : "labelled_first" (the paper's headline) or "predicted"
    metrics : columns to report

    Returns
    -------
    pd.DataFrame, one row per method
    """
    rows = []
    for name, res in results.items():
        df = _final(res, n_labels, ranking_name)
        row = {"method": name, "n_labels": int(df["n_labels"].iloc[0]), "repeats": len(df)}
        for m in metrics:
            row[m] = float(df[m].mean())
            row[f"{m}_std"] = float(df[m].std(ddof=0))
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def plot_learning_curves(
    results: dict[str, pd.DataFrame],
    metrics: Sequence[str] = ("precision_at_50", "average_precision"),
    ranking_name: str = "labelled_first",
    baselines: dict[str, dict] | None = None,
):
    """How each method's metrics grow with the number of labels (mean and spread over repeats).

    Parameters
    ----------
    results : {method name: output of run_simulation}
    metrics : one panel per metric
    ranking_name : which ranking to plot
    baselines : {name: metrics dict} drawn as flat dashed lines (e.g. the plain isolation forest)

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for name, res in results.items():
            df = res[res["ranking"] == ranking_name].groupby("n_labels")[metric]
            mean, lo, hi = df.mean(), df.min(), df.max()
            (line,) = ax.plot(mean.index, mean.values, marker="o", ms=3, label=name)
            ax.fill_between(mean.index, lo.values, hi.values, color=line.get_color(), alpha=0.2)
        for name, values in (baselines or {}).items():
            ax.axhline(values[metric], ls="--", color="grey", lw=1, label=name)
        ax.set_xlabel("labels given")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_rank_weighted_scores(
    results: dict[str, pd.DataFrame],
    n_labels: int | None = None,
    ranking_name: str = "labelled_first",
):
    """The paper's comparison figure: rank-weighted score against N, after ``n_labels`` labels.

    Uses the ``rws_at_N`` columns of :func:`run_simulation` (pass a long ``top_n`` there).

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for name, res in results.items():
        df = _final(res, n_labels, ranking_name)
        cols = sorted((c for c in df.columns if c.startswith("rws_at_")), key=lambda c: int(c[7:]))
        ns = [int(c[7:]) for c in cols]
        mean = df[cols].mean().to_numpy()
        (line,) = ax.plot(ns, mean, marker="o", ms=3, label=name)
        ax.fill_between(ns, df[cols].min(), df[cols].max(), color=line.get_color(), alpha=0.2)
    n = int(df["n_labels"].iloc[0])
    ax.set_xlabel("N (galaxies looked at, best first)")
    ax.set_ylabel("rank-weighted score")
    ax.set_title(f"after {n} labels", fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

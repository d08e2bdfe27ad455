"""Find the anomalies that interest *this* researcher (notebook 05).

Walmsley et al. 2022 (MNRAS 513, 1581, section 5) compress the representation to 40
standardised PCA components (``representations.RepresentationPCA``) and let a Gaussian process
learn one researcher's 0-to-5 scores, choosing what to show next by expected improvement
(:class:`ActiveLearner`). The baseline is Astronomaly (Lochner & Bassett 2021): an isolation
forest's score with the user's scores folded in (:class:`AstronomalyScorer`). Every estimator
takes notebook 03's representation table or a matrix ``X`` (N, D); user scores are a float
array with NaN where a galaxy is unlabelled.

>>> learner = ActiveLearner(random_state=0).fit(table)   # doctest: +SKIP
>>> first = learner.next_batch(10)                        # doctest: +SKIP
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

from galaxy_helpers.plotting import galaxy_grid, ranked_grid
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


def nearest_labelled_distance(X: np.ndarray, labelled: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Euclidean distance (N,) from every row of X to its nearest row of ``labelled``, computed
    ``chunk`` rows at a time."""
    sq_l = (labelled**2).sum(1)
    out = np.empty(len(X))
    for start in range(0, len(X), chunk):
        block = X[start : start + chunk]
        d2 = (block**2).sum(1)[:, None] - 2 * block @ labelled.T + sq_l[None, :]
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


# --------------------------------------------------------------------------- baselines
class IsolationForestScorer(BaseEstimator):
    """Isolation-forest anomaly score, 0 (boring) to 5 (weird), as Astronomaly's:
    ``-decision_function`` min-max rescaled over the fitted galaxies (new ones with the same
    range, clipped). ``n_estimators``: trees (Astronomaly's 100); ``random_state``: seed.

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
        """Anomaly score 0..5 (N,) per galaxy (higher = more anomalous)."""
        _check_fitted(self, "forest_")
        return self._scale(-self.forest_.decision_function(_as_features(X)))

    def predict(self, X) -> np.ndarray:
        """Same as :meth:`score_samples` (a ranking score, not inlier/outlier labels)."""
        return self.score_samples(X)


class AstronomalyScorer(BaseEstimator):
    """Astronomaly's fold-in of user scores into an anomaly score (Lochner & Bassett 2021).

    As Astronomaly's ``NeighbourScore`` (the paper's section 2.5): a random forest learns the
    user's scores U and predicts Û everywhere; the anomaly score S (0..5) is re-weighted by the
    distance d to the nearest labelled galaxy over the mean such distance d̄::

        S' = S * tanh( exp(alpha * d / d̄) - 1 + arctanh( min_score + 0.85 * Û / max_score ) )

    The fold-in can only *lower* a score: galaxies the forest finds ordinary stay unseen.

    Parameters
    ----------
    anomaly_scorer : estimator giving S (``fit`` / ``score_samples``, 0..5), default
        :class:`IsolationForestScorer`.
    alpha, min_score, max_score : float
        Trust in Û (1, as the paper), its ε (0.1) and the highest user score (5).
    n_estimators : int
        Trees in the random-forest regressor (100, as Astronomaly).
    random_state : int or None
        Seed for both forests.

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
        dist = nearest_labelled_distance(self.X_, self.X_[labelled])
        self.mean_distance_ = float(np.mean(dist))
        self.scores_ = self.combine(dist, self.user_scores_, self.anomaly_scores_)
        return self

    def combine(self, distance, user_score, anomaly_score, mean_distance=None) -> np.ndarray:
        """The distance-weighted combination of the class docstring (d̄: default the mean of
        ``distance``)."""
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
        labelled = ~np.isnan(self.y_)
        dist = nearest_labelled_distance(X, self.X_[labelled])
        return self.combine(dist, self.regressor_.predict(X), s, self.mean_distance_)

    def next_batch(self, n: int = 10, exclude=None) -> np.ndarray:
        """Indices of the ``n`` highest-scoring galaxies not in ``exclude``."""
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
    """Expected improvement (>= 0) of a GP posterior (``mean``, ``std``) over ``best``.

    ``EI = (mu - best - xi) Phi(z) + sigma phi(z)``, ``z = (mu - best - xi) / sigma``: modAL's
    ``max_EI``, which the paper's code calls with ``tradeoff=0.5``.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
    improvement = mean - best - xi
    z = improvement / std
    return improvement * ndtr(z) + std * np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)


class ActiveLearner(BaseEstimator):
    """The paper's learner: PCA-40 -> StandardScaler -> GP regression -> expected improvement.

    The embedding (``RepresentationPCA(standardise=True)``) is fitted once on every galaxy; the
    GP (rational-quadratic + white noise, refitted by maximum likelihood at every retrain) on
    the labelled ones. The first batch is random (the paper) or the isolation forest's top;
    later batches have the highest expected improvement.

    Parameters
    ----------
    n_components : int
        PCA components (40 in the paper; capped at the number of features).
    xi : float
        Expected-improvement margin (``tradeoff=0.5`` in the paper's code).
    first_batch : {"random", "isolation_forest"}
        How the first batch is chosen before any label exists.
    warm_start : bool
        Start each hyper-parameter search from the previous optimum. Faster, but it can stay
        stuck in the white-noise optimum found while all labels were 0 (default False, as the
        paper's code).
    random_state : int or None
        Seed for PCA's solver, the first batch and the GP optimiser.

    Attributes
    ----------
    embedding_ : (N, n_components) array
        The scaled PCA embedding of the fitted galaxies (``embedding_pca_`` fitted it).
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
        """Fit the embedding on every galaxy of X, then the GP on the labelled rows of ``y``
        (scores 0..5, NaN where unlabelled; None: no labels yet)."""
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
        """Retrain the GP on new scores ``y`` (N,) for the same galaxies (the widget's step)."""
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
        """GP posterior mean and std of embedded rows Z, as ``gp.predict(Z, return_std=True)``
        (tested) but 4x faster on 50,000 galaxies: the step the widget waits for."""
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
        """GP posterior mean (and std) of the fitted pool (``X=None``, cached) or new galaxies."""
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
        """Indices of the next ``n`` galaxies to show: ``first_batch``'s choice before any
        label, then the highest expected improvement; never labelled ones or ``exclude``."""
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
    """A rule on the synthetic sky's truth and tag columns giving each galaxy a score 0..5:
    ``name`` (as notebook parameters write it), ``description`` (in words), ``rule(catalogue)
    -> int array``."""

    name: str
    description: str
    rule: Callable[[pd.DataFrame], np.ndarray]

    def score(self, catalogue: pd.DataFrame) -> np.ndarray:
        """Integer scores 0..5 for every row of ``catalogue``."""
        scores = np.asarray(self.rule(catalogue))
        if scores.shape != (len(catalogue),):
            raise ValueError(f"researcher {self.name!r} returned shape {scores.shape}")
        return np.clip(np.round(scores), SCORE_MIN, SCORE_MAX).astype(int)

    def is_interesting(self, catalogue: pd.DataFrame, threshold: int = INTERESTING_SCORE):
        """Boolean mask of the galaxies this researcher scores >= ``threshold``."""
        return self.score(catalogue) >= threshold

    def plot_examples(self, catalogue: pd.DataFrame, k: int = 16, threshold=INTERESTING_SCORE):
        """The first ``k`` galaxies of ``catalogue`` this researcher finds interesting, with
        their scores (a matplotlib Figure)."""
        scores = self.score(catalogue)
        shown = np.flatnonzero(scores >= threshold)[:k]
        return galaxy_grid(
            catalogue["file_loc"].to_numpy()[shown],
            titles=[f"score {s}" for s in scores[shown]],
            suptitle=f"What the {self.name} wants",
        )


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
    """A simulated researcher by name (one passes through); a KeyError names the known ones."""
    if isinstance(name, SimulatedResearcher):
        return name
    if name not in RESEARCHERS:
        raise KeyError(f"unknown simulated researcher {name!r}; choose from {sorted(RESEARCHERS)}")
    return RESEARCHERS[name]


def describe_researchers(catalogue: pd.DataFrame, threshold: int = INTERESTING_SCORE):
    """How many galaxies each simulated researcher finds interesting in ``catalogue``: a
    table of researcher, description, n_interesting, fraction_interesting."""
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
def _ranking_key(scores, labelled_scores, threshold):
    key = np.asarray(scores, dtype=np.float64).copy()
    if labelled_scores is not None:
        ls = np.asarray(labelled_scores, dtype=np.float64)
        known = ~np.isnan(ls)
        top = key.max() if len(key) else 0.0
        bottom = key.min() if len(key) else 0.0
        key[known & (ls >= threshold)] = top + 1 + ls[known & (ls >= threshold)]
        key[known & (ls < threshold)] = bottom - 1 - (SCORE_MAX - ls[known & (ls < threshold)])
    return key


def ranking(scores, labelled_scores=None, threshold: int = INTERESTING_SCORE) -> np.ndarray:
    """Galaxies best first (a permutation of range(N)).

    With ``labelled_scores`` (NaN = unlabelled), galaxies the user scored >= ``threshold`` go
    first and the ones scored below it last (the paper's code replaces predictions by
    ``label * 100``); unlabelled galaxies keep their predicted order.
    """
    return np.argsort(-_ranking_key(scores, labelled_scores, threshold), kind="stable")


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
    """``precision_at_N``, ``recall_at_N``, ``rws_at_N`` and ``average_precision`` of one
    ranking (``order``: best first, from :func:`ranking`)."""
    interesting = np.asarray(is_interesting, dtype=bool)
    sorted_int = interesting[order]
    total = max(int(interesting.sum()), 1)
    out = {}
    for n in top_n:
        found = int(sorted_int[:n].sum())
        out[f"precision_at_{n}"] = found / n
        out[f"recall_at_{n}"] = found / total
        out[f"rws_at_{n}"] = rank_weighted_score(sorted_int, n)
    # scikit-learn's average_precision_score for distinct scores, computed directly because
    # the simulation calls this hundreds of times
    hits = np.flatnonzero(sorted_int)
    out["average_precision"] = (
        float(np.mean(np.arange(1, len(hits) + 1) / (hits + 1))) if len(hits) else 0.0
    )
    return out


def plot_ranking(
    catalogue: pd.DataFrame,
    predicted,
    labelled_scores,
    researcher_scores,
    k: int = 24,
    threshold: int = INTERESTING_SCORE,
    suptitle: str | None = None,
):
    """The top ``k`` of a search as the researcher sees it (:func:`ranking`: labelled
    galaxies by their label, the rest by ``predicted``), framing those ``researcher_scores``
    calls interesting; returns ``(figure, ranking_metrics at N = 50)``."""
    labelled = ~np.isnan(np.asarray(labelled_scores, dtype=np.float64))
    interesting = np.asarray(researcher_scores) >= threshold
    key = _ranking_key(predicted, labelled_scores, threshold)
    fig, _ = ranked_grid(
        catalogue,
        key,
        k=k,
        kind="stable",
        titles=[
            f"{s}{' (labelled)' if lab else ''}"
            for s, lab in zip(researcher_scores, labelled, strict=True)
        ],
        highlight=interesting,
        suptitle=suptitle,
    )
    order = ranking(predicted, labelled_scores, threshold)
    return fig, ranking_metrics(order, interesting, top_n=(50,))


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

    Each repeat clones ``learner`` (default :class:`ActiveLearner`; anything with fit / update
    / predict / next_batch) with ``random_state = seed + repeat``, fits it on X without labels
    and loops: choose ``batch`` galaxies, reveal their ``researcher_scores``, retrain, measure.
    Two rankings are measured (column ``ranking``): ``"labelled_first"`` (labelled galaxies by
    their label, the rest by prediction: the paper's headline numbers, from its
    ``comparison_from_scratch/gp.py``, and what a researcher sees) and ``"predicted"`` (the
    prediction alone: what the model learned).

    Parameters
    ----------
    X : representation table or (N, D) array
    researcher_scores : (N,) int array, the researcher's 0..5 score of every galaxy
    learner : estimator or None
    n_labels, batch, repeats : labels per repeat (200 in the paper), per batch (10), repeats
    seed : int
        Base seed.
    threshold : int
        Score at or above which a galaxy counts as interesting.
    top_n : the N of precision@N etc.
    progress : bool
        A progress bar over repeats.

    Returns
    -------
    pd.DataFrame, one row per (repeat, n_labels, ranking): :func:`ranking_metrics` and
    ``n_interesting_labelled``.
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
    """Mean and std over repeats of every metric of :func:`run_simulation`, indexed by
    (ranking, n_labels); ``n_labels`` keeps only that label count."""
    df = results if n_labels is None else results[results["n_labels"] == n_labels]
    metrics = [c for c in df.columns if c not in ("repeat", "n_labels", "ranking")]
    return df.groupby(["ranking", "n_labels"])[metrics].agg(["mean", "std"])


def isolation_forest_metrics(
    X, researcher_scores, threshold: int = INTERESTING_SCORE, top_n=(50, 100, 200), seed: int = 0
) -> dict:
    """:func:`ranking_metrics` of the plain isolation forest ranking (no labels at all)."""
    scores = IsolationForestScorer(random_state=seed).fit(X).train_scores_
    interesting = np.asarray(researcher_scores) >= threshold
    return ranking_metrics(ranking(scores), interesting, top_n)


def pca_embedding(X, n_components: int = 40, random_state: int | None = 0) -> np.ndarray:
    """The embedding :class:`ActiveLearner` fits (PCA to ``n_components``, then standard
    scaling), to give the baselines the same view of the galaxies; (N, n_components)."""
    return ActiveLearner(n_components=n_components, random_state=random_state).fit(X).embedding_


#: The two methods :func:`compare_methods` runs, by the names its tables show.
PAPER, ASTRONOMALY = (
    "CNN + Gaussian process (paper)",
    "CNN + isolation forest + fold-in (Astronomaly)",
)


class SearchComparison(dict):
    """``{method: run_simulation table}`` from :func:`compare_methods`, with its summaries."""

    def table(self, n_labels=None, ranking_name="labelled_first", no_labels=None, std=True):
        """:func:`comparison_table`; ``no_labels`` (isolation-forest metrics) adds its row."""
        return comparison_table(self, n_labels, ranking_name, no_labels=no_labels, std=std)

    def metrics(self, n_labels=None, no_labels=None) -> dict:
        """The paper's numbers for a metrics file: the GP's at ``n_labels`` (both rankings),
        Astronomaly's, and the isolation forest's without labels (``no_labels``)."""
        final, predicted = self.table(n_labels), self.table(n_labels, "predicted")
        gp, astro = final.loc[PAPER], final.loc[ASTRONOMALY]
        out = {
            "n_labels": int(gp["n_labels"]),
            "repeats": int(gp["repeats"]),
            "precision_at_50": gp["precision_at_50"],
            "precision_at_200": gp["precision_at_200"],
            "average_precision": gp["average_precision"],
            "precision_at_50_predicted_ranking": predicted.loc[PAPER, "precision_at_50"],
            "average_precision_predicted_ranking": predicted.loc[PAPER, "average_precision"],
            "average_precision_isolation_forest": astro["average_precision"],
            "precision_at_50_isolation_forest": astro["precision_at_50"],
        }
        for key in ("average_precision", "precision_at_50") if no_labels else ():
            out[f"{key}_isolation_forest_no_labels"] = no_labels[key]
        return out

    def headline(self, n_labels=None) -> dict:
        """Three headline numbers: the GP's precision@50 and average precision, Astronomaly's."""
        gp, astro = self.table(n_labels).loc[[PAPER, ASTRONOMALY]].to_dict("records")
        return {
            f"GP precision@50 after {gp['n_labels']} labels": gp["precision_at_50"],
            "GP average precision": gp["average_precision"],
            "Astronomaly average precision": astro["average_precision"],
        }


def compare_methods(
    X,
    researcher_scores,
    n_components: int = 40,
    first_batch: str = "random",
    n_labels: int = 200,
    batch: int = 10,
    repeats: int = 5,
    baseline_repeats: int = 1,
    seed: int = 0,
    top_n: Sequence[int] = (50, 100, 200),
    progress: bool = True,
) -> SearchComparison:
    """The paper's GP search and Astronomaly's on the same galaxies, as labels grow.

    The GP (:class:`ActiveLearner`) starts from ``X`` (the representation table), Astronomaly
    (``baseline_repeats`` repeats) from its :func:`pca_embedding` (``random_state=seed``);
    other arguments as :func:`run_simulation`.

    Returns
    -------
    SearchComparison
        ``{PAPER: table, ASTRONOMALY: table}`` with ``.table()``, ``.metrics()``, ``.headline()``.
    """
    embedding = pca_embedding(X, n_components=n_components, random_state=seed)
    common = {"n_labels": n_labels, "batch": batch, "seed": seed, "top_n": top_n}
    common["progress"] = progress
    gp = ActiveLearner(n_components=n_components, first_batch=first_batch)
    paper = run_simulation(X, researcher_scores, gp, repeats=repeats, **common)
    astro = AstronomalyScorer()
    baseline = run_simulation(
        embedding, researcher_scores, astro, repeats=baseline_repeats, **common
    )
    return SearchComparison({PAPER: paper, ASTRONOMALY: baseline})


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
    no_labels: dict | None = None,
    std: bool = True,
) -> pd.DataFrame:
    """Mean (and, with ``std``, the std over repeats) of ``metrics`` per method at
    ``n_labels`` labels (default each result's largest), for the ``labelled_first`` (the paper's
    headline) or ``predicted`` ranking; ``no_labels`` (:func:`isolation_forest_metrics`) adds the
    row ``isolation forest, no labels``. One row per method."""
    rows = []
    for name, res in results.items():
        df = _final(res, n_labels, ranking_name)
        row = {"method": name, "n_labels": int(df["n_labels"].iloc[0]), "repeats": len(df)}
        for m in metrics:
            row[m] = float(df[m].mean())
            if std:
                row[f"{m}_std"] = float(df[m].std(ddof=0))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    if no_labels is not None:
        table.loc["isolation forest, no labels"] = {m: no_labels[m] for m in metrics} | {
            "n_labels": 0,
            "repeats": 1,
        }
    return table


def plot_learning_curves(
    results: dict[str, pd.DataFrame],
    metrics: Sequence[str] = ("precision_at_50", "average_precision"),
    ranking_name: str = "labelled_first",
    baselines: dict[str, dict] | None = None,
):
    """How each method's metrics grow with the labels (mean, min-max band over repeats).

    ``results``: {method: run_simulation table}, one panel per metric; ``baselines``: {name:
    metrics dict} drawn as dashed lines. Returns a matplotlib Figure.
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
    """The paper's comparison figure: rank-weighted score against N after ``n_labels`` labels
    (the ``rws_at_N`` columns of :func:`run_simulation`: pass a long ``top_n``); a Figure."""
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

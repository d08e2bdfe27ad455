"""Find the anomalies that interest *this* researcher (notebook 05).

``learners`` holds the estimators, ``search`` the simulated researchers and the experiment.

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

from galaxy_helpers.anomaly.learners import (
    INTERESTING_SCORE,
    SCORE_MAX,
    SCORE_MIN,
    ActiveLearner,
    AstronomalyScorer,
    IsolationForestScorer,
    expected_improvement,
    nearest_labelled_distance,
)
from galaxy_helpers.anomaly.search import (
    ASTRONOMALY,
    PAPER,
    RESEARCHERS,
    SearchComparison,
    SimulatedResearcher,
    compare_methods,
    comparison_table,
    describe_researchers,
    get_researcher,
    isolation_forest_metrics,
    pca_embedding,
    plot_learning_curves,
    plot_rank_weighted_scores,
    plot_ranking,
    rank_weighted_score,
    ranking,
    ranking_metrics,
    run_simulation,
    summarise_simulation,
)

__all__ = ["INTERESTING_SCORE", "SCORE_MAX", "SCORE_MIN", "ActiveLearner", "AstronomalyScorer"]
__all__ += ["IsolationForestScorer", "expected_improvement", "nearest_labelled_distance"]
__all__ += ["ASTRONOMALY", "PAPER", "RESEARCHERS", "SearchComparison", "SimulatedResearcher"]
__all__ += ["compare_methods", "comparison_table", "describe_researchers", "get_researcher"]
__all__ += ["isolation_forest_metrics", "pca_embedding", "plot_learning_curves", "plot_ranking"]
__all__ += ["plot_rank_weighted_scores", "rank_weighted_score", "ranking", "ranking_metrics"]
__all__ += ["run_simulation", "summarise_simulation"]

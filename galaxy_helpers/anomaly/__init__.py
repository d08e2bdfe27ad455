"""Find the anomalies that interest *this* researcher (notebook 05): ``learners`` holds the
estimators (the paper's Gaussian process, Walmsley et al. 2022 section 5, and Astronomaly's
isolation forest), ``search`` the simulated researchers and the experiment.

>>> learner = ActiveLearner(random_state=0).fit(table)   # doctest: +SKIP
>>> first = learner.next_batch(10)                        # doctest: +SKIP
"""

from galaxy_helpers.anomaly.learners import (
    INTERESTING_SCORE,
    ActiveLearner,
    AstronomalyScorer,
    IsolationForestScorer,
    expected_improvement,
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
    run_simulations,
)

__all__ = ["INTERESTING_SCORE", "ActiveLearner", "AstronomalyScorer"]
__all__ += ["IsolationForestScorer", "expected_improvement", "run_simulation", "run_simulations"]
__all__ += ["ASTRONOMALY", "PAPER", "RESEARCHERS", "SearchComparison", "SimulatedResearcher"]
__all__ += ["compare_methods", "comparison_table", "describe_researchers", "get_researcher"]
__all__ += ["isolation_forest_metrics", "pca_embedding", "plot_learning_curves", "plot_ranking"]
__all__ += ["plot_rank_weighted_scores", "rank_weighted_score", "ranking", "ranking_metrics"]

"""Simulated researchers and the search experiment: how fast each learner finds what one
researcher wants (:func:`run_simulation`, :func:`compare_methods`), its metrics and figures."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from galaxy_helpers.anomaly.learners import (
    INTERESTING_SCORE,
    SCORE_MAX,
    SCORE_MIN,
    ActiveLearner,
    AstronomalyScorer,
    IsolationForestScorer,
    _as_features,
    _as_scores,
)
from galaxy_helpers.plotting import galaxy_grid, ranked_grid


@dataclass(frozen=True)
class SimulatedResearcher:
    """A ``rule(catalogue) -> int array`` on the synthetic sky's truth and tag columns giving
    each galaxy a score 0..5, with its ``name`` and ``description``."""

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
        """The first ``k`` galaxies this researcher finds interesting, with scores (a Figure)."""
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
    merger, tidal = merging == "merger", _tag(cat, "tag_tidal", "merger hunter")
    disturbed = [merging == "major-disturbance", merging == "minor-disturbance"]
    return np.select([merger & tidal, merger, *disturbed], [5, 3, 2, 1], 0)


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
    """How many galaxies each simulated researcher finds interesting: a table of researcher,
    description, n_interesting, fraction_interesting."""
    rows = []
    for r in RESEARCHERS.values():
        try:
            mask = r.is_interesting(catalogue, threshold)
        except KeyError:  # a column this researcher needs is missing
            continue
        counts = {"n_interesting": int(mask.sum()), "fraction_interesting": float(mask.mean())}
        rows.append({"researcher": r.name, "description": r.description} | counts)
    return pd.DataFrame(rows)


def ranking(scores, labelled_scores=None, threshold: int = INTERESTING_SCORE) -> np.ndarray:
    """Galaxies best first; with ``labelled_scores`` (NaN = unlabelled) those the user scored
    >= ``threshold`` go first and the others last (the paper's code: ``label * 100``)."""
    key = np.asarray(scores, dtype=np.float64).copy()
    if labelled_scores is not None:
        ls = np.asarray(labelled_scores, dtype=np.float64)
        top, bottom = (key.max(), key.min()) if len(key) else (0.0, 0.0)
        good, poor = ~np.isnan(ls) & (ls >= threshold), ~np.isnan(ls) & (ls < threshold)
        key[good] = top + 1 + ls[good]
        key[poor] = bottom - 1 - (SCORE_MAX - ls[poor])
    return np.argsort(-key, kind="stable")


def rank_weighted_score(sorted_interesting, n: int) -> float:
    """Astronomaly's rank-weighted score of the top ``n`` (Lochner & Bassett 2021, eq. 4):
    ``sum_{i=1..N} (N + 1 - i) I_i / (N (N + 1) / 2)``, 1 when the top N are all interesting."""
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
    # scikit-learn's average_precision_score for distinct scores, hundreds of times faster
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
    """The top ``k`` of a search as the researcher sees it (:func:`ranking`), framing those
    ``researcher_scores`` calls interesting; returns ``(figure, ranking_metrics at N = 50)``."""
    labelled = ~np.isnan(np.asarray(labelled_scores, dtype=np.float64))
    interesting = np.asarray(researcher_scores) >= threshold
    order = ranking(predicted, labelled_scores, threshold)
    marks = np.where(labelled, " (labelled)", "")
    titles = [f"{s}{m}" for s, m in zip(researcher_scores, marks, strict=True)]
    grid = dict(order=order, titles=titles, highlight=interesting, suptitle=suptitle)
    fig, _ = ranked_grid(catalogue, None, k, **grid)
    return fig, ranking_metrics(order, interesting, top_n=(50,))


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
    jobs: int | None = None,
) -> pd.DataFrame:
    """Let a simulated researcher answer every batch and measure the ranking as labels grow.

    Each repeat clones ``learner`` (default :class:`ActiveLearner`) with ``random_state = seed
    + repeat`` (an ActiveLearner's PCA embedding is fitted once, in the first repeat, and
    shared: repeats differ in their first batch and GP optimiser) and loops: choose ``batch``
    galaxies, reveal their ``researcher_scores``, retrain, measure, up to ``n_labels``. Rankings: ``labelled_first`` (labelled galaxies by
    their label, the paper's headline) and ``predicted`` (the prediction alone). Scores >=
    ``threshold`` are interesting; ``top_n`` are the N of precision@N. Returns a DataFrame, one
    row per (repeat, n_labels, ranking): :func:`ranking_metrics`, ``n_interesting_labelled``.
    The repeats run in ``jobs`` worker processes (default :func:`galaxy_helpers.core.n_jobs`);
    each is seeded on its own, so the table is the same for any ``jobs``.
    """
    tasks = _simulation_tasks(
        X, researcher_scores, learner, n_labels, batch, repeats, seed, threshold, top_n
    )
    return _run_tasks([tasks], jobs, progress)[0]


def run_simulations(
    runs: Sequence[dict], jobs: int | None = None, progress: bool = True
) -> list[pd.DataFrame]:
    """Several :func:`run_simulation` calls (one dict of its arguments each, ``X`` and
    ``researcher_scores`` included) whose repeats share one pool of ``jobs`` workers, so the
    cores stay busy to the end; one table per run, the same as :func:`run_simulation`'s."""
    params = inspect.signature(run_simulation).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    for name in ("progress", "jobs"):  # the pool's, not a run's
        defaults.pop(name)
    groups = [_simulation_tasks(**(defaults | dict(run))) for run in runs]
    return _run_tasks(groups, jobs, progress)


def _simulation_tasks(
    X, researcher_scores, learner, n_labels, batch, repeats, seed, threshold, top_n
) -> list[tuple]:
    """One ``_one_repeat`` argument tuple per repeat of :func:`run_simulation`."""
    X = _as_features(X)
    truth = _as_scores(researcher_scores, len(X))
    base = ActiveLearner() if learner is None else learner
    first = None
    if isinstance(base, ActiveLearner):  # one PCA for every repeat, as in the paper
        first = clone(base).set_params(random_state=seed).fit(X)
    return [
        (clone(base).set_params(random_state=seed + rep), X, truth, first, rep, n_labels, batch,
         threshold, tuple(top_n))
        for rep in range(repeats)
    ]  # fmt: skip


def _run_tasks(groups: list[list[tuple]], jobs, progress: bool) -> list[pd.DataFrame]:
    """Run every group's repeats in one pool (:func:`core.parallel_map`); a table per group."""
    from galaxy_helpers.core import parallel_map

    flat = [task for group in groups for task in group]
    rows = parallel_map(_one_repeat, flat, jobs=jobs, progress=progress, desc="repeats")
    out, at = [], 0
    for group in groups:
        out.append(pd.DataFrame([r for part in rows[at : at + len(group)] for r in part]))
        at += len(group)
    return out


def _one_repeat(est, X, truth, first, rep, n_labels, batch, threshold, top_n) -> list[dict]:
    """One simulated search: choose a batch, reveal its scores, retrain, measure; the rows."""
    interesting = truth >= threshold
    y = np.full(len(X), np.nan)
    if first is not None:
        est.fit(X, y, embedding_from=first)
    else:
        est.fit(X, y)
    rows, labelled = [], 0
    while labelled < n_labels:
        idx = est.next_batch(min(batch, n_labels - labelled), exclude=np.flatnonzero(~np.isnan(y)))
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
    return rows


def isolation_forest_metrics(
    X, researcher_scores, threshold: int = INTERESTING_SCORE, top_n=(50, 100, 200), seed: int = 0
) -> dict:
    """:func:`ranking_metrics` of the plain isolation forest ranking (no labels at all)."""
    scores = IsolationForestScorer(random_state=seed).fit(X).train_scores_
    interesting = np.asarray(researcher_scores) >= threshold
    return ranking_metrics(ranking(scores), interesting, top_n)


def pca_embedding(X, n_components: int = 40, random_state: int | None = 0) -> np.ndarray:
    """The (N, n_components) embedding :class:`ActiveLearner` fits, for the baselines."""
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
        """Metrics-file entries: the GP's (both rankings), Astronomaly's and ``no_labels``."""
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
    jobs: int | None = None,
) -> SearchComparison:
    """The paper's GP search and Astronomaly's (``baseline_repeats`` repeats, on
    :func:`pca_embedding`) on the same galaxies, their repeats in one pool of ``jobs`` workers;
    other arguments as :func:`run_simulation`.
    Returns a :class:`SearchComparison` ``{PAPER: table, ASTRONOMALY: table}``."""
    embedding = pca_embedding(X, n_components=n_components, random_state=seed)
    common = dict(researcher_scores=researcher_scores, n_labels=n_labels, batch=batch, seed=seed)
    common["top_n"] = top_n
    gp = ActiveLearner(n_components=n_components, first_batch=first_batch)
    astro = AstronomalyScorer()
    runs = [  # the baseline first: its repeats are the longest
        dict(X=embedding, learner=astro, repeats=baseline_repeats, **common),
        dict(X=X, learner=gp, repeats=repeats, **common),
    ]
    baseline, paper = run_simulations(runs, jobs, progress)
    return SearchComparison({PAPER: paper, ASTRONOMALY: baseline})


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
    """Mean (and std over repeats) of ``metrics`` per method at ``n_labels`` labels (default
    the largest) for one ranking; ``no_labels`` (:func:`isolation_forest_metrics`) adds a row."""
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
        row = {m: no_labels[m] for m in metrics}
        table.loc["isolation forest, no labels"] = row | {"n_labels": 0, "repeats": 1}
    return table


def plot_learning_curves(
    results: dict[str, pd.DataFrame],
    metrics: Sequence[str] = ("precision_at_50", "average_precision"),
    ranking_name: str = "labelled_first",
    baselines: dict[str, dict] | None = None,
):
    """One panel per metric: its mean and min-max band over repeats as labels grow, per method
    of ``results``; ``baselines`` ({name: metrics}) as dashed lines. Returns a Figure."""
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
        ax.set(xlabel="labels given", ylabel=metric.replace("_", " "), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_rank_weighted_scores(
    results: dict[str, pd.DataFrame],
    n_labels: int | None = None,
    ranking_name: str = "labelled_first",
):
    """Rank-weighted score against N after ``n_labels`` labels (``rws_at_N`` columns of
    :func:`run_simulation`), the paper's comparison figure."""
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
    ax.set(
        xlabel="N (galaxies looked at, best first)", ylabel="rank-weighted score", ylim=(0, 1.02)
    )
    ax.set_title(f"after {n} labels", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

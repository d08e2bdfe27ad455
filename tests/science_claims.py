"""Every science claim the notebooks' metrics files must support, in one table.

``tests/test_science_claims.py`` asserts each claim on the session's course run, and
``benchmarks/bench_margins.py`` runs the course over several seeds and thread counts and reports,
for the same claims, the mean, the spread and whether ``mean - 2 sd`` still clears the threshold.
A claim is a number computed from one notebook's metrics and the threshold it must reach:
ratios and differences against a baseline measured in the same run are claims of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

NB02, NB03, NB04 = "02_train_on_votes", "03_representations", "04_similarity_search"
NB05, NB06 = "05_find_interesting_anomalies", "06_finetune_rings"


@dataclasses.dataclass(frozen=True)
class Claim:
    """``value(metrics) >= threshold`` (``>`` when ``strict``); skipped without ``needs``."""

    notebook: str
    name: str
    value: Callable[[dict], float]
    threshold: float
    strict: bool = False
    needs: str | None = None  # a metrics key present only when the real data was available

    @property
    def id(self) -> str:
        return f"{self.notebook[:2]}: {self.name}"

    def applies(self, metrics: dict) -> bool:
        return self.needs is None or bool(metrics.get(self.needs))

    def holds(self, value: float) -> bool:
        return value > self.threshold if self.strict else value >= self.threshold

    @property
    def relation(self) -> str:
        return ">" if self.strict else ">="


def _acc(question: str) -> Callable[[dict], float]:
    return lambda m: m["accuracy_confident"][question]


def _share_of_tags_won(baseline: str) -> Callable[[dict], float]:
    def value(m):
        ours, theirs = m["precision_at_10"], m[f"precision_at_10_{baseline}"]
        return float(np.mean([ours[t] > theirs[t] for t in ours]))

    return value


def _gz2_tags(m: dict) -> dict:
    return m["gz2_precision_at_10"]


def _gz2_mean_ratio(baseline: str) -> Callable[[dict], float]:
    def value(m):
        theirs = np.mean(list(m[f"gz2_precision_at_10_{baseline}"].values()))
        return float(m["gz2_mean_precision_at_10"] / max(theirs, 1e-9))

    return value


def _gz2_worst_margin(baseline: str) -> Callable[[dict], float]:
    def value(m):
        theirs = m[f"gz2_precision_at_10_{baseline}"]
        return float(min(p - theirs[t] for t, p in _gz2_tags(m).items()))

    return value


def _gz2_ring_ratio(m: dict) -> float:
    better = max(m["gz2_precision_at_10_random_weights"]["ring"],
                 m["gz2_precision_at_10_raw_pixels"]["ring"])  # fmt: skip
    return float(_gz2_tags(m)["ring"] / max(better, 1e-9))


def _ap_ratio(key: str) -> Callable[[dict], float]:
    return lambda m: float(m["average_precision"] / max(m[key], 1e-9))


def _gz2_ap_ratio(baseline: str) -> Callable[[dict], float]:
    def value(m):
        ap = m["gz2_average_precision"]
        return float(ap["representation"] / max(ap[baseline], 1e-9))

    return value


def _gz2_p50_margin(baseline: str) -> Callable[[dict], float]:
    def value(m):
        p50 = m["gz2_precision_at_50"]
        return float(p50["representation"] - p50[baseline])

    return value


def _ring(method: str, budget: str) -> Callable[[dict], float]:
    return lambda m: m["ring_balanced_accuracy"][method][budget]


def _ring_gain(budget: str) -> Callable[[dict], float]:
    return lambda m: _ring("pretrained_head", budget)(m) - _ring("scratch", budget)(m)


def _gz2_ring_margin(budget: str, baseline: str) -> Callable[[dict], float]:
    def value(m):
        acc = m["gz2_ring_balanced_accuracy"]
        return float(acc["representation"][budget] - acc[baseline][budget])

    return value


CLAIMS: tuple[Claim, ...] = (
    # 02: one network answers every question from the votes (issues 3 and 17)
    Claim(NB02, "confident accuracy, smooth-or-featured", _acc("smooth-or-featured-dr5"), 0.93),
    Claim(NB02, "confident accuracy, edge-on", _acc("disk-edge-on-dr5"), 0.93),
    Claim(NB02, "vote-fraction error below the mean baseline, 8 views", lambda m: m["mae_reduction"], 0.30),
    Claim(NB02, "vote-fraction error below the mean baseline, one view", lambda m: m["mae_reduction_single_view"], 0.30),
    Claim(NB02, "8 views better than one", lambda m: m["mae_reduction"] - m["mae_reduction_single_view"], 0.0, strict=True),
    # 03: the representation groups galaxies of a kind
    Claim(NB03, "PCA-10 keeps half the variance", lambda m: m["explained_variance_10"], 0.5),
    Claim(NB03, "true type from 10 neighbours above the majority share", lambda m: m["truth_type_knn_accuracy"] - m["truth_type_majority_share"], 0.3),
    # 04: similarity search from one tagged galaxy (issues 4 and 14)
    Claim(NB04, "mean precision@10", lambda m: m["mean_precision_at_10"], 0.5),
    Claim(NB04, "mean precision@10 above raw-pixel PCA", lambda m: m["mean_precision_at_10"] - m["mean_precision_at_10_pixel_pca"], 0.0, strict=True),
    Claim(NB04, "mean precision@10 above random weights", lambda m: m["mean_precision_at_10"] - m["mean_precision_at_10_random_weights"], 0.0, strict=True),
    Claim(NB04, "share of tags won against raw-pixel PCA", _share_of_tags_won("pixel_pca"), 0.8),
    Claim(NB04, "share of tags won against random weights", _share_of_tags_won("random_weights"), 0.8),
    Claim(NB04, "every tag above chance", lambda m: min(p - m["chance_at_10"][t] for t, p in m["precision_at_10"].items()), 0.0, strict=True),
    Claim(NB04, "real DECaLS rings above chance", lambda m: m["real_ring_precision_at_10"] - m["real_ring_chance"], 0.0, strict=True, needs="real_ring_precision_at_10"),
    Claim(NB04, "Galaxy Zoo 2 mean / random weights", _gz2_mean_ratio("random_weights"), 1.5, needs="gz2_precision_at_10"),
    Claim(NB04, "Galaxy Zoo 2 mean / raw pixels", _gz2_mean_ratio("raw_pixels"), 1.5, needs="gz2_precision_at_10"),
    Claim(NB04, "Galaxy Zoo 2 worst tag / chance", lambda m: min(p / m["gz2_chance_at_10"][t] for t, p in _gz2_tags(m).items()), 4.0, needs="gz2_precision_at_10"),
    Claim(NB04, "Galaxy Zoo 2 every tag above random weights", _gz2_worst_margin("random_weights"), 0.0, strict=True, needs="gz2_precision_at_10"),
    Claim(NB04, "Galaxy Zoo 2 every tag above raw pixels", _gz2_worst_margin("raw_pixels"), 0.0, strict=True, needs="gz2_precision_at_10"),
    Claim(NB04, "Galaxy Zoo 2 rings / the better baseline", _gz2_ring_ratio, 2.0, needs="gz2_precision_at_10"),
    # 05: anomalies one researcher cares about (issues 5 and 14)
    Claim(NB05, "precision@50 after 200 labels", lambda m: m["precision_at_50"], 0.95),
    Claim(NB05, "average precision / Astronomaly's forest with labels", _ap_ratio("average_precision_isolation_forest"), 3.0),
    Claim(NB05, "average precision / the forest alone", _ap_ratio("average_precision_isolation_forest_no_labels"), 3.0),
    Claim(NB05, "Galaxy Zoo 2 average precision", lambda m: m["gz2_average_precision"]["representation"], 0.40, needs="gz2_average_precision"),
    Claim(NB05, "Galaxy Zoo 2 average precision / random weights", _gz2_ap_ratio("random weights"), 1.4, needs="gz2_average_precision"),
    Claim(NB05, "Galaxy Zoo 2 average precision / raw pixels", _gz2_ap_ratio("raw pixels"), 1.4, needs="gz2_average_precision"),
    Claim(NB05, "Galaxy Zoo 2 precision@50 above random weights", _gz2_p50_margin("random weights"), 0.0, strict=True, needs="gz2_average_precision"),
    Claim(NB05, "Galaxy Zoo 2 precision@50 above raw pixels", _gz2_p50_margin("raw pixels"), 0.0, strict=True, needs="gz2_average_precision"),
    # 06: rings from few labels (issues 6 and 14)
    Claim(NB06, "pretrained head, 30 labels", _ring("pretrained_head", "30"), 0.75),
    Claim(NB06, "pretrained head, 100 labels", _ring("pretrained_head", "100"), 0.75),
    Claim(NB06, "pretrained head - scratch, 30 labels", _ring_gain("30"), 0.15),
    Claim(NB06, "pretrained head - scratch, 100 labels", _ring_gain("100"), 0.15),
    Claim(NB06, "one-call model, 30 labels", lambda m: m["one_call_balanced_accuracy_30"], 0.55, strict=True),
    Claim(NB06, "rings among the top 24 unlabelled disks", lambda m: m["ring_precision_top24"], 0.15, strict=True),
    Claim(NB06, "Galaxy Zoo 2 rings, 30 labels, above random weights", _gz2_ring_margin("30", "random weights"), 0.03, strict=True, needs="gz2_ring_balanced_accuracy"),
    Claim(NB06, "Galaxy Zoo 2 rings, 30 labels, above raw pixels", _gz2_ring_margin("30", "raw pixels"), 0.03, strict=True, needs="gz2_ring_balanced_accuracy"),
    Claim(NB06, "Galaxy Zoo 2 rings, 100 labels, above random weights", _gz2_ring_margin("100", "random weights"), 0.03, strict=True, needs="gz2_ring_balanced_accuracy"),
    Claim(NB06, "Galaxy Zoo 2 rings, 100 labels, above raw pixels", _gz2_ring_margin("100", "raw pixels"), 0.03, strict=True, needs="gz2_ring_balanced_accuracy"),
)  # fmt: skip

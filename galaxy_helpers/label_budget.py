"""The paper's label-budget experiment (Walmsley et al. 2022, fig. 11; notebook 06): balanced
accuracy against the number of labels for a pretrained encoder (new head, or finetuned), other
encoders (head only) and the same architecture from scratch. Runs are cached.

>>> result = label_budget_experiment("course", catalogue, "ring")  # doctest: +SKIP
>>> result.table()                                                 # doctest: +SKIP
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score
from tqdm.auto import tqdm

from . import core
from . import finetuning as ft
from .finetuning import EncoderSource, FinetuneConfig, FinetuneError
from .representations import model_hash
from .training import numerics

__all__ = ["METHODS", "PAPER_RING_ACCURACY", "LabelBudgetResult", "label_budget_experiment"]

#: Methods that need nothing but the checkpoint.
METHODS = ("pretrained_head", "pretrained_full", "scratch")

#: The paper's ring results (balanced test sets; read from its figure 11, +-0.02): unique
#: training rings -> accuracy (also /work/shared/reference/galaxy_zoo_facts.md).
PAPER_RING_ACCURACY = {
    "pretrained on all GZ questions": {13: 0.75, 79: 0.85, 197: 0.855, 6962: 0.88},
    "ImageNet pretrained": {13: 0.55, 79: 0.66, 197: 0.75, 6962: 0.86},
    "from scratch": {13: 0.50, 79: 0.50, 197: 0.52, 6962: 0.87},
}

METHOD_STYLE = {
    "pretrained_head": ("Pretrained on all questions, new head", "tab:blue", "o"),
    "pretrained_full": ("Pretrained on all questions, finetuned", "tab:green", "s"),
    "scratch": ("Same architecture from scratch", "tab:red", "^"),
}


@dataclass
class LabelBudgetResult:
    """Runs of a label-budget experiment: ``runs`` (one row per method, budget and repeat),
    ``test_ids`` (the balanced test set), ``skipped`` (method -> why) and ``description``."""

    runs: pd.DataFrame
    test_ids: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Mean, standard deviation and number of repeats per method and budget."""
        g = self.runs.groupby(["method", "budget"])["balanced_accuracy"]
        return g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "repeats"})

    def table(self) -> pd.DataFrame:
        """Mean balanced accuracy, methods as rows and budgets as columns."""
        return self.summary().pivot(index="method", columns="budget", values="mean").round(3)

    def metrics(self, stat: str = "mean") -> dict[str, dict[str, float]]:
        """``{method: {"30": balanced accuracy, ...}}``, the mean (or ``"std"``) over repeats."""
        out: dict[str, dict[str, float]] = {}
        for row in self.summary().itertuples():
            value = round(float(getattr(row, stat)), 4)
            out.setdefault(row.method, {})[str(int(row.budget))] = value
        return out

    def report(self, name: str) -> dict[str, Any]:
        """The experiment's entries of a notebook's metrics file, ``name`` the positive class
        (``"ring"``: population_rings, ring_balanced_accuracy, ring_balanced_accuracy_std)."""
        d = self.description
        out = {"population_size": d["population_size"]}
        out[f"population_{name}s"] = d["class_counts"][str(d["classes"][-1])]
        out.update({k: d[k] for k in ("test_per_class", "repeats", "budgets")})
        out[f"{name}_balanced_accuracy"] = self.metrics()
        out[f"{name}_balanced_accuracy_std"] = self.metrics("std")
        return out

    def plot(self, ax=None, paper: bool = True, title: str | None = None):
        """The learning curve (mean +- std, log axis) and, with ``paper``, the paper's real-ring
        results (x = 2 x unique training rings) faint, for orientation. Returns the figure."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2)) if ax is None else (ax.figure, ax)
        others = iter(["tab:purple", "tab:orange", "tab:brown", "tab:olive"])
        for method, part in self.summary().groupby("method", sort=False):
            label, colour, marker = METHOD_STYLE.get(method, (method, next(others, "k"), "D"))
            style = {"label": label, "color": colour, "marker": marker, "capsize": 3, "lw": 1.8}
            ax.errorbar(part["budget"], part["mean"], yerr=part["std"].fillna(0), **style)
        if paper:
            colours = ("tab:blue", "tab:purple", "tab:red")
            for (name, points), colour in zip(PAPER_RING_ACCURACY.items(), colours, strict=True):
                shown = {2 * k: v for k, v in points.items() if 2 * k <= 1000}
                style = {"ls": "--", "lw": 1, "alpha": 0.5, "color": colour}
                ax.plot(list(shown), list(shown.values()), label=f"paper (real): {name}", **style)
        ax.axhline(0.5, color="grey", lw=1, ls=":", label="chance")
        ax.set(xscale="log", xlabel="labelled galaxies (half of each class)", ylim=(0.4, 1.0))
        ax.set_ylabel("balanced accuracy (balanced test set)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")  # the curves live below 0.85 and right of 10
        if title:
            ax.set_title(title)
        fig.tight_layout()
        return fig


def _class_orders(y: np.ndarray, rng: np.random.Generator, among: np.ndarray | None = None) -> dict:
    """Each class's members (indices into ``y``, only those in ``among``) in a random order."""
    among = np.arange(len(y)) if among is None else among
    return {c: rng.permutation(among[y[among] == c]) for c in np.unique(y)}


def _balanced_test(y: np.ndarray, per_class: int, rng: np.random.Generator):
    """Indices (test, pool): ``per_class`` galaxies of each class in the test set."""
    orders = _class_orders(y, rng)
    test = np.sort(np.concatenate([o[:per_class] for o in orders.values()]).astype(np.int64))
    return test, np.setdiff1d(np.arange(len(y)), test)


def _training_sets(y, pool, budgets: Sequence[int], repeat: int, seed: int) -> dict:
    """Balanced training sets, nested across budgets within a repeat (a learning curve)."""
    orders = _class_orders(y, np.random.default_rng([seed, 7919, repeat]), pool)
    return {b: np.concatenate([o[: b // len(orders)] for o in orders.values()]) for b in budgets}


def _method_configs(base: FinetuneConfig, full, scratch) -> dict[str, FinetuneConfig]:
    # one rate, no layer decay; random BatchNorm statistics must be learned
    fresh = dict(encoder_lr=1e-3, full_head_lr=1e-3, layer_decay=1.0, freeze_batchnorm=False)
    scratch = scratch or base.replace(mode="full", linear_probe_first=False, **fresh)
    return {
        "pretrained_head": base.replace(mode="head", progress=False),
        "pretrained_full": (full or base).replace(mode="full", progress=False),
        "scratch": scratch.replace(mode="full", linear_probe_first=False, progress=False),
    }


def population_key(population) -> str:
    """A name of the population for cache keys."""
    if population is None or isinstance(population, str):
        return population or "all"
    if callable(population):
        return getattr(population, "__name__", "callable")
    return core.content_key(np.asarray(population, dtype=bool))


def label_budget_experiment(
    checkpoint,
    catalogue: pd.DataFrame,
    label_column: str,
    budgets: Sequence[int] = (10, 30, 100),
    repeats: int = 3,
    methods: Sequence[str] = METHODS,
    test_per_class: int = 50,
    population=None,
    config: FinetuneConfig | None = None,
    full_config: FinetuneConfig | None = None,
    scratch_config: FinetuneConfig | None = None,
    other_encoders: Mapping[str, Any] | None = None,
    seed: int = 0,
    cache: bool = True,
    progress: bool = True,
    allow_downloads: bool = False,
) -> LabelBudgetResult:
    """Balanced accuracy against the number of labels, as in the paper's ring figure.

    A balanced test set is drawn once; each repeat draws balanced training sets, nested across
    budgets, from the rest (a budget counts every labelled galaxy, validation included).

    Parameters
    ----------
    checkpoint : the pretrained encoder (see ``finetuning.load_encoder``).
    catalogue, label_column : ``id_str``, ``file_loc`` and the label (e.g. ``"ring"``).
    budgets, repeats : labelled galaxies (half of each class) and random draws per budget.
    methods : any of :data:`METHODS` plus the names of ``other_encoders``.
    test_per_class : test galaxies per class.
    population : who takes part (``finetuning.population_mask``), e.g. a query string.
    config, full_config, scratch_config : the base ``FinetuneConfig`` and those methods'.
    other_encoders : ``{method: source}``, head only; those that cannot load are ``skipped``.
    seed : seed of the test split and the draws.
    cache : reuse runs cached by weights, data, population, configuration, budget and repeat.
    progress, allow_downloads : progress bar; let ``other_encoders`` download weights.

    Returns
    -------
    LabelBudgetResult
    """
    cfg = config or FinetuneConfig()
    other_encoders = dict(other_encoders or {})
    unknown = [m for m in methods if m not in METHODS and m not in other_encoders]
    if unknown:
        raise FinetuneError(
            f"unknown method(s) {unknown}; use {list(METHODS)} or name them in other_encoders"
        )
    rows = ft.labelled_rows(
        catalogue[ft.population_mask(catalogue, population)], label_column, task="classification"
    )
    y, classes = ft._encode_classes(rows[label_column])
    n_classes = len(classes)
    counts = np.bincount(y, minlength=n_classes)
    test, pool = _balanced_test(y, test_per_class, np.random.default_rng(seed))
    if counts.min() < test_per_class:
        raise FinetuneError(
            f"class {classes[int(counts.argmin())]!r} has {counts.min()} galaxies in the "
            f"population, fewer than test_per_class={test_per_class}; lower test_per_class or "
            "use a bigger catalogue"
        )
    pool_counts = np.bincount(y[pool], minlength=n_classes)
    usable = sorted(b for b in budgets if b // n_classes <= pool_counts.min())
    if not usable:
        raise FinetuneError(
            f"no budget fits: after the test set the smallest class has {pool_counts.min()} "
            f"galaxies left, budgets {list(budgets)} need {min(budgets) // n_classes} per class"
        )

    t_load = time.perf_counter()
    src = ft.load_encoder(checkpoint, cfg)
    sources, skipped = {"pretrained_head": src}, {}
    other_cfg = cfg.replace(image_size=src.image_size, mean=None, std=None)
    for name in (m for m in methods if m not in METHODS):
        try:
            sources[name] = ft.load_encoder(other_encoders[name], other_cfg, not allow_downloads)
        except FinetuneError as err:
            skipped[name] = str(err)
    device = core.device(cfg.device)
    feats = {n: _table_features(s, catalogue, rows, progress, device) for n, s in sources.items()}
    images = src.read(rows, progress=progress) if {*methods} & {*METHODS[1:]} else None
    load_s = time.perf_counter() - t_load

    data = [rows[c].astype(str).tolist() for c in ("id_str", "file_loc", label_column)]
    enc_keys = {name: model_hash(s.model, s.metadata) for name, s in sources.items()}
    configs = _method_configs(cfg, full_config, scratch_config)
    test_list = rows["id_str"].iloc[test].tolist()
    data += [seed, test_per_class, test_list, population_key(population)]
    # the code and numerics that make a run: an edited trainer or another torch recomputes
    data += [core.source_key(__name__), numerics(device)]
    jobs = [(r, b, m) for r in range(repeats) for b in usable for m in methods if m not in skipped]
    jobs = tqdm(jobs, desc="Label-budget runs", unit="run", disable=not progress)
    records, sets = [], {}
    for repeat, budget, method in jobs:
        if repeat not in sets:
            sets = {repeat: _training_sets(y, pool, usable, repeat, seed)}
        train_idx = sets[repeat][budget]
        mcfg = configs.get(method, configs["pretrained_head"]).replace(seed=seed * 1000 + repeat)
        enc = enc_keys.get(method, enc_keys["pretrained_head"])
        key = core.content_key("v3", method, enc, mcfg.to_dict(), budget, repeat, *data, length=20)
        path = core.cache_dir("finetuning", "label_budget") / f"{key}.json"
        rec = _cached_run(path) if cache else None
        if rec is None:
            t0 = time.perf_counter()
            if method in feats:
                scores = _run_head(feats[method], y, train_idx, test, n_classes, mcfg, pool)
            else:
                scores = _run_full(
                    src, feats["pretrained_head"], images, y, train_idx, test, classes, mcfg,
                    pretrained=method == "pretrained_full",
                )  # fmt: skip
            rec = {"method": method, "budget": int(budget), "repeat": int(repeat), **scores}
            rec.update(n_train=len(train_idx), n_test=len(test))
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            if cache:
                core.write_json(path, rec)
            rec["cached"] = False
        records.append(rec)
    description = dict(label_column=label_column, classes=classes, population_size=len(rows))
    description["class_counts"] = {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
    description.update(test_per_class=int(test_per_class), budgets=[int(b) for b in usable])
    description["budgets_dropped"] = sorted(int(b) for b in set(budgets) - set(usable))
    description.update(repeats=int(repeats), encoder=src.description, architecture=src.architecture)
    description.update(image_size=src.image_size, load_and_encode_seconds=round(load_s, 2))
    runs = pd.DataFrame.from_records(records)
    return LabelBudgetResult(runs, test_list, skipped, description)


def _table_features(src: EncoderSource, catalogue, rows, progress, device) -> np.ndarray:
    """The rows' features from the whole catalogue's representation table."""
    src.model.to(device)
    whole = catalogue if catalogue["id_str"].is_unique else rows
    return src.features(whole, progress=progress, ids=rows["id_str"].astype(str))


def _cached_run(path) -> dict | None:
    try:
        return {**core.read_json(path, what="cached label-budget run"), "cached": True}
    except (FileNotFoundError, ValueError):  # absent or truncated: recomputed
        return None


def _scores(y_true, pred) -> dict:
    balanced, accuracy = balanced_accuracy_score(y_true, pred), (pred == y_true).mean()
    return {"balanced_accuracy": float(balanced), "accuracy": float(accuracy)}


def _run_head(feats, y, train_idx, test, n_classes, cfg, pool) -> dict:
    # standardised on the unlabelled pool (every galaxy outside the test set), as an astronomer
    # would with a catalogue's representation table: 30 rows give noisy means and spreads
    head, info = ft.fit_head(feats[train_idx], y[train_idx], n_classes, cfg, reference=feats[pool])
    with torch.no_grad():
        pred = head(torch.as_tensor(feats[test], dtype=torch.float32)).argmax(1).numpy()
    return {**_scores(y[test], pred), "steps": info.get("steps")}


def _run_full(src, feats, images, y, train_idx, test, classes, cfg, pretrained) -> dict:
    import timm

    ytr = y[train_idx]
    tr, va = ft._stratified_split(ytr, cfg.val_fraction, np.random.default_rng(cfg.seed), True)
    if pretrained:
        encoder, description = copy.deepcopy(src.encoder), src.description
    else:  # the scratch config never starts from a linear probe
        torch.manual_seed(cfg.seed)
        arch = ft._arch(src.architecture)
        encoder = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=src.channels)
        description = f"randomly initialised {src.architecture}"
    head = ft._start_head(feats[train_idx], ytr, tr, va, len(classes), cfg)
    meta = {"task": "classification", "classes": classes, "label_column": "?"}
    model = ft._new_model(src, {**meta, "encoder_source": description}, head, encoder)
    imgs = images[train_idx]
    info = ft.train_full(model, imgs[tr], ytr[tr], imgs[va], ytr[va], cfg)
    pred = model.predict_images(images[test], batch_size=256).argmax(axis=1)
    return {**_scores(y[test], pred), "epochs": info["epochs"], "best_epoch": info["best_epoch"]}

"""Finetune a pretrained encoder to a new task with few labels (notebook 06; paper section 5).

``"head"`` fits an L2 logistic (ridge) regression on the frozen encoder's standardised, clipped
features; ``"full"`` starts from that head and trains everything (model: ``finetuned``).

>>> model = finetune("course", catalogue, "ring")  # doctest: +SKIP
>>> model.predict(new_catalogue)  # id_str, probability_<class>..., prediction  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import core, models
from .checkpoints import NAMED_CHECKPOINTS, load_model
from .finetuned import (
    EncoderSource,
    FinetuneConfig,
    FinetunedModel,
    FinetuneError,
    Head,
    _Best,
    _class_weights,
    _head_loss,
    is_finetuned,
    require_columns,
    train_full,
)

__all__ = ["FinetuneError", "FinetuneConfig", "EncoderSource", "FinetunedModel", "Head"]
__all__ += ["load_encoder", "finetune", "labelled_rows", "population_mask", "balanced_sample"]
__all__ += ["choose_l2", "fit_head", "train_full"]


def load_encoder(
    source, config: FinetuneConfig | None = None, offline: bool = False
) -> EncoderSource:
    """The encoder to finetune.

    Parameters
    ----------
    source : what ``checkpoints.load_model`` takes, an EncoderSource or a FinetunedModel.
    config : preprocessing overrides, ``pretrained`` and the expected ``architecture``.
    offline : never touch the network (hub and ImageNet weights must be on disk).

    Returns
    -------
    EncoderSource
    """
    cfg = config or FinetuneConfig()
    keys = ("image_size", "channels", "mean", "std")
    overrides = {k: getattr(cfg, k) for k in keys if getattr(cfg, k)}
    if isinstance(source, EncoderSource):
        source = (source.model, source.metadata)
    elif isinstance(source, str | os.PathLike) and is_finetuned(source):
        source = FinetunedModel.load(source)
    if isinstance(source, FinetunedModel):
        meta = {**source.metadata, "description": source.metadata.get("encoder_source", "")}
        source = (source, meta)
    hub = isinstance(source, str) and source.startswith(("hf_hub:", "zoobot:"))
    try:
        opts = dict(offline=offline, channels=cfg.channels, pretrained=cfg.pretrained)
        model, meta = load_model(source, metadata=overrides, progress=cfg.progress, **opts)
    except (models.CheckpointError, TypeError, OSError, ImportError, RuntimeError) as err:
        if hub or (isinstance(source, str | os.PathLike) and Path(source).is_dir()):
            raise FinetuneError(
                f"cannot load the pretrained encoder {str(source).removeprefix('zoobot:')!r} "
                f"({type(err).__name__}: {err}). Hub encoders need the network once (then they "
                "are cached); offline, pass a local folder in the hub's layout (config.json + "
                "model.safetensors)."
            ) from err
        if isinstance(err, FileNotFoundError):
            raise
        raise FinetuneError(str(err)) from err
    if not hasattr(model, "encoder"):
        raise FinetuneError(f"{meta['description']}: the model has no .encoder to finetune")
    meta["image_size"] = meta.get("image_size") or 64
    if isinstance(source, str) and source in NAMED_CHECKPOINTS:
        meta["description"] = f"{source} checkpoint"  # what notebook 06's metrics record
    if cfg.architecture is not None and _arch(meta["architecture"]) != _arch(cfg.architecture):
        raise FinetuneError(
            f"{meta['description']} is a {meta['architecture']!r} encoder, but architecture="
            f"{cfg.architecture!r} was asked for. Use a checkpoint of that architecture, or "
            "drop architecture= to finetune the checkpoint's own."
        )
    return EncoderSource(model, meta)


def _arch(name: str) -> str:  # "convnext_atto.d2_in1k" is a "convnext_atto"
    return str(name).removeprefix("timm:").split(".")[0]


def labelled_rows(
    catalogue: pd.DataFrame,
    label_column: str,
    labels: pd.DataFrame | pd.Series | Mapping | None = None,
    task: str = "classification",
    classes: Sequence | None = None,
) -> pd.DataFrame:
    """The labelled galaxies of a catalogue (index reset), checked.

    Parameters
    ----------
    catalogue : ``id_str``, ``file_loc`` and ``label_column`` (missing label: unlabelled).
    labels : labels kept apart: DataFrame (``id_str``, ``label_column``), Series or dict by id.
    task : ``"classification"`` (two classes or more) or ``"regression"`` (finite numbers).
    classes : the stated classes; ``None``: inferred, refusing values that look stray.
    """
    require_columns(catalogue)
    if len(catalogue) == 0:
        raise FinetuneError("the catalogue is empty: it has no galaxies to finetune on")
    cat = catalogue.copy()
    cat["id_str"] = cat["id_str"].astype(str)
    dup_ids = cat["id_str"][cat["id_str"].duplicated()].unique()
    if len(dup_ids):
        raise FinetuneError(
            f"the catalogue gives {len(dup_ids)} id_str value(s) more than once, e.g. "
            f"{list(dup_ids[:5])}: a galaxy twice can land in training and validation at once. "
            "Keep one row per galaxy (catalogue.drop_duplicates('id_str'))."
        )
    if labels is not None:
        if not isinstance(labels, pd.DataFrame):
            labels = pd.Series(labels).rename_axis("id_str").rename(label_column).reset_index()
        if "id_str" not in labels.columns or label_column not in labels.columns:
            raise FinetuneError(
                f"labels must have columns 'id_str' and {label_column!r}; got {list(labels.columns)}"
            )
        lab = labels[["id_str", label_column]].astype({"id_str": str})
        dup = lab["id_str"][lab["id_str"].duplicated()].unique()
        if len(dup):
            raise FinetuneError(f"labels give {len(dup)} id(s) twice, e.g. {list(dup[:5])}")
        missing = sorted(set(lab["id_str"]) - set(cat["id_str"]))
        if missing:
            raise FinetuneError(
                f"{len(missing)} labelled id(s) are not in the catalogue, e.g. {missing[:5]}. "
                "Check the id_str spelling, or add those galaxies (with file_loc) to the catalogue."
            )
        cat = cat.drop(columns=[label_column], errors="ignore").merge(lab, on="id_str", how="left")
    elif label_column not in cat.columns:
        raise FinetuneError(
            f"the catalogue has no label column {label_column!r}; columns include "
            f"{[c for c in cat.columns if not c.startswith(('truth_',))][:12]}. Pass labels= "
            "(id_str -> label) or name an existing column."
        )
    out = cat[cat[label_column].notna()].reset_index(drop=True)
    if out.empty:
        raise FinetuneError(f"no galaxy has a label in column {label_column!r}")
    if task == "classification":
        _check_classes(out, label_column, classes)
        found = pd.unique(out[label_column])
        if len(found) < 2:
            raise FinetuneError(
                f"label column {label_column!r} has one class only ({found[0]!r}, "
                f"{len(out)} galaxies): a classifier needs examples of at least two classes. "
                "Add galaxies of the other class (e.g. non-rings as well as rings)."
            )
        return out
    try:
        out[label_column] = out[label_column].astype(float)
    except (TypeError, ValueError) as err:
        raise FinetuneError(f"regression needs numeric labels in {label_column!r} ({err})") from err
    bad = np.flatnonzero(~np.isfinite(out[label_column].to_numpy()))
    if len(bad):
        raise FinetuneError(
            f"{len(bad)} regression label(s) in {label_column!r} are infinite, e.g. "
            f"{_where(out, bad, label_column)}: fix them, or set them to NaN (unlabelled)."
        )
    return out


def _where(rows: pd.DataFrame, positions, column: str) -> str:
    return "; ".join(
        f"id_str {rows['id_str'].iloc[i]!r} = {rows[column].iloc[i]!r}" for i in positions[:5]
    )


_MISSING_WORDS = {"", "nan", "none", "null", "na", "n/a", "-"}


def _check_classes(rows: pd.DataFrame, column: str, classes: Sequence | None) -> None:
    """Refuse labels outside the stated classes, or that look stray when none are stated."""
    values = rows[column]
    if classes is not None:
        stray = np.flatnonzero(~values.isin(list(classes)).to_numpy())
        if len(stray):
            raise FinetuneError(
                f"{len(stray)} label(s) in {column!r} are not one of the stated classes "
                f"{list(classes)}: {_where(rows, stray, column)}. Fix them, set them to NaN "
                "(unlabelled), or state the classes they belong to."
            )
        return
    hint = "Fix the value, set it to NaN (unlabelled), or pass classes=[...] to state the classes "
    hint += "(then every other value is an error)."
    text = values.map(lambda v: isinstance(v, str)).to_numpy()
    if text.any() and not text.all():
        odd = np.flatnonzero(text if text.sum() < len(text) / 2 else ~text)
        raise FinetuneError(
            f'label column {column!r} mixes text and numbers ("1" and 1 would be two classes): '
            f"{_where(rows, odd, column)}. {hint}"
        )
    if text.any():
        missing = np.flatnonzero(values.str.strip().str.lower().isin(_MISSING_WORDS).to_numpy())
        if len(missing):
            raise FinetuneError(
                f"label column {column!r} holds text that reads as a missing value: "
                f"{_where(rows, missing, column)}. {hint}"
            )
        return
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    fractional = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)))
    if len(fractional):
        raise FinetuneError(
            f"label column {column!r} holds values that are not class labels: "
            f"{_where(rows, fractional, column)}. For a numeric target use task='regression'. "
            + hint
        )
    counts = values.value_counts()
    lonely = counts[counts == 1].index.tolist()
    if len(values) >= 10 and lonely and len(counts) > 2 and counts.max() >= 5:
        raise FinetuneError(
            f"label column {column!r}: class(es) {lonely} hold a single galaxy among "
            f"{len(values)}, which looks like a stray value: "
            f"{_where(rows, np.flatnonzero(values.isin(lonely).to_numpy()), column)}. " + hint
        )


def population_mask(catalogue: pd.DataFrame, population) -> np.ndarray:
    """Which galaxies take part: ``None`` (all), a mask, ``catalogue -> mask`` or a query."""
    if population is None:
        return np.ones(len(catalogue), dtype=bool)
    if isinstance(population, str):
        try:
            return np.asarray(catalogue.eval(population), dtype=bool)
        except Exception as err:
            raise FinetuneError(
                f"population query {population!r} failed ({err}); write it like "
                "\"truth_type in ['featured']\" or \"truth_type == 'featured'\""
            ) from err
    mask = np.asarray(population(catalogue) if callable(population) else population, dtype=bool)
    if mask.shape != (len(catalogue),):
        raise FinetuneError(
            f"population mask has shape {mask.shape}, the catalogue {len(catalogue)} rows"
        )
    return mask


def balanced_sample(
    catalogue: pd.DataFrame,
    label_column: str,
    n: int,
    population=None,
    seed: int = 0,
    exclude_ids: Sequence[str] = (),
) -> pd.DataFrame:
    """``n`` labelled galaxies, ``n // n_classes`` of each class, shuffled (index kept), drawn
    from ``population`` (:func:`population_mask`) and never from ``exclude_ids``."""
    mask = population_mask(catalogue, population) & catalogue[label_column].notna().to_numpy()
    mask &= ~catalogue["id_str"].astype(str).isin(set(map(str, exclude_ids))).to_numpy()
    pool = catalogue[mask]
    classes = sorted(pd.unique(pool[label_column]).tolist(), key=str)
    if len(classes) < 2:
        raise FinetuneError(f"{label_column!r} has fewer than two classes among these galaxies")
    per = n // len(classes)
    rng = np.random.default_rng(seed)
    parts = []
    for c in classes:
        members = pool[pool[label_column] == c]
        if len(members) < per:
            raise FinetuneError(
                f"only {len(members)} galaxies have {label_column} == {c!r}; {per} were asked for"
            )
        parts.append(members.iloc[rng.choice(len(members), per, replace=False)])
    out = pd.concat(parts)
    return out.iloc[rng.permutation(len(out))]


def _encode_classes(values: pd.Series, stated: Sequence | None = None) -> tuple[np.ndarray, list]:
    order = lambda v: (str(type(v)), v)  # noqa: E731
    classes = list(stated) if stated is not None else sorted(pd.unique(values).tolist(), key=order)
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[v] for v in values], dtype=np.int64)
    return y, [c.item() if isinstance(c, np.generic) else c for c in classes]


def _stratified_split(
    y: np.ndarray, val_fraction: float, rng: np.random.Generator, classification: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val); unlike ``train_test_split``, each class of >= 2 gets a val galaxy."""
    n = len(y)
    if val_fraction <= 0 or n < 3:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    if not classification:
        perm = rng.permutation(n)
        n_val = max(1, int(round(val_fraction * n)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    train, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(1, int(round(val_fraction * len(idx)))), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def _reference_stats(reference) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, variance) per feature of reference features (None: no reference; a tuple is
    taken as already computed, so callers reduce a large reference once)."""
    if reference is None or isinstance(reference, tuple):
        return reference
    _check_finite(reference)
    ref = np.asarray(reference, dtype=np.float64)
    return ref.mean(axis=0), ref.var(axis=0)


class _ClippedScaler(StandardScaler):
    """``StandardScaler`` as :class:`Head` does it: clipped to +- ``clip``. Given ``stats``
    (mean, variance) of reference features (e.g. every unlabelled galaxy of the population),
    ``fit`` takes them instead of the few labelled rows' statistics."""

    def __init__(self, clip: float | None = None, stats=None):
        super().__init__()
        self.clip = clip
        self.stats = stats

    def fit(self, X, y=None, sample_weight=None):
        if self.stats is None:
            return super().fit(X, y, sample_weight)
        self.mean_, self.var_ = self.stats
        self.scale_, self.n_features_in_ = self.spread(), len(self.mean_)
        return self

    def transform(self, X):
        z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.spread()
        return z if self.clip is None else np.clip(z, -self.clip, self.clip)

    def spread(self) -> np.ndarray:
        return np.maximum(np.sqrt(self.var_), 1e-6)


def _head_pipeline(cfg: FinetuneConfig, l2: float, reference=None):
    """Clipped standardisation (on ``reference``'s statistics when given) + L2 logistic (ridge)
    regression, ``C = 1 / l2``."""
    if cfg.task == "regression":  # the mean squared error carries no 1/2: alpha = l2 / 2
        fit = Ridge(alpha=l2 / 2)
    else:
        weights = None if cfg.balance == "none" else "balanced"
        fit = LogisticRegression(C=1 / l2, class_weight=weights, tol=1e-8, max_iter=1000)
    return make_pipeline(_ClippedScaler(cfg.feature_clip, _reference_stats(reference)), fit)


def _new_head(mean, scale, weight, bias, clip) -> Head:
    weight = np.atleast_2d(weight)
    head = Head(weight.shape[1], weight.shape[0], clip)
    values = {"feature_mean": mean, "feature_scale": scale, "linear.weight": weight}
    values["linear.bias"] = np.atleast_1d(bias)
    head.load_state_dict({k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in values.items()})
    return head


def _fit_head_lbfgs(
    X: np.ndarray, y: np.ndarray, n_out: int, cfg: FinetuneConfig, reference=None
) -> Head:
    pipe = _head_pipeline(cfg, cfg.head_l2, reference).fit(np.asarray(X, dtype=np.float64), y)
    scaler, w, b = pipe[0], pipe[-1].coef_, pipe[-1].intercept_
    if n_out == 2:  # a binary logistic w as two softmax logits: sigmoid(z) = softmax(-z/2, z/2)
        w, b = np.concatenate([-w, w]) / 2, np.concatenate([-b, b]) / 2
    return _new_head(scaler.mean_, scaler.spread(), w, b, cfg.feature_clip)


def choose_l2(
    X: np.ndarray, y: np.ndarray, n_out: int, cfg: FinetuneConfig, reference=None
) -> tuple[float, dict]:
    """Pick the head's L2 penalty from ``cfg.head_l2_grid`` by stratified cross-validation
    (balanced accuracy over ``min(5, smallest class)`` folds; regression: mean squared error),
    ties to the stronger penalty; ``reference`` as :func:`fit_head`'s. Returns ``(l2,
    {candidate: mean score})``."""
    grid = sorted(float(v) for v in cfg.head_l2_grid)
    if len(grid) == 1:
        return grid[0], {}
    if cfg.task == "classification":
        k = int(np.bincount(y)[np.unique(y)].min().clip(max=5))
        folds = StratifiedKFold(k, shuffle=True, random_state=cfg.seed) if k >= 2 else None
        scoring = "balanced_accuracy"
    else:
        folds = KFold(min(5, len(y)), shuffle=True, random_state=cfg.seed) if len(y) >= 4 else None
        scoring = "neg_mean_squared_error"
    if folds is None:
        return grid[-1], {}
    X, reference = np.asarray(X, dtype=np.float64), _reference_stats(reference)
    scores = {
        l2: float(
            cross_val_score(
                _head_pipeline(cfg, l2, reference), X, y, cv=folds, scoring=scoring
            ).mean()
        )
        for l2 in grid
    }
    best = max(scores.values())
    return max(l2 for l2, v in scores.items() if v >= best - 1e-9), scores


def _fit_head_steps(
    X, y, n_out: int, cfg: FinetuneConfig, steps: int, X_val=None, y_val=None, reference=None
) -> tuple[Head, int, list[float]]:
    """Full-batch Adam with an L2 penalty; early stopping on a validation set, if given."""
    torch.manual_seed(cfg.seed)
    _check_finite(X)
    weighted = cfg.task == "classification" and cfg.balance != "none"
    target = torch.long if cfg.task == "classification" else torch.float32
    Xt, yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y, dtype=target)
    scaler = _ClippedScaler(stats=_reference_stats(reference))
    scaler.fit(np.asarray(X, dtype=np.float64))
    zeros = np.zeros((n_out, X.shape[1]))
    head = _new_head(scaler.mean_, scaler.spread(), zeros, zeros[:, 0], cfg.feature_clip)
    weights = _class_weights(y, n_out) if weighted else None
    opt = torch.optim.Adam(head.parameters(), lr=cfg.head_lr)
    best, history = None, []
    if X_val is not None and len(X_val):  # the untrained head (equal probabilities) counts too
        Xv, yv = torch.as_tensor(X_val, dtype=torch.float32), torch.as_tensor(y_val, dtype=target)
        wv = _class_weights(y_val, n_out) if weighted else None
        with torch.no_grad():
            best = _Best(head, float(_head_loss(cfg.task, head(Xv), yv, wv)))
    for step in range(1, steps + 1):
        opt.zero_grad()
        out = head(Xt)
        loss = _head_loss(cfg.task, out, yt, weights)
        if not torch.isfinite(loss):
            rows = torch.nonzero(~torch.isfinite(out.reshape(len(out), -1)).all(dim=1)).flatten()
            raise FinetuneError(
                f"the head's training loss became {float(loss)} at step {step} (labelled rows "
                f"with non-finite outputs: {rows[:10].tolist() or 'none'}): lower head_lr "
                f"({cfg.head_lr}) or raise head_l2."
            )
        loss = loss + 0.5 * (cfg.head_l2 or 1.0) / len(Xt) * head.linear.weight.pow(2).sum()
        loss.backward()
        opt.step()
        if best is None:
            continue
        with torch.no_grad():
            history.append(float(_head_loss(cfg.task, head(Xv), yv, wv)))
        if best.update(history[-1], step, head) >= cfg.head_patience:
            break
    if best is None:
        return head, steps, history
    head.load_state_dict(best.state)
    return head, best.step, history


def _check_finite(X) -> None:
    broken = np.flatnonzero(~np.isfinite(np.asarray(X, dtype=np.float64)).all(axis=1))
    if len(broken):
        raise FinetuneError(
            f"labelled rows {broken[:10].tolist()} have NaN or infinite features, so the head "
            "cannot be trained: check those galaxies' images (or their representation table)."
        )


def _lbfgs_config(X: np.ndarray, y: np.ndarray, n_out: int, cfg: FinetuneConfig, reference=None):
    _check_finite(X)
    if cfg.head_l2 is not None:
        return cfg
    return cfg.replace(head_l2=choose_l2(X, y, n_out, cfg, reference)[0])


def _start_head(feats, y, tr, va, n_out: int, cfg: FinetuneConfig, reference=None) -> Head:
    """The head full finetuning starts from: the training split's linear probe, or new
    (``reference`` as :func:`fit_head`'s)."""
    if not cfg.linear_probe_first:
        torch.manual_seed(cfg.seed)
        return Head(feats.shape[1], n_out, cfg.feature_clip)
    X, y_tr, reference = feats[tr], y[tr], _reference_stats(reference)
    if cfg.head_solver == "lbfgs":
        cfg = _lbfgs_config(X, y_tr, n_out, cfg, reference)
        return _fit_head_lbfgs(X, y_tr, n_out, cfg, reference)
    steps = cfg.head_max_steps
    return _fit_head_steps(X, y_tr, n_out, cfg, steps, feats[va], y[va], reference)[0]


def fit_head(
    X: np.ndarray,
    y: np.ndarray,
    n_out: int,
    cfg: FinetuneConfig,
    rng: np.random.Generator | None = None,
    reference: np.ndarray | None = None,
) -> tuple[Head, dict]:
    """Fit a head on features ``X`` (L-BFGS linear probe, or Adam with early stopping).

    ``y`` holds class indices (regression: standardised numbers), ``n_out`` the number of
    classes (1 for regression), ``rng`` draws the validation split. ``reference``: features of
    unlabelled galaxies (e.g. the whole population) whose mean and spread standardise the
    features, steadier than those of a few labelled rows; default ``X``'s. Returns ``(head,
    info)``, info with ``n_train``, ``n_val``, ``val_loss`` and ``head_l2`` or ``steps``.
    """
    rng = rng or np.random.default_rng(cfg.seed)
    tr, va = _stratified_split(y, cfg.val_fraction, rng, cfg.task == "classification")
    reference = _reference_stats(reference)  # once, not in every fold and refit
    if cfg.head_solver == "adam":
        steps = cfg.head_max_steps
        head, steps, hist = _fit_head_steps(
            X[tr], y[tr], n_out, cfg, steps, X[va], y[va], reference
        )
        info = {"steps": int(steps), "n_train": int(len(tr)), "n_val": int(len(va))}
        info["val_loss"] = float(min(hist)) if hist else None
    else:
        cfg = _lbfgs_config(X, y, n_out, cfg, reference)
        head = _fit_head_lbfgs(X[tr], y[tr], n_out, cfg, reference)
        info = {"solver": "lbfgs", "head_l2": cfg.head_l2, "n_train": len(tr), "n_val": len(va)}
        if len(va):
            with torch.no_grad():
                out = head(torch.as_tensor(X[va], dtype=torch.float32))
                w = _class_weights(y[va], n_out) if cfg.task == "classification" else None
                info["val_loss"] = float(_head_loss(cfg.task, out, torch.as_tensor(y[va]), w))
    if cfg.refit and len(va):
        if cfg.head_solver == "adam":
            head = _fit_head_steps(X, y, n_out, cfg, steps, reference=reference)[0]
        else:
            head = _fit_head_lbfgs(X, y, n_out, cfg, reference)
        info["refit_on"] = int(len(y))
    return head, info


def _new_model(src: EncoderSource, meta: dict, head: Head, encoder=None) -> FinetunedModel:
    encoder = encoder or src.encoder
    base = {"architecture": src.architecture, "image_size": int(src.image_size)}
    base.update(channels=int(src.channels), mean=src.mean, std=src.std)
    base.update(encoder_source=src.description, representation_dim=models.pooled_dim(encoder))
    optional = {"greyscale": src.greyscale != "mean" and src.greyscale, "framing": src.framing}
    base.update({k: v for k, v in optional.items() if v})
    return FinetunedModel(encoder, head, {**base, **meta})


def finetune(
    checkpoint,
    catalogue: pd.DataFrame,
    label_column: str,
    mode: str | None = None,
    task: str | None = None,
    *,
    labels: pd.DataFrame | pd.Series | Mapping | None = None,
    config: FinetuneConfig | None = None,
    images: np.ndarray | None = None,
    classes: Sequence | None = None,
    unlabelled: pd.DataFrame | None = None,
    **overrides,
) -> FinetunedModel:
    """Finetune a pretrained encoder to predict ``label_column`` in one call.

    Parameters
    ----------
    checkpoint : the encoder (see :func:`load_encoder`), e.g. ``"course"``.
    catalogue : ``id_str``, ``file_loc`` and the label (unless ``labels`` is given).
    label_column : the label to learn (e.g. ``"ring"``).
    mode, task : default ``config.mode`` / ``config.task``.
    labels, classes : labels kept apart and the stated classes (see :func:`labelled_rows`).
    config : :class:`FinetuneConfig`; keyword ``overrides`` change single fields.
    images : optional uint8 images of the labelled rows (saves reading the files).
    unlabelled : optional catalogue (``id_str``, ``file_loc``) of galaxies, labels not needed,
        whose representation's mean and spread standardise the head's features instead of the
        few labelled rows': e.g. every galaxy of the population you label from (keep your test
        galaxies out). Steadier with a few dozen labels (DEVELOPERS.md, "Science margins").

    Returns
    -------
    FinetunedModel, with ``metadata["metrics"]`` (validation loss, numbers of galaxies).
    """
    cfg = (config or FinetuneConfig()).replace(**overrides)
    cfg = cfg.replace(mode=mode or cfg.mode, task=task or cfg.task)
    t0 = time.perf_counter()
    rows = labelled_rows(catalogue, label_column, labels, task=cfg.task, classes=classes)
    src = load_encoder(checkpoint, cfg)
    if cfg.mode == "full":
        src = EncoderSource(copy.deepcopy(src.model), src.metadata)
    if cfg.task == "classification":
        y, classes = _encode_classes(rows[label_column], classes)
        n_out, target_mean, target_std = len(classes), 0.0, 1.0
    else:
        values = rows[label_column].to_numpy(dtype=float)
        target_mean, target_std = float(values.mean()), float(values.std()) or 1.0
        y = ((values - target_mean) / target_std).astype(np.float32)
        classes, n_out = [], 1
    if images is not None and len(images) != len(rows):
        raise FinetuneError(
            f"images has {len(images)} entries but {len(rows)} galaxies are labelled in "
            f"{label_column!r}; pass images aligned with the labelled rows or leave it out"
        )
    if cfg.mode == "full" and images is None:
        images = src.read(rows, progress=cfg.progress)
    src.model.to(core.device(cfg.device))
    feats = src.features(rows, images, progress=cfg.progress)
    reference = None if unlabelled is None else src.features(unlabelled, progress=cfg.progress)
    meta = dict(task=cfg.task, label_column=label_column, classes=classes, mode=cfg.mode)
    meta.update(config=cfg.to_dict(), target_mean=target_mean, target_std=target_std)
    meta["n_labelled"] = len(rows)
    meta["standardised_on"] = (
        "labelled galaxies" if reference is None else f"{len(reference)} unlabelled galaxies"
    )
    rng = np.random.default_rng(cfg.seed)
    if cfg.mode == "head":
        head, metrics = fit_head(feats, y, n_out, cfg, rng, reference)
        model = _new_model(src, meta, head)
    else:
        tr, va = _stratified_split(y, cfg.val_fraction, rng, cfg.task == "classification")
        model = _new_model(src, meta, _start_head(feats, y, tr, va, n_out, cfg, reference))
        ids = rows["id_str"].to_numpy()[tr]
        info = train_full(model, images[tr], y[tr], images[va], y[va], cfg, ids=ids)
        metrics = {k: info[k] for k in ("epochs", "best_epoch", "val_loss")}
        metrics.update(n_train=int(len(tr)), n_val=int(len(va)))
    if cfg.task == "classification":
        counts = np.bincount(y, minlength=n_out)
        metrics["class_counts"] = {str(c): int(n) for c, n in zip(classes, counts, strict=True)}
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    model.metadata["metrics"] = metrics
    return model.eval()

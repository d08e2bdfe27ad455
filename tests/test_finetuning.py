"""Tests of galaxy_helpers.finetuning on tiny drawn galaxies (rings vs plain discs, 32 px)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from galaxy_helpers import finetuned
from galaxy_helpers import finetuning as ft
from galaxy_helpers import label_budget as lb
from galaxy_helpers.models import GalaxyModel, save_checkpoint

SIZE = 32


def _draw(ring: bool, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2 + rng.normal(0, 0.7, 2)[:, None, None]
    r = np.hypot(xx, yy)
    img = np.exp(-((r / rng.uniform(2.5, 3.5)) ** 2))
    if ring:
        img = img + 0.8 * np.exp(-(((r - rng.uniform(9, 11)) / 1.3) ** 2))
    img = img[..., None] * np.array([1.0, 0.85, 0.7]) * 220
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def rings(tmp_path_factory) -> pd.DataFrame:
    """60 galaxies, every third one a ring (imbalanced on purpose), with a numeric column."""
    folder = tmp_path_factory.mktemp("rings")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        ring = i % 3 == 0
        path = folder / f"g{i:03d}.png"
        Image.fromarray(_draw(ring, rng)).save(path)
        rows.append(
            {"id_str": f"g{i}", "file_loc": str(path), "ring": int(ring), "size": 3.0 + ring}
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised encoder-only checkpoint (random convnets still see rings)."""
    torch.manual_seed(0)
    model = GalaxyModel("convnext_atto", schema=None)
    path = tmp_path_factory.mktemp("ckpt") / "encoder"
    save_checkpoint(
        model, path, {"image_size": SIZE, "mean": [0.1, 0.1, 0.1], "std": [0.2, 0.2, 0.2]}
    )
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))


def test_head_mode_learns_rings_and_predicts_a_table(rings, checkpoint):
    train, test = rings.iloc[:40], rings.iloc[40:]
    model = ft.finetune(checkpoint, train, "ring", progress=False)
    table = model.predict(test, progress=False)
    assert list(table.columns) == ["id_str", "probability_0", "probability_1", "prediction"]
    assert table["id_str"].tolist() == test["id_str"].tolist()
    np.testing.assert_allclose(table[["probability_0", "probability_1"]].sum(axis=1), 1, atol=1e-5)
    from sklearn.metrics import balanced_accuracy_score

    assert balanced_accuracy_score(test["ring"], table["prediction"]) >= 0.8
    metrics = model.metadata["metrics"]
    assert metrics["n_train"] + metrics["n_val"] == 40 and metrics["n_val"] >= 2
    assert metrics["class_counts"] == {"0": 26, "1": 14}
    # the encoder was frozen: same weights as the checkpoint
    src = ft.load_encoder(checkpoint)
    for (k, a), b in zip(
        model.encoder.state_dict().items(), src.encoder.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k


def test_finetune_standardises_on_unlabelled_galaxies_when_given(rings, checkpoint):
    labelled, pool = rings.iloc[:12], rings.iloc[:50]  # the last 10 stay out, as a test set
    src = ft.load_encoder(checkpoint)
    pool_feats = src.features(pool)
    for mode in ("head", "full"):
        model = ft.finetune(
            checkpoint, labelled, "ring", mode, unlabelled=pool, max_epochs=1, progress=False
        )
        np.testing.assert_allclose(
            model.head.feature_mean.numpy(), pool_feats.mean(0), rtol=1e-4, atol=1e-5
        )
        assert model.metadata["standardised_on"] == "50 unlabelled galaxies", mode
    own = ft.finetune(checkpoint, labelled, "ring", progress=False)
    np.testing.assert_allclose(
        own.head.feature_mean.numpy(), src.features(labelled).mean(0), rtol=1e-4, atol=1e-5
    )
    assert own.metadata["standardised_on"] == "labelled galaxies"


def test_save_and_load_give_identical_predictions(rings, checkpoint, tmp_path):
    model = ft.finetune(checkpoint, rings.iloc[:30], "ring", progress=False)
    path = model.save(tmp_path / "ring_model")
    # a folder that does not exist yet is made (notebook 06 saves into a fresh output folder)
    assert model.save(tmp_path / "new" / "folder" / "m").exists()
    assert path.suffix == ".safetensors" and (tmp_path / "ring_model.json").exists()
    meta = json.loads((tmp_path / "ring_model.json").read_text())
    assert meta["architecture"] == "convnext_atto" and meta["classes"] == [0, 1]
    again = ft.FinetunedModel.load(tmp_path / "ring_model")
    assert again.head.clip == model.head.clip == meta["config"]["feature_clip"] == 3.0
    a = model.predict(rings.iloc[30:], progress=False)
    b = again.predict(rings.iloc[30:], progress=False)
    pd.testing.assert_frame_equal(a, b)
    # a saved finetuned model can itself be the starting point
    assert ft.load_encoder(tmp_path / "ring_model").architecture == "convnext_atto"


def test_full_mode_trains_encoder_with_smaller_rates_near_the_input(rings, checkpoint):
    model = ft.finetune(
        checkpoint, rings.iloc[:30], "ring", mode="full", max_epochs=2, progress=False
    )
    before = ft.load_encoder(checkpoint).encoder.state_dict()
    changed = [k for k, v in model.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "full mode must update the encoder"
    assert model.metadata["metrics"]["epochs"] <= 2
    groups = finetuned._param_groups(model, ft.FinetuneConfig(encoder_lr=1e-3, layer_decay=0.5))
    lrs = [g["lr"] for g in groups[:-1]]
    assert min(lrs) < 1e-3 * 0.5**5 and max(lrs) == pytest.approx(1e-3)
    assert groups[-1]["lr"] == ft.FinetuneConfig().full_head_lr


def test_balanced_sampler_and_regression(rings, checkpoint):
    model = ft.finetune(
        checkpoint,
        rings.iloc[:24],
        "ring",
        mode="full",
        balance="sampler",
        max_epochs=1,
        progress=False,
    )
    assert model.predict(rings.iloc[:4], progress=False).shape == (4, 4)
    reg = ft.finetune(checkpoint, rings, "size", task="regression", progress=False)
    pred = reg.predict(rings, progress=False)
    assert list(pred.columns) == ["id_str", "prediction"]
    assert np.corrcoef(pred["prediction"], rings["size"])[0, 1] > 0.8


def test_class_weights_balance_classes():
    w = finetuned._class_weights(np.array([0, 0, 0, 1]), 2)
    assert w[1] == pytest.approx(3 * w[0])


def test_labels_given_apart_and_clear_errors(rings, checkpoint):
    labels = {"g0": 1, "g1": 0, "g2": 0, "g3": 1, "g4": 0, "g6": 1}
    model = ft.finetune(
        checkpoint, rings.drop(columns="ring"), "ring", labels=labels, progress=False
    )
    assert model.metadata["n_labelled"] == 6
    with pytest.raises(ft.FinetuneError, match="not in the catalogue.*nope"):
        ft.finetune(checkpoint, rings, "ring", labels={"g0": 1, "nope": 0}, progress=False)
    with pytest.raises(ft.FinetuneError, match="one class only"):
        ft.finetune(checkpoint, rings[rings["ring"] == 1], "ring", progress=False)
    with pytest.raises(ft.FinetuneError, match="no label column 'bar'"):
        ft.finetune(checkpoint, rings, "bar", progress=False)
    with pytest.raises(ft.FinetuneError, match="convnext_atto.*resnet10t"):
        ft.finetune(checkpoint, rings, "ring", architecture="resnet10t", progress=False)
    with pytest.raises(ft.FinetuneError, match="mode"):
        ft.FinetuneConfig(mode="everything")


def test_load_refuses_weights_of_another_architecture(rings, checkpoint, tmp_path):
    model = ft.finetune(checkpoint, rings.iloc[:20], "ring", progress=False)
    model.save(tmp_path / "m")
    meta_path = tmp_path / "m.json"
    meta = json.loads(meta_path.read_text())
    meta["architecture"] = "resnet10t"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ft.FinetuneError, match="do not fit a 'resnet10t'"):
        ft.FinetunedModel.load(tmp_path / "m")
    with pytest.raises(ft.FinetuneError, match="does not exist"):
        ft.FinetunedModel.load(tmp_path / "absent")


def test_label_budget_experiment_is_balanced_cached_and_plots(rings, checkpoint):
    import matplotlib

    matplotlib.use("Agg")
    kwargs = dict(
        budgets=(4, 8, 100),
        repeats=2,
        test_per_class=6,
        progress=False,
        methods=("pretrained_head", "pretrained_full", "scratch", "broken_head"),
        config=ft.FinetuneConfig(max_epochs=1, progress=False),
        other_encoders={"broken_head": "timm:not_a_model"},
    )
    res = lb.label_budget_experiment(checkpoint, rings, "ring", **kwargs)
    assert res.description["budgets"] == [4, 8] and res.description["budgets_dropped"] == [100]
    assert "broken_head" in res.skipped
    assert len(res.runs) == 3 * 2 * 2 and not res.runs["cached"].any()
    test = rings.set_index("id_str").loc[res.test_ids]
    assert (test["ring"] == 1).sum() == (test["ring"] == 0).sum() == 6
    assert set(res.metrics()) == {"pretrained_head", "pretrained_full", "scratch"}
    assert set(res.metrics()["scratch"]) == {"4", "8"}
    head8 = res.runs.query("method == 'pretrained_head' and budget == 8")
    assert head8["balanced_accuracy"].mean() > 0.6
    # the heads read the catalogue's representation table, not a feature cache of their own
    cache = Path(os.environ["GALAXY_HELPERS_CACHE"])
    assert list(cache.glob("representations/*")) and not (cache / "finetuning/features").exists()
    again = lb.label_budget_experiment(checkpoint, rings, "ring", **kwargs)
    assert again.runs["cached"].all()
    pd.testing.assert_series_equal(res.runs["balanced_accuracy"], again.runs["balanced_accuracy"])
    # runs made by a trainer that has since been edited, or by another torch, are made again
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lb.core, "source_key", lambda *modules: "edited")
        assert (
            not lb.label_budget_experiment(checkpoint, rings, "ring", **kwargs).runs["cached"].any()
        )
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lb, "numerics", lambda device=None: {"torch": "another"})
        assert (
            not lb.label_budget_experiment(checkpoint, rings, "ring", **kwargs).runs["cached"].any()
        )
    fig = res.plot()
    assert fig.axes[0].get_xscale() == "log"


def test_label_budget_heads_standardise_on_the_pool_never_the_test_set(
    rings, checkpoint, monkeypatch
):
    seen = []
    fit_head = ft.fit_head

    def spy(X, y, n_out, cfg, rng=None, reference=None):
        seen.append(reference)
        return fit_head(X, y, n_out, cfg, rng, reference)

    monkeypatch.setattr(lb.ft, "fit_head", spy)
    res = lb.label_budget_experiment(
        checkpoint, rings, "ring", budgets=(4,), repeats=1, test_per_class=6,
        methods=("pretrained_head",), cache=False, progress=False,
    )  # fmt: skip
    assert len(seen) == 1 and seen[0] is not None
    assert len(seen[0]) == len(rings) - len(res.test_ids)  # every galaxy outside the test set


def test_lbfgs_head_is_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 20)) * rng.uniform(0.5, 3, 20)
    y = (X[:, 0] + rng.normal(size=60) > 0.5).astype(int)
    cfg = ft.FinetuneConfig(val_fraction=0, head_l2=2.0, feature_clip=None)
    head, info = ft.fit_head(X, y, 2, cfg)
    assert info["solver"] == "lbfgs" and info["n_train"] == 60
    scaler = StandardScaler().fit(X)
    ref = LogisticRegression(C=0.5, class_weight="balanced", tol=1e-10, max_iter=5000)
    ref.fit(scaler.transform(X), y)
    with torch.no_grad():
        p = torch.softmax(head(torch.as_tensor(X, dtype=torch.float32)), 1)[:, 1].numpy()
    np.testing.assert_allclose(p, ref.predict_proba(scaler.transform(X))[:, 1], atol=1e-4)


def test_head_standardises_on_the_reference_population_when_given():
    """A few labelled rows estimate means and spreads badly; the unlabelled population's
    statistics are used instead, by both solvers and by the cross-validated penalty."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    population = rng.normal(size=(2000, 6)) * rng.uniform(0.5, 3, 6) + rng.normal(size=6)
    X = population[:20]
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    cfg = ft.FinetuneConfig(val_fraction=0, head_l2=2.0, feature_clip=None)
    head, _ = ft.fit_head(X, y, 2, cfg, reference=population)
    np.testing.assert_allclose(head.feature_mean.numpy(), population.mean(0), rtol=1e-5)
    np.testing.assert_allclose(head.feature_scale.numpy(), population.std(0), rtol=1e-5)
    z = (X - population.mean(0)) / population.std(0)
    ref = LogisticRegression(C=0.5, class_weight="balanced", tol=1e-10, max_iter=5000).fit(z, y)
    with torch.no_grad():
        p = torch.softmax(head(torch.as_tensor(X, dtype=torch.float32)), 1)[:, 1].numpy()
    np.testing.assert_allclose(p, ref.predict_proba(z)[:, 1], atol=1e-4)
    own, _ = ft.fit_head(X, y, 2, cfg)  # without a reference: the labelled rows' own statistics
    np.testing.assert_allclose(own.feature_mean.numpy(), X.mean(0), rtol=1e-5)
    adam = ft.fit_head(X, y, 2, cfg.replace(head_solver="adam"), reference=population)[0]
    np.testing.assert_allclose(adam.feature_mean.numpy(), population.mean(0), rtol=1e-5)
    l2, scores = ft.choose_l2(X, y, 2, ft.FinetuneConfig(), reference=population)
    assert l2 in scores
    broken = population.copy()
    broken[7, 2] = np.nan
    with pytest.raises(ft.FinetuneError, match=r"rows \[7\]"):
        ft.fit_head(X, y, 2, cfg, reference=broken)


def test_head_clips_features_the_labelled_galaxies_barely_vary_in():
    # 30 labelled galaxies; feature 1 is almost constant among them and carries no signal.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 4))
    X[:, 1] = 1e-3 * rng.normal(size=30)
    y = (X[:, 0] > 0).astype(int)
    new = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]], dtype=np.float32)  # 5000 sd
    for solver in ("lbfgs", "adam"):
        cfg = ft.FinetuneConfig(val_fraction=0, head_solver=solver, head_max_steps=200)
        clipped, _ = ft.fit_head(X, y, 2, cfg)
        free, _ = ft.fit_head(X, y, 2, cfg.replace(feature_clip=None))
        with torch.no_grad():
            z = clipped.standardise(torch.as_tensor(new))
            assert z.abs().max() <= 3.0 and z[1, 1] == 3.0
            shift = lambda h: (h(torch.as_tensor(new))[1] - h(torch.as_tensor(new))[0]).abs().max()  # noqa: E731
            # unclipped, the outlier's logits move 5000 sd times the feature's weight
            assert shift(free) > 100 * shift(clipped), solver


def test_adam_head_stops_early_on_the_validation_split():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 50))
    y = np.repeat([0, 1], 20)  # labels unrelated to the features: validation loss cannot improve
    cfg = ft.FinetuneConfig(head_solver="adam", head_patience=10, head_max_steps=500)
    head, info = ft.fit_head(X, y, 2, cfg)
    assert info["n_val"] == 8 and info["steps"] < 100
    with pytest.raises(ft.FinetuneError, match="head_solver"):
        ft.FinetuneConfig(head_solver="sgd")


def test_cross_validated_l2_prefers_strong_penalty_on_noise():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 40))
    y = np.repeat([0, 1], 15)
    X[:, 0] += 3 * y  # one informative feature among 40
    l2, scores = ft.choose_l2(X, y, 2, ft.FinetuneConfig(head_l2_grid=(0.01, 1.0, 100.0)))
    assert set(scores) == {0.01, 1.0, 100.0} and l2 == max(
        k for k, v in scores.items() if v == max(scores.values())
    )
    head, info = ft.fit_head(X, y, 2, ft.FinetuneConfig(head_l2=None, val_fraction=0))
    assert info["head_l2"] in ft.FinetuneConfig().head_l2_grid


@pytest.mark.parametrize("name", ["course", "synthetic"])
def test_named_checkpoints_give_their_committed_encoders(name):
    from galaxy_helpers.checkpoints import load_model

    src = ft.load_encoder(name)
    _, meta = load_model(name)
    assert src.architecture == meta["architecture"] and src.image_size == meta["image_size"]
    assert src.mean == pytest.approx(meta["mean"]) and src.description == f"{name} checkpoint"

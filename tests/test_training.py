"""The training loop on a tiny drawn catalogue (a 0.2 M-parameter timm model, 32 px)."""

import json
import math

import matplotlib
import numpy as np
import pytest
import torch
from toy_catalogue import make_toy_catalogue

from galaxy_helpers import recipes, training
from galaxy_helpers.models import load_checkpoint, predict_concentrations, save_checkpoint
from galaxy_helpers.recipes import train_or_load
from galaxy_helpers.training import (
    CatalogueError,
    History,
    TrainConfig,
    augment_batch,
    augmentation_params,
    plot_history,
    prepare_catalogue,
    train,
)

TINY = dict(architecture="test_convnext", image_size=32, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_catalogue(tmp_path_factory.mktemp("toy"), n=48, size=32)


@pytest.fixture(scope="module")
def trained(toy):
    return train(toy, TrainConfig(epochs=3, lr=3e-3, schedule="constant", **TINY))


# --- augmentation --------------------------------------------------------------------------
def _params(flip=0.0, angle_deg=0.0, zoom=1.0, sx=0.0, sy=0.0, n=2):
    row = [flip, math.radians(angle_deg), zoom, sx, sy]
    return torch.tensor([row] * n, dtype=torch.float32)


def test_identity_flip_and_quarter_turns_are_exact():
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(augment_batch(x, _params()), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(augment_batch(x, _params(flip=1)), x.flip(-1), atol=1e-5, rtol=0)
    rotated = augment_batch(x, _params(angle_deg=90))
    matches = [torch.allclose(rotated, torch.rot90(x, k, dims=(-2, -1)), atol=1e-5) for k in (1, 3)]
    assert any(matches)


def test_zoom_and_shift_move_the_galaxy():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 14:18, 14:18] = 1.0
    shifted = augment_batch(x, _params(sx=0.25, n=1))  # quarter half-width = 4 px
    com = (shifted[0, 0].sum(0) * torch.arange(32)).sum() / shifted.sum()
    assert abs(com.item() - (15.5 - 4)) < 0.6
    zoomed = augment_batch(x, _params(zoom=1.25, n=1))
    # Zoom in by 1.25: the galaxy covers 1.25^2 times the area.
    assert zoomed.sum().item() == pytest.approx(1.25**2 * x.sum().item(), rel=0.1)


def test_augmentation_params_are_reproducible_per_epoch():
    cfg = TrainConfig()
    a = augmentation_params(100, cfg, seed=0, epoch=0)
    np.testing.assert_array_equal(a, augmentation_params(100, cfg, seed=0, epoch=0))
    assert not np.allclose(a, augmentation_params(100, cfg, seed=0, epoch=1))
    assert a.shape == (100, 5)
    assert set(np.unique(a[:, 0])) <= {0.0, 1.0}
    assert (np.abs(a[:, 2] - 1) <= cfg.zoom + 1e-6).all()


def test_lossless_augmentation_moves_pixels_without_resampling():
    full = augmentation_params(200, TrainConfig(augment=True), seed=0, epoch=0)
    lossless = augmentation_params(200, TrainConfig(augment="lossless"), seed=0, epoch=0)
    np.testing.assert_array_equal(lossless[:, 0], full[:, 0])  # the same flips
    quarter = np.round(np.rad2deg(lossless[:, 1]) / 90)
    np.testing.assert_allclose(np.rad2deg(lossless[:, 1]), 90 * quarter, atol=1e-4)
    assert set(np.unique(quarter)) == {0, 1, 2, 3}
    assert (lossless[:, 2] == 1).all() and (lossless[:, 3:] == 0).all()
    assert not np.allclose(np.rad2deg(full[:, 1]) % 90, 0)  # the default also tilts
    # every lossless transform is a permutation of the pixels: nothing blurs
    x = torch.rand(len(lossless[:8]), 3, 16, 16)
    y = augment_batch(x, torch.from_numpy(lossless[:8]))
    torch.testing.assert_close(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="heavy")


# --- the loop ------------------------------------------------------------------------------
def test_training_learns_and_records_everything(trained, toy):
    model, history = trained
    assert history.epoch == [1, 2, 3]
    assert history.train_loss[-1] < history.train_loss[0]
    assert min(history.val_loss) < history.val_loss[0] or history.best_epoch == 1
    assert 1 <= history.best_epoch <= 3
    assert history.best_val_loss == pytest.approx(min(history.val_loss))
    assert len(history.step_loss) == 3 * math.ceil(36 / 16)
    assert history.data.n_train == 36 and history.data.n_val == 6
    meta = model.metadata
    for key in ("image_size", "channels", "mean", "std", "seed", "data", "epochs", "metrics"):
        assert key in meta, key
    assert meta["image_size"] == 32 and len(meta["mean"]) == 3
    assert meta["metrics"]["best_val_loss"] == pytest.approx(history.best_val_loss)
    assert not model.training and next(model.parameters()).device.type == "cpu"


def test_trained_model_round_trips_through_a_checkpoint(trained, toy, tmp_path):
    model, _ = trained
    save_checkpoint(model, tmp_path / "m")
    loaded, meta = load_checkpoint(tmp_path / "m", schema="decals_dr5", image_size=32)
    assert meta["train_config"]["architecture"] == "test_convnext"
    from galaxy_helpers.images import load_images

    imgs = load_images(toy["file_loc"][:4], 32, progress=False)
    np.testing.assert_allclose(
        predict_concentrations(loaded, imgs, progress=False),
        predict_concentrations(model, imgs, progress=False),
        rtol=1e-5,
    )


def test_model_separates_round_from_elongated(trained, toy):
    """After a few steps the predicted featured fraction is higher for elongated blobs."""
    from galaxy_helpers.images import load_images
    from galaxy_helpers.models import predict_fractions

    model, _ = trained
    imgs = load_images(toy["file_loc"], 32, progress=False)
    mean, _ = predict_fractions(predict_concentrations(model, imgs, progress=False))
    featured = mean[:, 1]
    elongated = toy["truth_elongated"].to_numpy()
    assert featured[elongated].mean() > featured[~elongated].mean() + 0.1


def test_early_stopping_restores_best_epoch(toy):
    # A learning rate of ~0 cannot improve the validation loss: stop after `patience` epochs.
    cfg = TrainConfig(
        epochs=5, lr=1e-12, schedule="constant", patience=1, max_steps_per_epoch=1, **TINY
    )
    _, history = train(toy, cfg)
    assert history.stopped_early and len(history.epoch) == 2 and history.best_epoch == 1


def test_streaming_loader_and_cpu_mixed_precision(toy):
    cfg = TrainConfig(
        epochs=1, preload=False, num_workers=0, amp=True, max_steps_per_epoch=2, **TINY
    )
    model, history = train(toy, cfg)
    assert len(history.step_loss) == 2 and np.isfinite(history.val_loss[0])
    assert training.amp_settings(cfg.amp, torch.device("cpu")) == (True, torch.bfloat16)
    assert training.amp_settings(False, torch.device("cpu")) == (False, None)
    assert training.amp_settings(TrainConfig().amp, torch.device("cuda"))[0] is True


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_uses_bfloat16_only_on_cpus_that_compute_it(monkeypatch, native):
    # "auto" (the quick profile): bfloat16 where the CPU has AVX512-BF16 / AMX, else float32.
    monkeypatch.setattr(training, "cpu_has_native_bfloat16", lambda: native)
    expected = (True, torch.bfloat16) if native else (False, None)
    assert training.amp_settings(TrainConfig().amp, torch.device("cpu")) == expected
    assert training.amp_settings(True, torch.device("cpu"))[0] is True
    assert training.amp_settings("auto", torch.device("mps")) == (False, None)


@pytest.mark.parametrize("preload", [True, False])
def test_a_last_batch_of_one_galaxy_is_left_for_the_next_epoch(toy, preload):
    # BatchNorm cannot normalise one galaxy (resnet10t at 32 px ends in a 1x1 map): a training
    # split of k * batch + 1 galaxies used to crash at the end of every epoch.
    n_train = int((toy["split"] == "train").sum())
    cfg = TrainConfig(
        architecture="resnet10t",
        image_size=32,
        batch_size=n_train - 1,
        epochs=1,
        preload=preload,
        num_workers=0,
        progress=False,
    )
    _, history = train(toy, cfg)
    assert len(history.step_loss) == 1 and np.isfinite(history.val_loss[0])


def test_gpu_paths_booking_late_and_images_on_device_change_nothing(toy, monkeypatch):
    # On a GPU each loss is read one step late (so the GPU never waits for Python); the
    # history, sums and epoch count must be exactly those of booking at once.
    cfg = TrainConfig(epochs=2, lr=3e-3, schedule="constant", **TINY)
    _, at_once = train(toy, cfg)
    monkeypatch.setattr(training, "_booking_lag", lambda device: 1)
    _, late = train(toy, cfg)
    assert late.step_loss == at_once.step_loss and len(late.step_end_s) == len(late.step_loss)
    assert late.train_loss == at_once.train_loss and late.val_loss == at_once.val_loss
    # The images-on-the-GPU branch (a no-op move on a CPU) gathers the same batches.
    monkeypatch.setattr(training, "_fits_on_gpu", lambda n_bytes, device: True)
    _, on_device = train(toy, cfg)
    assert on_device.step_loss == at_once.step_loss and on_device.val_loss == at_once.val_loss


def test_no_split_column_splits_at_random(toy):
    df = toy.drop(columns="split")
    tr, va, ctr, cva = prepare_catalogue(df, "decals_dr5", TrainConfig(val_fraction=0.25))
    assert len(va) == 12 and len(tr) == 36 and ctr.shape == (36, 34)
    assert not set(tr["id_str"]) & set(va["id_str"])


# --- bad catalogues ------------------------------------------------------------------------
def test_bad_counts_and_columns_name_rows_and_columns(toy):
    cfg = TrainConfig(**TINY)
    bad = toy.copy()
    bad.loc[3, "bar-dr5_strong"] = np.nan
    with pytest.raises(CatalogueError, match=r"row 3.*bar-dr5_strong"):
        train(bad, cfg)
    bad = toy.copy()
    bad.loc[5, "merging-dr5_merger"] = -2
    with pytest.raises(CatalogueError, match=r"negative.*row 5"):
        train(bad, cfg)
    with pytest.raises(CatalogueError, match="missing.*how-rounded-dr5_round"):
        train(toy.drop(columns="how-rounded-dr5_round"), cfg)
    with pytest.raises(CatalogueError, match="file_loc"):
        train(toy.drop(columns="file_loc"), cfg)


def test_unreadable_images_are_named_or_skipped(toy, tmp_path):
    bad = toy.copy()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    bad.loc[2, "file_loc"] = str(broken)
    bad.loc[7, "file_loc"] = str(tmp_path / "gone.png")
    cfg = TrainConfig(epochs=1, max_steps_per_epoch=1, **TINY)
    with pytest.raises(CatalogueError) as err:
        train(bad, cfg)
    assert "gone.png" in str(err.value) and "toy7" in str(err.value)
    cfg.skip_bad_images = True
    _, history = train(bad, cfg)
    skipped = {s["id_str"]: s for s in history.data.skipped}
    assert set(skipped) == {"toy2", "toy7"}
    assert "broken.png" in skipped["toy2"]["file"]
    assert history.data.n_train == 34
    assert "skipped 2" in str(history.data)


# --- cache, figures, command line ----------------------------------------------------------
def test_train_or_load_uses_the_cache(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXY_HELPERS_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(epochs=1, max_steps_per_epoch=1, **TINY)
    model, history = train_or_load(toy, cfg)

    def fail(*a, **k):
        raise AssertionError("should have been loaded from the cache")

    monkeypatch.setattr(recipes, "train", fail)
    model2, history2 = train_or_load(toy, TrainConfig(**{**cfg.to_dict(), "num_workers": 7}))
    assert history2.val_loss == history.val_loss
    # The data description is a label, not part of the key (notebook 02 and quick_model share).
    train_or_load(toy, cfg, data_description={"source": "a label"})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model2(x), model(x))
    changed = toy.copy()
    changed.loc[0, "smooth-or-featured-dr5_smooth"] += 1
    with pytest.raises(AssertionError, match="cache"):
        train_or_load(changed, cfg)  # different counts -> different key -> would retrain
    with pytest.raises(AssertionError, match="cache"):
        train_or_load(toy, cfg, refresh=True)  # refresh always trains
    # a model trained by code since changed (a new optimiser), or by another torch, retrains
    with monkeypatch.context() as m, pytest.raises(AssertionError, match="cache"):
        m.setattr(recipes.core, "source_key", lambda *modules: "edited")
        train_or_load(toy, cfg)
    with monkeypatch.context() as m, pytest.raises(AssertionError, match="cache"):
        m.setattr(recipes, "numerics", lambda device=None: {"torch": "another"})
        train_or_load(toy, cfg)


def test_plot_history_and_history_json_round_trip(trained):
    matplotlib.use("Agg")
    _, history = trained
    fig = plot_history(history)
    ax = fig.axes[0]
    assert len(ax.lines) >= 3
    again = History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again.val_loss == history.val_loss and again.data.n_train == history.data.n_train
    assert list(history.as_frame().columns)[:3] == ["epoch", "train_loss", "val_loss"]


def test_command_line_trains_and_writes_checkpoint(toy, tmp_path):
    path = tmp_path / "cat.parquet"
    toy.to_parquet(path)
    out = tmp_path / "cli_model"
    rc = recipes.main(
        [
            "train",
            "--catalogue",
            str(path),
            "--out",
            str(out),
            "--architecture",
            "test_convnext",
            "--image-size",
            "32",
            "--batch-size",
            "16",
            "--epochs",
            "1",
            "--max-steps-per-epoch",
            "1",
            "--progress",
            "false",
            "--history",
            str(tmp_path / "h.json"),
            "--half",
            "--augment",
            "true",
        ]
    )
    assert rc == 0
    model, meta = load_checkpoint(out)
    assert meta["weights_dtype"] == "float16" and meta["epochs"] == 1
    assert meta["train_config"]["augment"] is True
    assert meta["data"]["catalogue"] == str(path)
    assert json.loads((tmp_path / "h.json").read_text())["epoch"] == [1]


def test_config_validation():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="warmup")
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(batch_size=0)


# --- framing and continued training (mixing surveys) ---------------------------------------
def test_init_checkpoint_starts_from_its_weights_and_normalisation(toy, trained, tmp_path):
    model, _ = trained
    path = tmp_path / "start"
    save_checkpoint(model, path)
    config = TrainConfig(epochs=1, lr=1e-12, schedule="constant", init_checkpoint=str(path), **TINY)
    continued, history = train(toy, config)
    assert continued.metadata["mean"] == pytest.approx(model.metadata["mean"])
    assert continued.metadata["std"] == pytest.approx(model.metadata["std"])
    for (name, a), b in zip(
        model.state_dict().items(), continued.state_dict().values(), strict=True
    ):
        if a.is_floating_point() and "running" not in name:  # BatchNorm statistics still move
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=name)
    other = TrainConfig(**{**TINY, "architecture": "resnet10t"}, init_checkpoint=str(path))
    with pytest.raises((ValueError, Exception), match="test_convnext|architecture"):
        train(toy, other)


def test_rows_train_at_their_own_framing_and_the_model_records_its_own(toy):
    cropped = toy.assign(crop=np.where(np.arange(len(toy)) % 2 == 0, 0.5, 1.0))
    model, _ = train(cropped, TrainConfig(epochs=1, framing_crop=0.8, **TINY))
    assert model.metadata["framing"] == {"crop": 0.8}
    bad = toy.assign(crop=0.0)
    with pytest.raises(ValueError, match="crop"):
        train(bad, TrainConfig(epochs=1, **TINY))


@pytest.mark.parametrize("total", range(1, 12))
def test_the_onecycle_schedule_survives_any_number_of_steps(total):
    import torch

    from galaxy_helpers.training import TrainConfig, _make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = _make_scheduler(opt, TrainConfig(epochs=1, schedule="onecycle"), total)
    for _ in range(total):  # 4 steps divided by zero before (a 1-step warm-up)
        opt.step()
        if sched is not None:
            sched.step()
    assert all(torch.isfinite(torch.tensor(g["lr"])) for g in opt.param_groups)


def test_make_adamw_fuses_where_it_can_and_keeps_every_parameter_group():
    model = torch.nn.Linear(3, 2)
    groups = [{"params": model.parameters(), "lr": 0.1}]  # a generator, read once
    opt = training.make_adamw(groups, lr=1e-3, weight_decay=0.0)
    assert opt.defaults["fused"] is True and len(opt.param_groups[0]["params"]) == 2
    assert opt.param_groups[0]["lr"] == 0.1
    x = torch.randn(4, 3)
    model(x).pow(2).mean().backward()
    before = model.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.weight)
    # tensors without a fused kernel (here complex) get PyTorch's default AdamW
    z = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
    assert not training.make_adamw([z]).defaults["fused"]

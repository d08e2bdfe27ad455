"""Checkpoints under bad input and faults: NaN weights, wrong metadata types and lengths, weights
and JSON from different saves, kill -9 in the middle of a save, a pickle given as weights."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from galaxy_helpers import finetuning as F
from galaxy_helpers import models as M
from galaxy_helpers.schema import DECALS_DR5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return M.GalaxyModel("resnet10t", schema=DECALS_DR5).eval()


@pytest.fixture
def saved(model, tmp_path):
    path = tmp_path / "ckpt"
    M.save_checkpoint(model, path, {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3})
    return path


def edit_json(path, **changes):
    meta_path = path.with_name(path.name + ".json")
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def test_nan_weights_are_refused_on_save_and_the_old_checkpoint_survives(model, saved):
    before = saved.with_name("ckpt.safetensors").read_bytes()
    broken = M.GalaxyModel("resnet10t", schema=DECALS_DR5)
    with torch.no_grad():
        next(broken.parameters())[0] = float("nan")
    with pytest.raises(M.CheckpointError, match=r"ckpt.safetensors: 1 weight tensor\(s\) hold NaN"):
        M.save_checkpoint(broken, saved)
    assert saved.with_name("ckpt.safetensors").read_bytes() == before
    M.load_checkpoint(saved)


def test_nan_or_inf_weights_are_refused_on_load(model, saved):
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("inf")
    save_file(state, str(saved.with_name("ckpt.safetensors")))
    edit_json(saved, weights_sha256=None)  # an older file without the hash
    with pytest.raises(M.CheckpointError, match=f"hold NaN or inf .*{first}.*not loaded"):
        M.load_checkpoint(saved)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mean": [0.5, 0.5]}, "mean has 2 values but the model has 3 channel"),
        ({"std": [0.2, 0.2, 0.2, 0.2]}, "std has 4 values"),
        ({"std": [0.2, 0.0, 0.2]}, "std must be positive"),
        ({"mean": "0.5"}, "mean must be finite numbers"),
        ({"image_size": "64"}, r"image_size must be a whole number of pixels .*'64' \(str\)"),
        ({"image_size": 64.5}, "image_size must be a whole number"),
        ({"channels": "3"}, "channels must be a whole number"),
        ({"answer_columns": "smooth"}, "answer_columns must be a list"),
        ({"dropout": 2}, r"dropout must be a number in \[0, 1\)"),
    ],
)
def test_wrong_metadata_types_and_lengths_are_named_on_load(saved, changes, message):
    edit_json(saved, **changes)
    with pytest.raises(M.CheckpointError, match=f"ckpt.json: .*{message}"):
        M.load_checkpoint(saved)


def test_wrong_metadata_is_refused_on_save(model, tmp_path):
    with pytest.raises(M.CheckpointError, match="not saved.*mean has 2 values"):
        M.save_checkpoint(model, tmp_path / "c", {"mean": [0.1, 0.2], "std": [1.0] * 3})
    assert list(tmp_path.iterdir()) == []


def test_answer_columns_that_do_not_match_the_schema_are_refused(saved):
    meta = json.loads(saved.with_name("ckpt.json").read_text())
    edit_json(saved, answer_columns=meta["answer_columns"][:-1])
    with pytest.raises(M.CheckpointError, match="answer_columns has 33 entries but schema"):
        M.load_checkpoint(saved)


def test_unknown_architecture_names_the_checkpoint(saved):
    edit_json(saved, architecture="resnet10tt")
    with pytest.raises(
        M.CheckpointError, match=r"ckpt.json: cannot build architecture 'resnet10tt'"
    ):
        M.load_checkpoint(saved)


def test_weights_from_another_save_are_detected(model, saved, tmp_path):
    other = M.GalaxyModel("resnet10t", schema=DECALS_DR5)
    M.save_checkpoint(other, tmp_path / "other", {"image_size": 32})
    os.replace(tmp_path / "other.safetensors", saved.with_name("ckpt.safetensors"))
    with pytest.raises(M.CheckpointError, match="different saves"):
        M.load_checkpoint(saved)


SAVER = """
import os, sys, time, torch
from galaxy_helpers import models as M
from galaxy_helpers.schema import DECALS_DR5
path, mode = sys.argv[1], sys.argv[2]
model = M.GalaxyModel("resnet10t", schema=DECALS_DR5)
if mode == "between":
    real = os.replace
    def replace(src, dst):
        real(src, dst)
        if str(dst).endswith(".safetensors") and STATE["seed"] >= 3:
            print("BETWEEN", flush=True)  # new weights in place, the JSON not yet
            time.sleep(60)
    os.replace = replace
STATE = {"seed": 0}
for seed in range(1000):
    STATE["seed"] = seed
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(seed / 1000)
    M.save_checkpoint(model, path, {"seed": seed, "image_size": 32})
    print(f"SAVED {seed}", flush=True)
"""


def _run_and_kill(path, mode, wait_for):
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SAVER), str(path), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked = []
    while True:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        if line.startswith("SAVED"):
            acked.append(int(line.split()[1]))
        if wait_for(line, acked):
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    acked += [int(x.split()[1]) for x in proc.stdout.read().splitlines() if x.startswith("SAVED")]
    return acked


def _consistent(path):
    loaded, meta = M.load_checkpoint(path)
    value = next(loaded.parameters()).flatten()[0].item()
    assert value == pytest.approx(meta["seed"] / 1000)  # weights and JSON of the same save
    return meta["seed"]


def test_kill_9_between_the_weights_and_the_json_then_load_completes_the_save(tmp_path):
    path = tmp_path / "ckpt"
    acked = _run_and_kill(path, "between", lambda line, acked: line.startswith("BETWEEN"))
    assert acked == [0, 1, 2]
    assert (tmp_path / "ckpt.json.next").exists()  # the crash left the new JSON waiting
    with pytest.warns(UserWarning, match="completed a save that was interrupted"):
        seed = _consistent(path)
    assert seed == 3  # the in-flight save, whole; nothing acknowledged is lost
    assert not (tmp_path / "ckpt.json.next").exists()


def test_kill_9_at_any_moment_of_repeated_saves_leaves_a_consistent_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    for k in range(3):
        acked = _run_and_kill(path, "plain", lambda line, acked, k=k: len(acked) >= 2 + 3 * k)
        seed = _consistent(path)
        assert seed >= acked[-1]  # the last acknowledged save, or the one in flight


def _finetuned(tmp_path):
    import timm

    enc = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    meta = {
        "architecture": "resnet10t",
        "channels": 3,
        "task": "classification",
        "classes": [0, 1],
        "config": {},
    }
    return F.FinetunedModel(enc, F.Head(int(enc.num_features), 2), meta)


def test_finetuned_save_refuses_nan_and_writes_weights_and_json_together(tmp_path):
    m = _finetuned(tmp_path)
    m.save(tmp_path / "ft")
    meta = json.loads((tmp_path / "ft.json").read_text())
    assert meta["weights_sha256"] == M.file_sha256(tmp_path / "ft.safetensors")
    F.FinetunedModel.load(tmp_path / "ft")
    with torch.no_grad():
        m.head.linear.weight[0, 0] = float("nan")
    with pytest.raises(F.FinetuneError, match="hold NaN or inf"):
        m.save(tmp_path / "ft")
    F.FinetunedModel.load(tmp_path / "ft")  # the earlier save is intact


def test_a_pth_pickle_given_to_the_encoder_loader_is_named_as_a_pickle(tmp_path, model):
    from galaxy_helpers import pretrained as P

    for name in ("weights.pth", "weights.weights"):  # by suffix, and by content
        path = tmp_path / name
        torch.save(model.encoder.state_dict(), path)
        with pytest.raises(P.PretrainedError, match="pickled PyTorch checkpoint.*never loaded"):
            P.load_pretrained_encoder(path, architecture="resnet10t")

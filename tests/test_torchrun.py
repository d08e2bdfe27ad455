"""The training CLI under torchrun: 2 CPU processes (gloo, DistributedDataParallel) behave
like one process with the same total batch and seed.

Why they should agree closely: each epoch both runs use one shared permutation; rank r takes
every 2nd index, so the two ranks' k-th batches together are exactly the single process's
k-th batch. Augmentations are drawn per galaxy index (not per process), the model has no
BatchNorm (test_convnext uses LayerNorm), and DDP averages the two ranks' mean gradients,
which equals the single process's mean gradient. What remains is float32 summation order
(about 1e-6 relative per step), which Adam can amplify a little over a few steps, so we
allow 1e-3 relative on the losses.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from toy_catalogue import make_toy_catalogue

from galaxy_helpers.models import load_checkpoint

ARGS = [
    "train", "--architecture", "test_convnext", "--image-size", "32", "--batch-size", "16",
    "--epochs", "2", "--max-steps-per-epoch", "3", "--lr", "2e-3", "--schedule", "constant",
    "--seed", "3", "--progress", "false", "--num-workers", "0",
]  # fmt: skip


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.fail("torchrun not found next to the Python interpreter; is torch installed?")
    cat = make_toy_catalogue(tmp_path / "images", n=64, size=32, seed=1)
    cat.to_parquet(tmp_path / "cat.parquet")
    common = [*ARGS, "--catalogue", str(tmp_path / "cat.parquet")]

    _run([sys.executable, "-m", "galaxy_helpers.recipes", *common,
          "--out", str(tmp_path / "single"), "--history", str(tmp_path / "single_history.json")],
         tmp_path)  # fmt: skip
    _run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "galaxy_helpers.recipes",
          *common, "--out", str(tmp_path / "ddp"), "--history", str(tmp_path / "ddp_history.json")],
         tmp_path)  # fmt: skip

    single = json.loads((tmp_path / "single_history.json").read_text())
    ddp = json.loads((tmp_path / "ddp_history.json").read_text())
    assert ddp["epoch"] == single["epoch"] == [1, 2]
    # Loss went down in both, and the two runs agree.
    assert single["train_loss"][1] < single["train_loss"][0]
    for key in ("train_loss", "val_loss"):
        for a, b in zip(single[key], ddp[key], strict=True):
            assert b == pytest.approx(a, rel=1e-3), (key, single[key], ddp[key])
    # Rank 0 alone wrote the checkpoint, and it records the world size.
    _, meta = load_checkpoint(tmp_path / "ddp")
    assert meta["metrics"]["world_size"] == 2
    assert meta["data"]["n_train"] == 48
    assert not list(tmp_path.glob("ddp*.tmp"))

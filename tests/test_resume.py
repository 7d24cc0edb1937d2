"""Resume after kill -9: N + M epochs equal N, kill, resume, M (weights, best metric, model.pt), deterministic CPU."""

import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import warm

from e2enet_monai.apps.runner import bundle_command

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles/e2enet_btcv_segmentation"
# 4 training cases x 2 crops = 8 batches per pass; 5 iterations per epoch, so epoch 3 starts in the middle of a pass
# (the sampler's position must be restored); masks updated every iteration (the sparse RNG must be restored)
TINY = {"num_workers": 0, "channels": [8, 16, 32, 64], "strides": [1, 2, 2, 2], "patch_size": [16, 32, 32],
        "epoch_length": 5, "sparse_update_frequency": 1, "epochs": 3, "val_interval": 1, "save_last": True,
        "optimizer_name": "adamw", "learning_rate": 0.01, "aug_prob": 0.5}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def tiny(tiny_btcv_factory):
    return tiny_btcv_factory((48, 48, 16))


def _cmd(data, out, **extra):
    overrides = {**TINY, "dataset_dir": str(data), "ckpt_dir": str(out / "models"), "output_dir": str(out / "eval"),
                 **extra}
    return bundle_command(BUNDLE, ["train.json"], overrides)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_kill_during_an_epoch_then_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    proc = warm.run(_cmd(tiny, full), capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the same run, killed with SIGKILL once epoch 3 has begun (epoch 2's checkpoint is on disk)
    run = subprocess.Popen(_cmd(tiny, cut), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                           process_group=0)  # a group to kill whole; a new session would get its own CPU share
    for line in run.stdout:
        if "Epoch: 3/3, Iter: 2/5" in line:
            os.killpg(run.pid, signal.SIGKILL)
            break
    run.wait(timeout=120)
    assert run.returncode == -signal.SIGKILL
    models = cut / "models"
    assert sorted(p.name for p in models.iterdir()) == ["last_checkpoint_epoch=2.pt", "model.pt"]
    before = (models / "model.pt").read_bytes()

    proc = warm.run(_cmd(tiny, cut, resume_from=str(models / "last_checkpoint_epoch=2.pt")),
                    capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in models.iterdir()) == ["last_checkpoint_epoch=3.pt", "model.pt"]

    a, b = _load(full / "models/last_checkpoint_epoch=3.pt"), _load(models / "last_checkpoint_epoch=3.pt")
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 15
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in ("best_metric", "best_metric_epoch"):
        assert a["progress"][key] == b["progress"][key], key
    assert a["progress"]["sampler"] == b["progress"]["sampler"]
    assert torch.equal(a["sparse"]["masks"]["mesh.0.0.up.weight"], b["sparse"]["masks"]["mesh.0.0.up.weight"])
    best_a, best_b = _load(full / "models/model.pt"), _load(models / "model.pt")
    for key in best_a["model"]:
        assert torch.equal(best_a["model"][key], best_b["model"][key]), key
    if a["progress"]["best_metric_epoch"] < 3:  # the resumed epoch was no better: model.pt was left as it was
        assert (models / "model.pt").read_bytes() == before
    assert "new best metric" not in proc.stdout.lower() or a["progress"]["best_metric_epoch"] == 3


def test_training_refuses_to_replace_the_best_model_without_overwrite(tiny, tmp_path):
    out = tmp_path / "run"
    (out / "models").mkdir(parents=True)
    (out / "models/model.pt").write_bytes(b"earlier model")
    proc = warm.run(_cmd(tiny, out, epochs=1), capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.pt exists" in last and "--overwrite True" in last, last
    assert "Traceback" not in proc.stderr
    assert (out / "models/model.pt").read_bytes() == b"earlier model"
    assert sorted(p.name for p in (out / "models").iterdir()) == ["model.pt"]


def test_resume_from_a_missing_checkpoint_is_refused(tiny, tmp_path):
    proc = warm.run(_cmd(tiny, tmp_path, resume_from=str(tmp_path / "nope.pt")), capture_output=True, text=True,
                    env=ENV, timeout=600)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (f"error: --resume_from {tmp_path / 'nope.pt'}: no such checkpoint "
                                                    f"(bundles write models/last_checkpoint_epoch=<N>.pt with "
                                                    f"--save_last True).")

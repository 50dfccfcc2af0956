"""The shared training loop: loss goes down, checkpoints resume to the identical result
(also after a real SIGKILL of `train`), early stopping, and its error messages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from pyimgano_deploy.models import create_model
from pyimgano_deploy.models.training import TrainingHooks
from pyimgano_deploy.models.training import checkpoint as ckpt
from pyimgano_deploy.models.training.checkpoint import CheckpointError

SIZE = 64
SMALL = {"vision_autoencoder": {"widths": [8, 16]}, "vision_stfpm": {"stages": ["s4", "s8"], "pretrained": False}}


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(5).integers(60, 140, size=(1, SIZE, SIZE, 3))
    return np.clip(base + rng.integers(-15, 15, size=(n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _detector(name: str, **kw):
    return create_model(name, image_size=SIZE, progress=False, batch_size=4, **{**SMALL[name], **kw})


@pytest.mark.parametrize("name", sorted(SMALL))
def test_training_loss_decreases(name):
    det = _detector(name, epochs=6).fit(_images(12, 0), input_format="rgb_u8_hwc")
    losses = [h["loss"] for h in det.fit_summary["training"]["history"]]
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("name", sorted(SMALL))
def test_resume_from_a_mid_run_checkpoint_gives_the_identical_model(name, tmp_path, monkeypatch):
    images = _images(12, 1)
    saved = ckpt.save_checkpoint

    def keep_epoch_2(path, *args, epoch, **kwargs):
        saved(path, *args, epoch=epoch, **kwargs)
        if epoch == 2:
            shutil.copy(path, tmp_path / "after_epoch_2.safetensors")

    monkeypatch.setattr("pyimgano_deploy.models.training.loop.save_checkpoint", keep_epoch_2)
    full = _detector(name, epochs=4)
    full.training_hooks = TrainingHooks(checkpoint=tmp_path / "full.safetensors", fingerprint="cfg")
    full.fit(images, input_format="rgb_u8_hwc")
    resumed = _detector(name, epochs=4)
    shutil.copy(tmp_path / "after_epoch_2.safetensors", tmp_path / "resume.safetensors")
    resumed.training_hooks = TrainingHooks(checkpoint=tmp_path / "resume.safetensors", resume=True, fingerprint="cfg")
    resumed.fit(images, input_format="rgb_u8_hwc")
    a, b = full.inference_module.state_dict(), resumed.inference_module.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert resumed.fit_summary["training"]["resumed_from_epoch"] == 2
    assert [h["loss"] for h in resumed.fit_summary["training"]["history"]] == [h["loss"] for h in full.fit_summary["training"]["history"]]


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    det = _detector("vision_autoencoder", epochs=2)
    det.training_hooks = TrainingHooks(checkpoint=tmp_path / "c.safetensors", fingerprint="one")
    det.fit(_images(6, 2), input_format="rgb_u8_hwc")
    other = _detector("vision_autoencoder", epochs=2)
    other.training_hooks = TrainingHooks(checkpoint=tmp_path / "c.safetensors", resume=True, fingerprint="two")
    with pytest.raises(CheckpointError, match="another configuration"):
        other.fit(_images(6, 2), input_format="rgb_u8_hwc")


def test_checkpoints_hold_no_pickle_and_say_their_epoch(tmp_path):
    det = _detector("vision_autoencoder", epochs=3)
    det.training_hooks = TrainingHooks(checkpoint=tmp_path / "c.safetensors", fingerprint="x")
    det.fit(_images(6, 3), input_format="rgb_u8_hwc")
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as fh:
        assert fh.metadata()["epoch"] == "3" and any(k.startswith("optim/") for k in fh.keys())
    assert not list(tmp_path.glob("*.tmp"))


def test_early_stop_uses_the_validation_images_and_only_stops():
    det = _detector("vision_autoencoder", epochs=30, early_stop_patience=1, lr=0.05)
    det.training_hooks = TrainingHooks(validation_images=_images(4, 4), validation_format="rgb_u8_hwc")
    det.fit(_images(8, 5), input_format="rgb_u8_hwc")
    t = det.fit_summary["training"]
    assert all(h["validation"] is not None for h in t["history"])
    assert t["stopped_early"] == (t["epochs"] < 30) and t["best_epoch"] is not None


def test_min_steps_adds_epochs_for_a_small_fit_set():
    det = _detector("vision_autoencoder", epochs=2, min_steps=9).fit(_images(6, 6), input_format="rgb_u8_hwc")
    t = det.fit_summary["training"]  # 6 images at batch 4: 2 steps per epoch, so 5 epochs for 9 steps
    assert t["epochs"] == t["epochs_planned"] == 5 and len(t["history"]) == 5


def test_amp_on_cpu_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="amp='fp16' needs device 'cuda'"):
        _detector("vision_autoencoder", amp="fp16")


# ----------------------------------------------------------------------------- CLI: kill, then --resume
def _train_args(out: Path, data: Path, extra: tuple[str, ...] = ()) -> list[str]:
    kwargs = {"image_size": SIZE, "stages": ["s4", "s8"], "pretrained": False, "epochs": 12, "batch_size": 4}
    return [sys.executable, "-m", "pyimgano_deploy.cli", "train", "--dataset", "synthetic", "--model", "vision_stfpm",
            "--out", str(out), "--set", f"dataset.root={data}", "--set", f"dataset.size={SIZE}", "--set", "dataset.n_train=20",
            "--set", "dataset.n_test=6", "--model-kwargs", json.dumps(kwargs), "--no-progress", *extra]


def _epoch_of(path: Path) -> int:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return int(fh.metadata()["epoch"])
    except (OSError, KeyError, ValueError):  # replaced while being read: try again
        return 0


def test_train_killed_mid_run_then_resumed_equals_an_uninterrupted_run(tmp_path):
    data = tmp_path / "data"
    full = subprocess.run(_train_args(tmp_path / "full", data), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = subprocess.Popen(_train_args(tmp_path / "killed", data), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "killed" / "model" / "checkpoint.safetensors"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and _epoch_of(checkpoint) < 3:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.is_file() and not (tmp_path / "killed" / "report.json").exists()
    resumed = subprocess.run(_train_args(tmp_path / "killed", data, ("--resume",)), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch" in resumed.stderr
    a = load_file(str(tmp_path / "full" / "model" / "state.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "state.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    ra, rb = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("full", "killed"))
    assert ra["metrics"] == rb["metrics"] and ra["thresholds"]["image"]["value"] == rb["thresholds"]["image"]["value"]
    assert not checkpoint.exists()  # a finished run removes its checkpoint


def test_resume_without_a_checkpoint_and_resume_of_a_memory_bank_are_refused(tmp_path):
    from tests.cli_helpers import run_cli

    code, _, err = run_cli("train", "--dataset", "synthetic", "--model", "vision_autoencoder", "--out", str(tmp_path / "none"), "--resume")
    assert code == 2 and "nothing to resume" in err


def test_the_micro_finetune_autoencoder_recipe_trains_the_autoencoder(tmp_path):
    from pyimgano_deploy.workbench.config import TrainConfig

    cfg = TrainConfig.from_dict({"recipe": "micro-finetune-autoencoder", "dataset": {"kind": "synthetic"},
                                 "output": {"dir": str(tmp_path / "run")}})
    assert cfg.model.name == "vision_autoencoder" and cfg.model.kwargs["epochs"] == 40
    named = TrainConfig.from_dict({"recipe": "micro-finetune-autoencoder", "model": {"name": "vision_stfpm"},
                                   "dataset": {"kind": "synthetic"}, "output": {"dir": str(tmp_path / "run")}})
    assert named.model.name == "vision_stfpm"

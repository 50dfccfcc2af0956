"""The epoch loop shared by every trained detector.

Determinism: the images of one fit are preprocessed once (``uint8 [N, H, W, 3]``); epoch ``e``
shuffles them with a generator seeded by ``(seed, e)`` and gives the detector's loss a torch
generator seeded the same way (for its augmentations). Nothing random carries over from one
epoch to the next except the model and the optimiser, which the checkpoint holds, so a run
resumed after epoch ``e`` computes exactly what the uninterrupted run computes.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from pyimgano_deploy.models.detectors.params import TrainedParams
from pyimgano_deploy.models.training.checkpoint import load_checkpoint, save_checkpoint


class TrainingTask(Protocol):
    """What a trained detector gives the loop."""

    module: nn.Module  # holds every trainable parameter; train()/eval() are switched by the loop

    def loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scalar loss of one uint8 ``[B, H, W, 3]`` batch (on the training device)."""


@dataclass
class TrainingHooks:
    """What the caller adds to a fit: ``checkpoint`` file (written after every epoch),
    ``resume`` from it, ``validation_images`` (normal images never fitted on, e.g. the
    calibration split: their mean score drives the optional early stop; read with
    ``validation_format`` and ``validation_u16_max``) and ``fingerprint``
    (identifies the configuration a checkpoint belongs to; derived from the model and data
    when empty)."""

    checkpoint: Path | None = None
    resume: bool = False
    validation_images: Any = None
    validation_format: str | None = None
    validation_u16_max: int | None = None
    fingerprint: str = ""


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    lr: float
    seconds: float
    validation: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingResult:
    history: list[EpochRecord] = field(default_factory=list)
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    best_epoch: int | None = None


def fingerprint_of(*parts: Any) -> str:
    """sha256 of the JSON of ``parts`` (configuration identity of a checkpoint)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def make_optimizer(params: TrainedParams, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    if params.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    cls = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=params.lr, weight_decay=params.weight_decay)


def batch_starts(n: int, batch: int) -> list[int]:
    """First index of each batch of an epoch over ``n`` images (a last batch of one image is
    dropped: BatchNorm needs two samples)."""
    return [s for s in range(0, n, batch) if n - s >= 2 or n == 1]


def planned_epochs(params: TrainedParams, n_images: int) -> int:
    """``params.epochs``, raised so the run takes at least ``params.min_steps`` optimiser steps."""
    steps = len(batch_starts(n_images, min(params.batch_size, n_images)))
    return max(params.epochs, math.ceil(params.min_steps / max(steps, 1)))


def learning_rate(params: TrainedParams, epoch: int, epochs: int | None = None) -> float:
    """The learning rate of 0-based ``epoch`` of ``epochs`` (default ``params.epochs``):
    constant, or cosine decay to 1 % of ``lr``."""
    if params.schedule == "constant":
        return params.lr
    t = epoch / max(1, (epochs or params.epochs) - 1)
    return params.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))


def _autocast(params: TrainedParams, device: torch.device) -> Any:
    if params.amp == "off":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if params.amp == "fp16" else torch.bfloat16)


def run_epochs(task: TrainingTask, images: np.ndarray, params: TrainedParams, device: torch.device, hooks: TrainingHooks,
               *, progress_bar: Callable[[int, str, str], Any], validate: Callable[[], float] | None = None) -> TrainingResult:
    """Train ``task.module`` on ``images`` (uint8 ``[N, H, W, 3]``) for :func:`planned_epochs` epochs;
    ``validate`` (→ mean validation score of the current model) drives the early stop."""
    module = task.module
    epochs = planned_epochs(params, images.shape[0])
    trainable = [p for p in module.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the training task has no trainable parameters")
    optimizer = make_optimizer(params, trainable)
    scaler = torch.amp.GradScaler(device.type) if params.amp == "fp16" else None
    result = TrainingResult()
    start = 0
    if hooks.resume:
        if hooks.checkpoint is None:
            raise ValueError("resume needs a checkpoint file")
        start, history, extra = load_checkpoint(hooks.checkpoint, module, optimizer, fingerprint=hooks.fingerprint)
        result.history = [EpochRecord(**h) for h in history]
        result.resumed_from_epoch = start
        result.best_epoch = extra.get("best_epoch")
        print(f"resuming after epoch {start} of {epochs} from {hooks.checkpoint}", file=sys.stderr, flush=True)
    n = images.shape[0]
    batch = min(params.batch_size, n)
    best, since_best = None, 0
    for h in result.history:
        if h.validation is not None and (best is None or h.validation < best):
            best, since_best = h.validation, 0
        elif h.validation is not None:
            since_best += 1
    for epoch in range(start, epochs):
        if validate is not None and params.early_stop_patience is not None and since_best >= params.early_stop_patience:
            result.stopped_early = True
            break
        t0 = time.perf_counter()
        lr = learning_rate(params, epoch, epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = np.random.default_rng([params.seed, epoch]).permutation(n)
        gen = torch.Generator().manual_seed(params.seed * 100_003 + epoch)
        starts = batch_starts(n, batch)
        total, count = 0.0, 0
        module.train()
        with progress_bar(len(starts), f"epoch {epoch + 1}/{epochs}", "batch") as bar:
            for s in starts:
                x = torch.from_numpy(images[order[s : s + batch]]).to(device)
                optimizer.zero_grad(set_to_none=True)
                with _autocast(params, device):
                    loss = task.loss(x, gen)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"the training loss became {float(loss)} at epoch {epoch + 1}; lower lr (now {lr:g})")
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                total += float(loss.detach()) * x.shape[0]
                count += x.shape[0]
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4g}")
        module.eval()
        val = None
        if validate is not None and params.early_stop_patience is not None:
            with torch.no_grad():
                val = float(validate())
            if best is None or val < best:
                best, since_best, result.best_epoch = val, 0, epoch + 1
            else:
                since_best += 1
        result.history.append(EpochRecord(epoch + 1, round(total / max(count, 1), 6), lr, round(time.perf_counter() - t0, 3), val))
        if hooks.checkpoint is not None:
            save_checkpoint(hooks.checkpoint, module, optimizer, epoch=epoch + 1, history=[h.to_dict() for h in result.history],
                            fingerprint=hooks.fingerprint, extra={"best_epoch": result.best_epoch})
    module.eval()
    return result

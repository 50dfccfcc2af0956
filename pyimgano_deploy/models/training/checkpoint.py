"""Training checkpoints: one safetensors file per run, replaced atomically after each epoch.

The file holds the trained module's state (``module/<key>``), the optimiser's tensors
(``optim/<param index>/<name>``) and, as string metadata, the epoch reached, the loss history,
the optimiser's scalar settings and a fingerprint of the training configuration. No pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_SCHEMA_VERSION = "1.0"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed (missing, another configuration, unreadable)."""


def save_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int,
                    history: list[dict[str, Any]], fingerprint: str, extra: dict[str, Any] | None = None) -> None:
    """Write the state after ``epoch`` (1-based) to ``path`` atomically (temp file + rename)."""
    from safetensors.torch import save_file

    tensors = {f"module/{k}": v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    opt = optimizer.state_dict()
    for index, state in opt["state"].items():
        for name, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim/{index}/{name}"] = t.detach().to("cpu").contiguous()
    meta = {"schema_version": CHECKPOINT_SCHEMA_VERSION, "epoch": str(epoch), "history": json.dumps(history),
            "fingerprint": fingerprint, "param_groups": json.dumps(opt["param_groups"]), "extra": json.dumps(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, *, fingerprint: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Restore ``module`` and ``optimizer`` from ``path`` → (epochs done, history, extra)."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}; the run was never started with this --out, or it finished")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if meta.get("schema_version", "").split(".")[0] != CHECKPOINT_SCHEMA_VERSION.split(".")[0]:
        raise CheckpointError(f"{path}: unsupported checkpoint schema {meta.get('schema_version')!r}")
    if meta.get("fingerprint") != fingerprint:
        raise CheckpointError(f"{path} was written by another configuration (model, data or training settings differ); "
                              "resume with the same config, or start again without --resume")
    module.load_state_dict({k[len("module/"):]: v for k, v in tensors.items() if k.startswith("module/")}, strict=True)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["epoch"]), json.loads(meta["history"]), json.loads(meta.get("extra", "{}"))

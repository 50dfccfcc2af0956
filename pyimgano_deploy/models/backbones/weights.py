"""Where backbone weights come from: local files, the torch hub cache, or the Lite0 package.

``pretrained`` everywhere in this package is ``False`` (random init), ``True`` (the published
weights for that backbone) or a path to a local state-dict file. Files are always read with
``torch.load(..., weights_only=True)`` and loaded with ``strict=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union
from urllib.error import URLError

import torch
from torch import nn

PretrainedArg = Union[bool, str, "os.PathLike[str]", None]


def is_local_source(pretrained: PretrainedArg) -> bool:
    """True when ``pretrained`` names a file rather than a True/False switch."""
    return isinstance(pretrained, (str, os.PathLike))


def check_pretrained_arg(pretrained: PretrainedArg) -> None:
    """Refuse anything but False/None, True or a path (a string like "true" is a path, not a flag)."""
    if pretrained is None or isinstance(pretrained, bool) or is_local_source(pretrained):
        return
    raise TypeError(
        f"pretrained: expected False, True or a path to a local weights file, "
        f"got {type(pretrained).__name__} {pretrained!r}"
    )


def resolve_pretrained(pretrained: PretrainedArg, weights: str | os.PathLike[str] | None) -> PretrainedArg:
    """Merge the ``weights=`` (local path) alias into ``pretrained``; refuse both at once."""
    check_pretrained_arg(pretrained)
    if weights is None:
        return pretrained
    if not is_local_source(weights):
        raise TypeError(f"weights: expected a path to a local weights file, got {type(weights).__name__}")
    if pretrained not in (False, None):
        raise ValueError("pass the weights either as pretrained= or as weights=, not both")
    return weights


def load_local_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (weights only, on CPU)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"pretrained: weights file not found: {file}")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"pretrained: {file} does not hold a plain state dict (mapping of parameter name to tensor)"
        )
    return state


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], *, model_name: str, source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a message naming the source."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise RuntimeError(f"weights from {source} do not fit {model_name}: {exc}") from exc


def download_state_dict(url: str, *, model_name: str) -> dict[str, torch.Tensor]:
    """Fetch published weights through the torch hub cache; explain what to do when offline."""
    file_name = url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except (URLError, OSError) as exc:  # URLError/HTTPError/timeouts are OSError subclasses
        cache = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        raise RuntimeError(
            f"could not download the pretrained {model_name} weights from {url} ({exc}). "
            f"Without network access, fetch that file on another machine and pass the local file: "
            f"create_feature_extractor({model_name!r}, pretrained='/path/to/{file_name}'), "
            f"or copy it to {cache}."
        ) from exc


def describe_source(pretrained: PretrainedArg, default_source: str) -> str:
    """Human/JSON description of where the weights came from."""
    if is_local_source(pretrained):
        return f"file:{Path(pretrained).expanduser().resolve()}"  # type: ignore[arg-type]
    if pretrained:
        return default_source
    return "random-init"

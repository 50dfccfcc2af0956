"""The model registry: names → detector factories, with capability tags.

Registration is declarative (a module path and a class name), so listing models never
imports torch; the detector module is imported only when a model is created.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

KNOWN_TAGS = frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "memory_bank", "gaussian", "fp16"})


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model without importing it."""

    name: str
    target: str  # "package.module:ClassName"
    tags: frozenset[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def load_class(self) -> type:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, target: str, tags: Iterable[str] = (), metadata: dict[str, Any] | None = None) -> ModelEntry:
    """Register ``name`` → ``target`` ("module:Class"). Unknown tags are refused."""
    tag_set = frozenset(tags)
    unknown = tag_set - KNOWN_TAGS
    if unknown:
        raise ValueError(f"model '{name}': unknown tags {sorted(unknown)}; known tags are {sorted(KNOWN_TAGS)}")
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' is already registered (as {_REGISTRY[name].target})")
    entry = ModelEntry(name=name, target=target, tags=tag_set, metadata=dict(metadata or {}))
    _REGISTRY[name] = entry
    return entry


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (no import of the model); KeyError lists valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(sorted(_REGISTRY))}") from None


def list_models(tags: Iterable[str] | None = None) -> list[str]:
    """Names of registered models that carry every tag in ``tags``, sorted."""
    wanted = frozenset(tags or ())
    unknown = wanted - KNOWN_TAGS
    if unknown:
        raise ValueError(f"unknown tags {sorted(unknown)}; known tags are {sorted(KNOWN_TAGS)}")
    return sorted(n for n, e in _REGISTRY.items() if wanted <= e.tags)


def model_parameters(name: str) -> dict[str, Any]:
    """Constructor keyword arguments of ``name`` with their defaults (imports the model)."""
    cls = model_entry(name).load_class()
    params = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        params[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return params


def model_info(name: str) -> dict[str, Any]:
    """Name, tags, metadata, target and parameters of ``name``."""
    entry = model_entry(name)
    return {
        "name": entry.name,
        "tags": sorted(entry.tags),
        "target": entry.target,
        "metadata": dict(entry.metadata),
        "parameters": model_parameters(name),
    }


def create_model(name: str, **kwargs: Any) -> Any:
    """Instantiate ``name``; unknown keyword arguments are refused with the valid list."""
    entry = model_entry(name)
    valid = model_parameters(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise TypeError(f"model '{name}' got unknown argument(s) {unknown}; valid arguments: {sorted(valid)}")
    factory: Callable[..., Any] = entry.load_class()
    return factory(**kwargs)


def _register_builtins() -> None:
    register_model(
        "vision_patchcore",
        target="pyimgano_deploy.models.detectors.patchcore:PatchCore",
        tags=("numpy", "pixel_map", "onnx", "tensorrt", "memory_bank", "fp16"),
        metadata={
            "paper": "Roth et al., Towards Total Recall in Industrial Anomaly Detection (CVPR 2022)",
            "head": "nearest neighbour in a greedy k-centre coreset memory bank",
            "memory": "bank_size × feature_dim × 4 bytes (plus ‖B‖², bank_size × 4 bytes)",
        },
    )
    register_model(
        "vision_padim",
        target="pyimgano_deploy.models.detectors.padim:PaDiM",
        tags=("numpy", "pixel_map", "onnx", "tensorrt", "gaussian", "fp16"),
        metadata={
            "paper": "Defard et al., PaDiM: a Patch Distribution Modeling Framework (ICPR 2021)",
            "head": "per-position Gaussian, Mahalanobis distance",
            "memory": "positions × n_channels × n_channels × 4 bytes for the inverse covariances (+ positions × n_channels × 4 for the means)",
        },
    )


_register_builtins()

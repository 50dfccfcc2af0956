"""The model registry: names → detector specs, with capability tags.

Built-in detectors are discovered: every sub-package of ``models/detectors`` that holds a
``spec.py`` with ``SPEC = DetectorSpec(...)`` is registered under ``SPEC.name``. Specs and
their parameter dataclasses are torch-free, so listing models and reading their parameters
never imports torch; the detector's model module is imported only in :func:`create_model`.
Other packages may add models with :func:`register_model`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

KNOWN_TAGS = frozenset({
    "numpy", "pixel_map", "onnx", "tensorrt", "fp16",
    "memory_bank", "gaussian", "knn", "vit", "ensemble", "noise_robust", "trained", "student_teacher", "amp",
})
DETECTORS_PACKAGE = "pyimgano_deploy.models.detectors"


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model without importing it."""

    name: str
    target: str  # "package.module:ClassName"
    tags: frozenset[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    params: type | None = None  # the parameter dataclass (a CommonParams subclass), when the spec names one
    small_kwargs: dict[str, Any] = field(default_factory=dict)  # a small, fast instance (contract tests)

    def load_class(self) -> type:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


_REGISTRY: dict[str, ModelEntry] = {}
_DISCOVERED = False


def _check_tags(name: str, tags: Iterable[str]) -> frozenset[str]:
    tag_set = frozenset(tags)
    unknown = tag_set - KNOWN_TAGS
    if unknown:
        raise ValueError(f"model '{name}': unknown tags {sorted(unknown)}; known tags are {sorted(KNOWN_TAGS)}")
    return tag_set


def _add(entry: ModelEntry) -> ModelEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"model '{entry.name}' is already registered (as {_REGISTRY[entry.name].target})")
    _REGISTRY[entry.name] = entry
    return entry


def register_model(name: str, *, target: str, tags: Iterable[str] = (), metadata: dict[str, Any] | None = None) -> ModelEntry:
    """Register ``name`` → ``target`` ("module:Class"). Unknown tags are refused."""
    _discover()
    return _add(ModelEntry(name=name, target=target, tags=_check_tags(name, tags), metadata=dict(metadata or {})))


def _discover() -> None:
    """Register the ``SPEC`` of every detector folder (once)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module(DETECTORS_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(f"{DETECTORS_PACKAGE}.{info.name}.spec")
        except ModuleNotFoundError as exc:
            if exc.name == f"{DETECTORS_PACKAGE}.{info.name}.spec":
                continue  # a helper package, not a detector
            raise
        spec = getattr(module, "SPEC", None)
        if spec is None:
            raise ImportError(f"{module.__name__} defines no SPEC = DetectorSpec(...)")
        _add(ModelEntry(name=spec.name, target=spec.target, tags=_check_tags(spec.name, spec.tags),
                        metadata=spec.metadata(), params=spec.params, small_kwargs=dict(spec.small_kwargs)))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (no import of the model); KeyError lists valid names."""
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(sorted(_REGISTRY))}") from None


def list_models(tags: Iterable[str] | None = None) -> list[str]:
    """Names of registered models that carry every tag in ``tags``, sorted."""
    _discover()
    wanted = frozenset(tags or ())
    unknown = wanted - KNOWN_TAGS
    if unknown:
        raise ValueError(f"unknown tags {sorted(unknown)}; known tags are {sorted(KNOWN_TAGS)}")
    return sorted(n for n, e in _REGISTRY.items() if wanted <= e.tags)


def model_parameters(name: str) -> dict[str, Any]:
    """Constructor keyword arguments of ``name`` with their defaults (torch-free for specs)."""
    entry = model_entry(name)
    if entry.params is not None:
        return entry.params.defaults()  # type: ignore[attr-defined]
    cls = entry.load_class()
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

"""Torch-free runtime: load a verified bundle and score images with ONNX Runtime or TensorRT.

Nothing here imports torch or onnx; ``tensorrt`` / ``pycuda`` are imported lazily inside
functions of :mod:`.tensorrt_session` only. Names are resolved lazily (PEP 562), so importing
``pyimgano_deploy.runtimes.results`` does not pull in onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

from pyimgano_deploy.runtimes.results import InferenceError, InferenceResult

_LAZY = {
    "EngineLoadError": "errors",
    "EngineRunError": "errors",
    "JsonlWriter": "jsonl",
    "make_record": "jsonl",
    "read_completed": "jsonl",
    "read_records": "jsonl",
    "repair_tail": "jsonl",
    "load_bundle": "loader",
    "open_runtime": "loader",
    "Runtime": "runtime",
    "RuntimeItem": "runtime",
    "CompareGates": "results_compare",
    "compare_results": "results_compare",
    "read_results": "results_compare",
    "Check": "validation",
    "ValidationReport": "validation",
    "validate_bundle": "validation",
}

__all__ = ["InferenceError", "InferenceResult", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyimgano_deploy.runtimes' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pyimgano_deploy.runtimes.{module}"), name)
    globals()[name] = value
    return value

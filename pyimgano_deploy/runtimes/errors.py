"""Errors raised by the torch-free runtime (engine selection, loading and execution)."""

from __future__ import annotations


class EngineLoadError(RuntimeError):
    """No engine of the bundle can be opened on this machine (``validate`` exit code 5).

    The message names the engine file and why it was refused (wrong GPU / TensorRT version,
    missing provider, unreadable model, shape mismatch with the manifest...).
    """

    exit_code = 5


class EngineRunError(RuntimeError):
    """The engine failed while running one batch (wraps ONNX Runtime / TensorRT errors)."""

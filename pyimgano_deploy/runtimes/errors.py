"""Errors raised by the torch-free runtime (engine selection, loading and execution)."""

from __future__ import annotations

from pyimgano_deploy.bundles.exit_codes import EXIT_ENGINE, EXIT_PARITY


class EngineLoadError(RuntimeError):
    """No engine of the bundle can be opened on this machine (``validate`` exit code 5).

    The message names the engine file and why it was refused (wrong GPU / TensorRT version,
    missing provider, unreadable model, shape mismatch with the manifest...).
    """

    exit_code = EXIT_ENGINE


class EngineRunError(RuntimeError):
    """The engine failed while running one batch (wraps ONNX Runtime / TensorRT errors)."""


class EngineParityError(EngineLoadError):
    """The engine opened, but does not reproduce the bundle's golden outputs on this machine
    (exit code 6, like the export's parity gate). The message holds the gate's numbers."""

    exit_code = EXIT_PARITY

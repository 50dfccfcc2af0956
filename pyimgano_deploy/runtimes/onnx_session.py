"""ONNX Runtime session for a bundle's ``model.onnx``: uint8 NHWC in, (score, anomaly_map) out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from pyimgano_deploy.bundles.io_contract import INPUT_NAME, OUTPUT_NAMES
from pyimgano_deploy.runtimes.errors import EngineLoadError, EngineRunError

_LOG = logging.getLogger(__name__)

#: Exceptions ONNX Runtime raises from ``InferenceSession(...)`` and ``run(...)``.
ORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(_ort_state, name)
    for name in (
        "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel",
        "RuntimeException", "NotImplemented", "NotFound", "EPFail", "EngineError",
        "ModelLoaded", "ModelRequiresCompilation",
    )
    if hasattr(_ort_state, name)
) + (RuntimeError,)



def make_session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """Sequential execution, all graph optimisations, ``intra_op_threads`` (None → ORT default)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if intra_op_threads is not None:
        if int(intra_op_threads) < 1:
            raise ValueError(f"intra_op_threads must be >= 1 or None, got {intra_op_threads}")
        options.intra_op_num_threads = int(intra_op_threads)
    options.log_severity_level = 3
    return options


class OnnxSession:
    """A thin wrapper over ``onnxruntime.InferenceSession`` honouring the bundle I/O contract.

    ``static_batch`` is the batch size baked into the model (None for a dynamic batch axis);
    ``input_hw`` the model's (H, W) when the graph declares it. ``run`` is safe to call from
    several threads (ONNX Runtime sessions are), so ``thread_safe`` is True.
    """

    kind = "onnxruntime"
    thread_safe = True

    def __init__(
        self,
        model_path: str | Path,
        *,
        providers: Sequence[str | tuple[str, dict]] = ("CPUExecutionProvider",),
        intra_op_threads: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        try:
            self._session = ort.InferenceSession(
                str(self.model_path),
                sess_options=make_session_options(intra_op_threads),
                providers=list(providers),
            )
        except ORT_ERRORS as exc:
            raise EngineLoadError(
                f"ONNX Runtime cannot load {self.model_path.name}: {type(exc).__name__}: {exc}"
            ) from exc
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if INPUT_NAME not in inputs:
            raise EngineLoadError(
                f"{self.model_path.name}: expected an input named '{INPUT_NAME}', got {sorted(inputs)}"
            )
        missing = [n for n in OUTPUT_NAMES if n not in outputs]
        if missing:
            raise EngineLoadError(
                f"{self.model_path.name}: missing outputs {missing}; got {sorted(outputs)}"
            )
        meta = inputs[INPUT_NAME]
        if meta.type != "tensor(uint8)":
            raise EngineLoadError(
                f"{self.model_path.name}: input '{INPUT_NAME}' must be tensor(uint8), got {meta.type}"
            )
        shape = list(meta.shape)
        if len(shape) != 4:
            raise EngineLoadError(
                f"{self.model_path.name}: input '{INPUT_NAME}' must be rank 4 [B,H,W,3], got {shape}"
            )
        self.static_batch: int | None = shape[0] if isinstance(shape[0], int) else None
        self.input_hw: tuple[int, int] | None = (
            (shape[1], shape[2]) if isinstance(shape[1], int) and isinstance(shape[2], int) else None
        )
        self.providers: list[str] = list(self._session.get_providers())
        _LOG.debug("opened %s with providers %s", self.model_path, self.providers)

    def run(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score one batch ``uint8 [B,H,W,3]`` → ``(score float32 [B], anomaly_map float32 [B,H,W])``."""
        if batch_u8.dtype != np.uint8 or batch_u8.ndim != 4 or batch_u8.shape[-1] != 3:
            raise ValueError(
                f"batch must be uint8 [B,H,W,3], got dtype={batch_u8.dtype} shape={batch_u8.shape}"
            )
        try:
            score, amap = self._session.run(
                list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(batch_u8)}
            )
        except ORT_ERRORS as exc:
            raise EngineRunError(f"ONNX Runtime failed on a batch of {len(batch_u8)}: {exc}") from exc
        return (
            np.asarray(score, dtype=np.float32).reshape(len(batch_u8)),
            np.asarray(amap, dtype=np.float32).reshape(len(batch_u8), *np.shape(amap)[-2:]),
        )

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]

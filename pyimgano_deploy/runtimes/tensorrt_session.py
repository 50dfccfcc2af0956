"""TensorRT 10 session for a bundle's ``engines/<gpu>-trt<ver>.plan`` (pycuda buffers).

``tensorrt`` and ``pycuda`` are imported lazily, inside functions, so this module imports on a
machine without them. Written against the TensorRT 10 Python API (named I/O tensors,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); not exercised by the CPU
test suite.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from pyimgano_deploy.runtimes.batching import pad_batch
from pyimgano_deploy.runtimes.errors import EngineLoadError, EngineRunError
from pyimgano_deploy.bundles.io_contract import INPUT_NAME, OUTPUT_NAMES
from pyimgano_deploy.runtimes.selection import TensorRTProbe

_LOG = logging.getLogger(__name__)


def probe_tensorrt(device_index: int = 0) -> TensorRTProbe:
    """TensorRT version, GPU name and compute capability of this machine (never raises)."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional dependency, lazy by rule
    except ImportError as exc:
        return TensorRTProbe(reason=f"tensorrt is not installed ({exc})")
    try:
        import pycuda.driver as cuda  # noqa: PLC0415
    except ImportError as exc:
        return TensorRTProbe(trt_version=trt.__version__, reason=f"pycuda is not installed ({exc})")
    try:
        cuda.init()
        dev = cuda.Device(device_index)
        major, minor = dev.compute_capability()
        return TensorRTProbe(trt.__version__, dev.name(), f"{major}.{minor}")
    except cuda.Error as exc:
        return TensorRTProbe(trt_version=trt.__version__, reason=f"no CUDA device ({exc})")


class TensorRTSession:
    """Deserialize a plan and run batches through one execution context.

    One context and one set of device buffers are shared, so ``run`` serialises callers with
    a lock (``thread_safe`` is False: the Runtime also locks around it). Batches smaller than
    the profile minimum (or the static batch) are padded by repeating the last image.
    """

    kind = "tensorrt"
    thread_safe = False

    def __init__(self, plan_path: str | Path, *, device_index: int = 0) -> None:
        try:
            import pycuda.driver as cuda  # noqa: PLC0415
            import tensorrt as trt  # noqa: PLC0415
        except ImportError as exc:
            raise EngineLoadError(f"TensorRT engine needs tensorrt and pycuda: {exc}") from exc
        self.model_path = Path(plan_path)
        self._cuda = cuda
        self._trt = trt
        self._lock = threading.Lock()
        cuda.init()
        self._ctx = cuda.Device(device_index).retain_primary_context()
        self._ctx.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.model_path.read_bytes())
            if self._engine is None:
                raise EngineLoadError(
                    f"TensorRT {trt.__version__} cannot deserialize {self.model_path.name} "
                    "(built for another GPU or TensorRT version, or corrupt)"
                )
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._setup_tensors()
        finally:
            self._ctx.pop()
        self.providers = ["TensorRT"]
        _LOG.info(
            "opened %s: batch %s..%s (static %s), input %s", self.model_path.name,
            self.min_batch, self.max_batch, self.static_batch, self.input_hw,
        )

    def _setup_tensors(self) -> None:
        trt = self._trt
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        missing = [n for n in (INPUT_NAME, *OUTPUT_NAMES) if n not in names]
        if missing:
            raise EngineLoadError(f"{self.model_path.name}: missing I/O tensors {missing}; has {names}")
        if self._engine.get_tensor_mode(INPUT_NAME) != trt.TensorIOMode.INPUT:
            raise EngineLoadError(f"{self.model_path.name}: '{INPUT_NAME}' is not an input tensor")
        shape = tuple(self._engine.get_tensor_shape(INPUT_NAME))
        self.input_hw: tuple[int, int] | None = (int(shape[1]), int(shape[2])) if min(shape[1:3]) > 0 else None
        if shape[0] > 0:
            self.static_batch: int | None = int(shape[0])
            self.min_batch = self.max_batch = int(shape[0])
        else:
            self.static_batch = None
            lo, _opt, hi = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        if self.input_hw is None:
            _lo, _opt, hi = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
            self.input_hw = (int(hi[1]), int(hi[2]))
        h, w = self.input_hw
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in (INPUT_NAME, *OUTPUT_NAMES)}
        self._buffers: dict[str, Any] = {}
        sizes = {INPUT_NAME: self.max_batch * h * w * 3, "score": self.max_batch, "anomaly_map": self.max_batch * h * w}
        for name, count in sizes.items():
            self._buffers[name] = self._cuda.mem_alloc(int(count) * self._dtypes[name].itemsize)
            self._context.set_tensor_address(name, int(self._buffers[name]))

    def run(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score ``uint8 [B,H,W,3]`` → ``(score float32 [B], anomaly_map float32 [B,H,W])``."""
        n = len(batch_u8)
        if n > self.max_batch:
            raise ValueError(f"batch of {n} exceeds the engine's maximum batch {self.max_batch}")
        run_n = max(n, self.min_batch)
        batch = np.ascontiguousarray(pad_batch(batch_u8, run_n), dtype=self._dtypes[INPUT_NAME])
        with self._lock:
            self._ctx.push()
            try:
                if self.static_batch is None:
                    self._context.set_input_shape(INPUT_NAME, tuple(batch.shape))
                self._cuda.memcpy_htod(self._buffers[INPUT_NAME], batch)
                if not self._context.execute_async_v3(stream_handle=self._stream.handle):
                    raise EngineRunError(f"TensorRT execute_async_v3 failed on a batch of {run_n}")
                self._stream.synchronize()
                out_shape = tuple(self._context.get_tensor_shape("anomaly_map"))
                score = np.empty(run_n, dtype=self._dtypes["score"])
                amap = np.empty((run_n, *out_shape[1:]), dtype=self._dtypes["anomaly_map"])
                self._cuda.memcpy_dtoh(score, self._buffers["score"])
                self._cuda.memcpy_dtoh(amap, self._buffers["anomaly_map"])
            except self._cuda.Error as exc:
                raise EngineRunError(f"CUDA error while running {self.model_path.name}: {exc}") from exc
            finally:
                self._ctx.pop()
        return score[:n].astype(np.float32), amap[:n].astype(np.float32)

    def close(self) -> None:
        """Release the device buffers and the primary context reference."""
        self._ctx.push()
        try:
            for buf in self._buffers.values():
                buf.free()
            self._buffers.clear()
        finally:
            self._ctx.pop()
            self._ctx.detach()

"""A small, torch-free entry point for hosts that embed CPython (see ``examples/c_host/``).

A C/C++ host loads a bundle once with :func:`open_scorer`, then hands each raw BGR frame
over as a buffer (e.g. ``PyMemoryView_FromMemory(ptr, h*w*3, PyBUF_READ)``). The frame is
wrapped with ``np.frombuffer`` — no copy at the host→Python boundary — and scored with the
runtime (``input_format="bgr_u8_hwc"``). The first copy is made by preprocessing (BGR→RGB,
resize), so no reference to the host's memory survives the call: the buffer only has to
stay valid and unchanged until :meth:`Scorer.score_bgr` returns.

Only numpy, OpenCV and ONNX Runtime (or TensorRT) are imported; never torch or onnx.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pyimgano_deploy.inputs.source_info import UNLIKE_TRAINING_POLICIES
from pyimgano_deploy.runtimes.loader import load_bundle
from pyimgano_deploy.runtimes.results import InferenceResult
from pyimgano_deploy.runtimes.runtime import Runtime

__all__ = ["FrameScoringError", "Scorer", "open_scorer", "wrap_bgr"]

INPUT_FORMAT = "bgr_u8_hwc"


class FrameScoringError(RuntimeError):
    """A frame could not be scored; the message names the stage and the cause."""


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def wrap_bgr(buffer: Any, height: int, width: int, count: int | None = None) -> np.ndarray:
    """View ``buffer`` (any object with the buffer protocol, e.g. a memoryview over C memory)
    as ``uint8 [height, width, 3]`` — or ``[count, height, width, 3]`` — without copying.

    The array is read-only when the buffer is. ``ValueError`` when the byte size differs from
    ``count * height * width * 3``.
    """
    h, w = _positive("height", height), _positive("width", width)
    n = 1 if count is None else _positive("count", count)
    try:
        flat = np.frombuffer(buffer, dtype=np.uint8)
    except TypeError as exc:
        raise TypeError(
            f"buffer must support the buffer protocol (e.g. a memoryview); got {type(buffer).__name__}"
        ) from exc
    expected = n * h * w * 3
    if flat.size != expected:
        what = f"{h}x{w}x3" if count is None else f"{n}x{h}x{w}x3"
        raise ValueError(f"buffer holds {flat.size} bytes but a BGR uint8 frame of {what} needs {expected}")
    shape = (h, w, 3) if count is None else (n, h, w, 3)
    return flat.reshape(shape)


def _unpack(result: InferenceResult, what: str) -> tuple[float, int | None]:
    if result.error is not None or result.score is None:
        err = result.error
        detail = "no score" if err is None else f"{err.stage} failed: {err.type}: {err.message}"
        raise FrameScoringError(f"{what}: {detail}")
    return float(result.score), None if result.label is None else int(result.label)


class Scorer:
    """One loaded bundle. Thread-safe like the :class:`Runtime` it wraps; keep it for the
    lifetime of the process."""

    def __init__(self, runtime: Runtime, unlike_training: str = "score") -> None:
        if unlike_training not in UNLIKE_TRAINING_POLICIES:
            raise ValueError(f"unlike_training must be one of {', '.join(UNLIKE_TRAINING_POLICIES)}, got {unlike_training!r}")
        self.runtime = runtime
        self.unlike_training = unlike_training

    @property
    def threshold(self) -> float | None:
        """The bundle's image threshold (``label = score >= threshold``), or ``None``."""
        return self.runtime.threshold

    def score_bgr(self, buffer: Any, height: int, width: int) -> tuple[float, int | None]:
        """Score one BGR uint8 HWC frame held in ``buffer`` → ``(score, label)``.

        ``label`` is ``None`` when the bundle has no image threshold. Raises
        ``FrameScoringError`` when the frame fails (stage, type and message in the text),
        ``ValueError`` / ``TypeError`` for a buffer of the wrong size or type.
        """
        frame = wrap_bgr(buffer, height, width)
        (result,) = self.runtime.infer(frame, input_format=INPUT_FORMAT, unlike_training=self.unlike_training)
        return _unpack(result, f"frame {height}x{width}")

    def score_bgr_batch(self, buffer: Any, count: int, height: int, width: int) -> list[tuple[float, int | None]]:
        """Score ``count`` frames stored back to back in ``buffer`` (one engine call per
        ``batch_size`` frames) → one ``(score, label)`` per frame, in order."""
        frames = wrap_bgr(buffer, height, width, count)
        results = self.runtime.infer(frames, input_format=INPUT_FORMAT, unlike_training=self.unlike_training)
        return [_unpack(r, f"frame {i} ({height}x{width})") for i, r in enumerate(results)]

    def close(self) -> None:
        self.runtime.close()

    def __repr__(self) -> str:
        return f"Scorer({self.runtime!r})"


def open_scorer(
    bundle_dir: str | os.PathLike[str],
    *,
    batch_size: int = 1,
    threads: int | None = None,
    device: str = "auto",
    streams: int | str = 1,
    expected_digest: str | None = None,
    public_key: str | os.PathLike[str] | None = None,
    unlike_training: str = "score",
) -> Scorer:
    """Verify and load the bundle at ``bundle_dir`` once → :class:`Scorer`.

    ``expected_digest`` (``sha256:HEX``, as ``export`` prints it) pins the bundle the line was
    released with; ``public_key`` requires its Ed25519 signature.

    ``threads``: ONNX Runtime intra-op threads (``None`` → its default, one per core).
    ``device``: ``"auto"``, ``"cpu"`` or ``"cuda"`` as for ``load_bundle``. ``streams``:
    throughput mode for ``score_bgr_batch`` (``load_bundle``'s ``streams``; 1 for latency).
    ``unlike_training``: ``"refuse"`` makes a frame of another colour or aspect ratio than the
    training images (a camera turned or swapped) a ``FrameScoringError`` instead of a score.
    Raises the loader's errors (``BundleError`` subclasses, ``EngineLoadError``, ``ValueError``).
    """
    runtime = load_bundle(bundle_dir, device=device, batch_size=batch_size, intra_op_threads=threads, streams=streams,
                          expected_digest=expected_digest, public_key=public_key)
    try:
        return Scorer(runtime, unlike_training)
    except ValueError:
        runtime.close()
        raise

"""Stream scheduling: a session scored through a :class:`~.schedule.Schedule`.

:class:`ScheduledSession` wraps an engine session so a preprocessed batch is cut into calls of
``micro_batch`` images (default: the batch split evenly over the streams), ``streams`` of them
at a time in a small thread pool; engines with a static batch get each call padded by
repeating its last image; sessions that are not thread-safe are called under a lock. On a CPU
this avoids the per-operator fork/join of one call spread over all cores and keeps each call's
activations small (throughput mode); ``streams=1`` keeps the lowest latency. ``tune_schedule``
times candidate schedules with this wrapper directly, without building trial runtimes.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from pyimgano_deploy.runtimes.batching import pad_batch, split_even
from pyimgano_deploy.runtimes.errors import EngineRunError


class Session(Protocol):
    """What the runtime needs from an engine session (OnnxSession, TensorRTSession)."""

    kind: str
    thread_safe: bool
    static_batch: int | None
    providers: list[str]

    def run(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ScheduledSession:
    """``session`` run ``streams`` calls at a time, ``micro_batch`` images per call."""

    def __init__(self, session: Session, *, streams: int = 1, micro_batch: int | None = None) -> None:
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1 or None, got {micro_batch}")
        static = getattr(session, "static_batch", None)
        if micro_batch is not None and static:
            raise ValueError(f"micro_batch does not apply to an engine with a static batch of {static}")
        if streams > 1 and not getattr(session, "thread_safe", False):
            raise ValueError(
                f"streams={streams} needs a session that can run concurrently (ONNX Runtime); "
                f"this {getattr(session, 'kind', type(session).__name__)} session runs one batch at a time: use streams=1"
            )
        self.session = session
        self.streams = int(streams)
        self.micro_batch = None if micro_batch is None else int(micro_batch)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._lock = None if getattr(session, "thread_safe", False) else threading.Lock()

    def run(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 [B,h,w,3]`` → ``(score float32 [B], anomaly_map float32 [B,h,w])``;
        ``EngineRunError`` when the engine fails or returns outputs of the wrong shape."""
        n = len(batch_u8)
        if self.micro_batch is not None:
            bounds = [(s, min(s + self.micro_batch, n)) for s in range(0, n, self.micro_batch)]
        else:
            bounds = split_even(n, self.streams)
        pieces = [batch_u8[s:e] for s, e in bounds]
        if self.streams > 1 and len(pieces) > 1:
            outputs = list(self._threads().map(self._call, pieces))
        else:
            outputs = [self._call(piece) for piece in pieces]
        if len(outputs) == 1:
            return outputs[0]
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def stop(self) -> None:
        """Shut the stream threads down (they restart on the next batch); the session stays open."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _threads(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="pyimgano-stream")
            return self._pool

    def _call(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One engine call per static batch (or one for the whole piece), outputs checked."""
        n = len(batch_u8)
        static = getattr(self.session, "static_batch", None)
        outputs: list[tuple[np.ndarray, np.ndarray]] = []
        step = static or n
        for start in range(0, n, step):
            part = batch_u8[start : start + step]
            feed = pad_batch(part, static) if static else part
            if self._lock is None:
                score, amap = self.session.run(feed)
            else:
                with self._lock:
                    score, amap = self.session.run(feed)
            score, amap = np.asarray(score), np.asarray(amap)
            if score.shape != (len(feed),) or amap.ndim != 3 or amap.shape[0] != len(feed):
                raise EngineRunError(
                    f"engine returned score {score.shape} and anomaly_map {amap.shape} "
                    f"for a batch of {len(feed)}; expected [B] and [B,H,W]"
                )
            outputs.append((score[: len(part)], amap[: len(part)]))
        return (
            np.concatenate([o[0] for o in outputs]).astype(np.float32, copy=False),
            np.concatenate([o[1] for o in outputs]).astype(np.float32, copy=False),
        )


__all__ = ["ScheduledSession", "Session"]

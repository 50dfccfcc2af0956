"""Throughput schedules: how one batch is spread over the CPU cores, and a short timing
run that picks the fastest for this bundle on this machine.

A schedule is ``streams`` concurrent calls of one ONNX Runtime session, each with
``threads // streams`` intra-op threads, and ``micro_batch`` images per call. Which one wins
depends on the model, so it is measured, not guessed: for a PatchCore head, one image per
call on each core keeps every call's activations cache-sized (+20 % on 2 cores); for a
PaDiM head, every call streams all per-position covariances (125 MB at 224 px), so one call
with the whole batch wins. ``tune_schedule`` times the candidates on a synthetic batch of
the model's input size (the graphs' cost does not depend on pixel values).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

#: Seconds each candidate is timed for (after one warm-up call), and the minimum call count.
TUNE_SECONDS = 0.3
TUNE_MIN_CALLS = 3


@dataclass(frozen=True)
class Schedule:
    """``streams`` concurrent engine calls, ``micro_batch`` images each (None: the batch split
    evenly over the streams), ``threads`` intra-op threads per session (None: ORT's default)."""

    streams: int = 1
    micro_batch: int | None = None
    threads: int | None = None

    def describe(self) -> str:
        per_call = "batch split evenly" if self.micro_batch is None else f"{self.micro_batch} image(s) per call"
        return f"{self.streams} stream(s) × {self.threads or 'default'} thread(s), {per_call}"

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


def candidate_schedules(threads: int, batch_size: int, *, static_batch: bool = False) -> list[Schedule]:
    """One call over all ``threads``; and one stream per thread with 1, 2, … images per call
    up to the batch split evenly (only the even split for a static-batch engine). Only the
    first when there is one thread or one image."""
    out = [Schedule(1, None, threads)]
    if threads > 1 and batch_size > 1:
        streams = min(threads, batch_size)
        per_stream = math.ceil(batch_size / streams)
        sizes = [] if static_batch else [m for m in (1, 2, 4, 8, 16) if m < per_stream]
        out += [Schedule(streams, m, max(1, threads // streams)) for m in sizes]
        out.append(Schedule(streams, None, max(1, threads // streams)))
    return out


def images_per_second(run_batch: Callable[[np.ndarray], object], batch: np.ndarray, *, seconds: float | None = None) -> float:
    """Median images/s of ``run_batch(batch)`` over at least ``seconds`` (default
    :data:`TUNE_SECONDS`) and :data:`TUNE_MIN_CALLS` calls, after one warm-up call."""
    seconds = TUNE_SECONDS if seconds is None else seconds
    run_batch(batch)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < TUNE_MIN_CALLS or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        run_batch(batch)
        times.append(time.perf_counter() - t)
    return len(batch) / float(np.median(times))


def synthetic_batch(batch_size: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``uint8 [B, H, W, 3]`` noise: what the timing run feeds the engine."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch_size, int(hw[0]), int(hw[1]), 3), dtype=np.uint8)

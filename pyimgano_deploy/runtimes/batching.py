"""Batching helpers: fixed-size chunks of an iterable, padding for static-batch engines."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")


def iter_chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one may be shorter); consumes lazily."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    it = iter(items)
    while True:
        chunk = list(islice(it, size))
        if not chunk:
            return
        yield chunk


def pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` grown to ``size`` items by repeating its last item (unchanged when big enough)."""
    n = len(batch)
    if n == 0:
        raise ValueError("cannot pad an empty batch")
    if n >= size:
        return batch
    reps = np.repeat(batch[-1:], size - n, axis=0)
    return np.concatenate([batch, reps], axis=0)


def effective_batch_size(requested: int, *, static_batch: int | None, max_batch: int | None) -> int:
    """The batch size actually used: the engine's static batch, else ``requested`` capped at
    the engine's maximum."""
    if requested < 1:
        raise ValueError(f"batch_size must be >= 1, got {requested}")
    if static_batch is not None:
        return int(static_batch)
    if max_batch is not None:
        return max(1, min(int(requested), int(max_batch)))
    return int(requested)


def split_even(n: int, parts: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges cutting ``n`` items into ``min(parts, n)`` contiguous pieces
    whose sizes differ by at most one (larger pieces first)."""
    if n < 0 or parts < 1:
        raise ValueError(f"need n >= 0 and parts >= 1, got n={n}, parts={parts}")
    k = min(parts, n)
    if k == 0:
        return []
    base, extra = divmod(n, k)
    bounds, start = [], 0
    for i in range(k):
        end = start + base + (1 if i < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds

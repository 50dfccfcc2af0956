"""Preparing inputs ahead of the engine: chunks of loaded items, optionally in worker threads.

OpenCV and libjpeg-turbo release the GIL, so ``num_workers`` threads decode and resize while
the engine scores; up to ``_PREFETCH`` chunks are prepared ahead, and items stay in order.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

from pyimgano_deploy.runtimes.batching import iter_chunks

T = TypeVar("T")
_PREFETCH = 2  # chunks prepared ahead of the engine when num_workers > 0


def prepared_chunks(items: Iterable[Any], chunk_size: int, prepare: Callable[[int, Any], T], num_workers: int) -> Iterator[list[T]]:
    """``prepare(index, item)`` of every item, yielded in chunks of ``chunk_size``, in order."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    chunks = iter_chunks(enumerate(items), chunk_size)
    if num_workers == 0:
        for chunk in chunks:
            yield [prepare(i, item) for i, item in chunk]
        return
    pool = ThreadPoolExecutor(num_workers, thread_name_prefix="pyimgano-preprocess")
    try:
        pending: deque[list[Future[T]]] = deque()
        for chunk in chunks:
            pending.append([pool.submit(prepare, i, item) for i, item in chunk])
            if len(pending) > _PREFETCH:
                yield [f.result() for f in pending.popleft()]
        while pending:
            yield [f.result() for f in pending.popleft()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["prepared_chunks"]

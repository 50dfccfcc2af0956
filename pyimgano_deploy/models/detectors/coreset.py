"""Greedy k-centre coreset selection (PatchCore, Roth et al. 2022, §3.2).

The greedy rule is the paper's: start from one point, then repeatedly add the point whose
distance to the nearest already-selected centre is largest. Distances are measured on a
Johnson–Lindenstrauss random projection of the features, as in the paper.

Speed. A plain implementation touches every point on every iteration (N × d floats per
step, ~15k steps for a 10 % coreset of 157k patches), which is memory-bound and too slow on
a small CPU. We keep the exact greedy result but skip work with the triangle inequality:
points are grouped into blocks (a few Lloyd iterations of k-means); for each block we keep
its centroid, its radius and the largest current min-distance inside it. When a new centre
``c`` arrives, a block whose points are all provably farther from ``c`` than their current
min-distance, ``(‖μ_b − c‖ − r_b)² ≥ max_b``, cannot change and is skipped. As the coreset
grows the min-distances shrink and most blocks are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class CoresetStats:
    """What the selection did, for reports and benchmarks."""

    n_points: int
    n_selected: int
    projection_dim: int
    n_blocks: int
    block_updates: int


def random_projection(features: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Gaussian JL projection of ``features [N, D]`` to ``[N, dim]`` (identity when dim ≥ D)."""
    n, d = features.shape
    if dim <= 0 or dim >= d:
        return np.ascontiguousarray(features, dtype=np.float32)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((d, dim)).astype(np.float32) / np.float32(np.sqrt(dim))
    return np.ascontiguousarray(features.astype(np.float32, copy=False) @ proj)


def _partition(x: np.ndarray, n_blocks: int, seed: int, iters: int = 4) -> np.ndarray:
    """Cluster id per row of ``x`` by a few Lloyd iterations on a subsample."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    n_blocks = max(1, min(n_blocks, n))
    centroids = x[rng.choice(n, size=n_blocks, replace=False)].copy()
    sample = x[rng.choice(n, size=min(n, 50 * n_blocks), replace=False)]
    for _ in range(iters):
        assign = _nearest(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, sample)
        counts = np.bincount(assign, minlength=n_blocks).astype(np.float32)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return _nearest(x, centroids)


def _nearest(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    c_sq = (centroids * centroids).sum(1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        xc = x[s : s + chunk]
        d = c_sq[None, :] - 2.0 * (xc @ centroids.T)
        out[s : s + chunk] = d.argmin(1)
    return out


def greedy_coreset(
    features: np.ndarray,
    n_select: int,
    *,
    projection_dim: int = 128,
    seed: int = 0,
    n_blocks: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, CoresetStats]:
    """Indices (sorted ascending, int64) of ``n_select`` rows of ``features [N, D]`` chosen by
    the greedy k-centre rule on a random projection. Deterministic for a given seed.
    ``progress(n)`` is called with the number of newly selected centres, ~100 times in all."""
    n = features.shape[0]
    if not 0 < n_select <= n:
        raise ValueError(f"coreset size must be in 1..{n}, got {n_select}")
    x = random_projection(features, projection_dim, seed)
    if n_select == n:
        return np.arange(n, dtype=np.int64), CoresetStats(n, n, x.shape[1], 1, 0)
    if n_blocks is None:
        n_blocks = int(np.clip(np.sqrt(n) / 2, 1, 512))
    block_of = _partition(x, n_blocks, seed)
    order = np.argsort(block_of, kind="stable")
    xs = np.ascontiguousarray(x[order])
    counts = np.bincount(block_of, minlength=n_blocks)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nonempty = np.flatnonzero(counts)
    offsets_s, offsets_e = offsets[:-1], offsets[1:]

    sq = (xs * xs).sum(1)
    mu = np.zeros((n_blocks, xs.shape[1]), dtype=np.float32)
    radius = np.zeros(n_blocks, dtype=np.float32)
    for b in nonempty:
        pts = xs[offsets_s[b] : offsets_e[b]]
        mu[b] = pts.mean(0)
        radius[b] = np.sqrt(((pts - mu[b]) ** 2).sum(1).max())
    mind = np.full(n, np.inf, dtype=np.float32)
    block_max = np.full(n_blocks, -np.inf, dtype=np.float32)
    block_max[nonempty] = np.inf

    rng = np.random.default_rng(seed)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    current = int(position[int(rng.integers(n))])
    selected = np.empty(n_select, dtype=np.int64)
    starts = offsets_s[nonempty]
    updates = 0
    report_every = max(1, n_select // 100)
    for i in range(n_select):
        if progress is not None and i and i % report_every == 0:
            progress(report_every)
        selected[i] = current
        c = xs[current]
        c_sq = float(sq[current])
        dc = np.sqrt(((mu - c) ** 2).sum(1))
        lower = np.maximum(dc - radius, 0.0) ** 2
        active = np.flatnonzero(lower < block_max)
        if len(active) * 4 > len(nonempty):
            # Most blocks may change: one BLAS call over everything beats a Python loop.
            np.minimum(mind, sq - 2.0 * (xs @ c) + c_sq, out=mind)
            block_max[nonempty] = np.maximum.reduceat(mind, starts)
            updates += len(nonempty)
        else:
            for b in active:
                s, e = offsets_s[b], offsets_e[b]
                seg = mind[s:e]
                np.minimum(seg, sq[s:e] - 2.0 * (xs[s:e] @ c) + c_sq, out=seg)
                block_max[b] = seg.max()
            updates += len(active)
        if i + 1 < n_select:
            b = int(block_max.argmax())
            current = int(offsets_s[b] + mind[offsets_s[b] : offsets_e[b]].argmax())
    chosen = np.sort(order[selected])
    return chosen, CoresetStats(n, n_select, xs.shape[1], int(len(nonempty)), updates)


def greedy_coreset_reference(features: np.ndarray, n_select: int, *, projection_dim: int = 128, seed: int = 0) -> np.ndarray:
    """The textbook O(N·k) greedy loop, kept for tests: same rule, no pruning."""
    x = random_projection(features, projection_dim, seed)
    n = x.shape[0]
    sq = (x * x).sum(1)
    mind = np.full(n, np.inf, dtype=np.float32)
    rng = np.random.default_rng(seed)
    current = int(rng.integers(n))
    selected = []
    for _ in range(n_select):
        selected.append(current)
        d = sq - 2.0 * (x @ x[current]) + sq[current]
        np.minimum(mind, d, out=mind)
        current = int(mind.argmax())
    return np.sort(np.asarray(selected, dtype=np.int64))

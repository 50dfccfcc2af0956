"""Greedy k-centre coreset selection (PatchCore, Roth et al. 2022, §3.2).

The rule is the paper's: start from one (seeded) point, then repeatedly add the point whose
distance to its nearest selected centre is largest. Distances are measured on a
Johnson–Lindenstrauss random projection of the features, as in the paper.

Speed. The textbook loop streams all ``N × p`` projected features once per selected centre
(80 MB per step for 157k patches at p = 128, ~15k steps): memory-bound, ~30 s on two cores.
We make every distance *exact* instead, so the work can be reordered freely without changing
the result:

- the projection is quantised to integers in ``[-L, L]`` with ``4·p·L² < 2²⁴``, so
  ``‖x‖² − 2·x·c + ‖c‖²`` is an integer that float32 represents exactly whatever the
  summation order (BLAS gemv, GEMM blocks: identical values, identical ties);
- centres are then applied lazily: a small candidate set (the current top points by
  min-distance) is kept exact with one gemv per centre, while the other points are updated
  in GEMM blocks of ``block`` centres. Points outside the candidate set are known to be
  below the threshold ``tau``; whenever the best candidate falls below ``tau`` the set is
  widened (or the pending centres are flushed to every point).

The selection equals :func:`greedy_coreset_reference` — the textbook loop on the same
quantised projection, first-index tie-breaking included — which a test checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

_EXACT_LIMIT = 2**24  # float32 represents every integer below this exactly
#: width of the random projection the selection measures distances in (the paper's 128)
DEFAULT_PROJECTION_DIM = 128


@dataclass(frozen=True)
class CoresetStats:
    """What the selection did, for reports and benchmarks."""

    n_points: int
    n_selected: int
    projection_dim: int
    levels: int
    flushes: int = 0
    expansions: int = 0
    early_flushes: int = 0


def random_projection(features: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Gaussian JL projection of ``features [N, D]`` to ``[N, dim]`` (identity when dim ≤ 0 or ≥ D)."""
    n, d = features.shape
    if dim <= 0 or dim >= d:
        return np.ascontiguousarray(features, dtype=np.float32)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((d, dim)).astype(np.float32) / np.float32(np.sqrt(dim))
    return np.ascontiguousarray(features.astype(np.float32, copy=False) @ proj)


def quantize(x: np.ndarray, *, in_place: bool = False) -> tuple[np.ndarray, int]:
    """``x`` rounded to integers in ``[-L, L]`` (float32) with ``4·p·L² < 2²⁴``; returns (q, L).
    ``in_place`` reuses a float32 ``x`` the caller owns: a fit's projection is hundreds of MB, and
    each temporary copy of it adds that much to the peak."""
    p = x.shape[1]
    levels = int(np.floor(np.sqrt((_EXACT_LIMIT - 1) / (4.0 * p))))
    if levels < 15:
        raise ValueError(f"projection dimension {p} is too large for exact float32 distances; use <= 4096")
    scale = np.float32(levels / max(float(x.max()), -float(x.min()), 1e-30))  # max |x| without an |x| copy
    q = x if in_place and x.dtype == np.float32 else x.astype(np.float32)
    np.multiply(q, scale, out=q)
    return np.rint(q, out=q), levels


def _projected(features: np.ndarray, projection_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    x = random_projection(features, projection_dim, seed)
    q, levels = quantize(x, in_place=x is not features)  # never round the caller's features
    return q, np.einsum("ij,ij->i", q, q), levels


def _min_sq_dist(q: np.ndarray, sq: np.ndarray, centres: np.ndarray, rows: np.ndarray | None, chunk: int = 4096) -> np.ndarray:
    """Exact ``min_j ‖x − c_j‖²`` over ``centres`` for ``rows`` of ``q`` (all rows when None)."""
    pts = q if rows is None else q[rows]
    psq = sq if rows is None else sq[rows]
    c_neg2 = np.ascontiguousarray(q[centres].T * np.float32(-2.0))
    c_sq = sq[centres]
    out = np.empty(len(pts), dtype=np.float32)
    buf = np.empty((min(chunk, len(pts)), len(centres)), dtype=np.float32)
    for s in range(0, len(pts), chunk):
        block = pts[s : s + chunk]
        g = buf[: len(block)]
        np.matmul(block, c_neg2, out=g)
        g += c_sq
        g.min(axis=1, out=out[s : s + chunk])
    out += psq
    return out


class _LazyGreedy:
    """State of the lazy evaluation (see the module docstring for the invariant)."""

    def __init__(self, q: np.ndarray, sq: np.ndarray, block: int, top: int) -> None:
        self.q, self.sq, self.block = q, sq, block
        self.k_top = min(top, len(q))
        self.stale = np.full(len(q), np.inf, dtype=np.float32)  # exact over the applied centres
        self.pending: list[int] = []
        self.flushes = self.expansions = self.early_flushes = 0

    def flush(self) -> None:
        """Apply pending centres to every point and rebuild the candidate set (top points)."""
        if self.pending:
            ids = np.asarray(self.pending)
            np.minimum(self.stale, _min_sq_dist(self.q, self.sq, ids, None), out=self.stale)
            self.pending.clear()
            self.flushes += 1
        n = len(self.stale)
        self.tau = float(np.partition(self.stale, n - self.k_top)[n - self.k_top])
        self._set_candidates(np.flatnonzero(self.stale >= self.tau), None)

    def _set_candidates(self, cand: np.ndarray, values: np.ndarray | None) -> None:
        self.cand = cand
        self.val = self.stale[cand].copy() if values is None else values
        self.cq, self.csq = self.q[cand], self.sq[cand]

    def add(self, centre: int, first: bool) -> int:
        """Register ``centre`` and return the next one (the exact argmax, first index on ties)."""
        self.pending.append(centre)
        if first or len(self.pending) == self.block:
            self.flush()
        else:
            d = self.csq - 2.0 * (self.cq @ self.q[centre]) + self.sq[centre]
            np.minimum(self.val, d, out=self.val)
        best = float(self.val.max())
        if best < self.tau:  # a point outside the set may reach `best`: widen to {stale >= best}
            self.expansions += 1
            new = np.setdiff1d(np.flatnonzero(self.stale >= best), self.cand, assume_unique=True)
            if len(new) > 4 * self.k_top:
                self.early_flushes += 1
                self.flush()
            elif len(new):
                vals = np.minimum(self.stale[new], _min_sq_dist(self.q, self.sq, np.asarray(self.pending), new))
                cand = np.concatenate([self.cand, new])
                order = np.argsort(cand, kind="stable")
                self._set_candidates(cand[order], np.concatenate([self.val, vals])[order])
                self.tau = best
            else:
                self.tau = best
            best = float(self.val.max())
        return int(self.cand[np.flatnonzero(self.val == best)[0]])  # cand is sorted: first index


def greedy_coreset(
    features: np.ndarray,
    n_select: int,
    *,
    projection_dim: int = DEFAULT_PROJECTION_DIM,
    seed: int = 0,
    block: int = 128,
    top: int = 1024,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, CoresetStats]:
    """Indices (sorted ascending, int64) of ``n_select`` rows of ``features [N, D]`` chosen by
    the greedy k-centre rule on a quantised random projection; deterministic for a seed and
    identical to :func:`greedy_coreset_reference`. ``progress(n)`` is called with the number
    of newly selected centres, ~100 times in all."""
    n = features.shape[0]
    if not 0 < n_select <= n:
        raise ValueError(f"coreset size must be in 1..{n}, got {n_select}")
    q, sq, levels = _projected(features, projection_dim, seed)
    state = _LazyGreedy(q, sq, block=max(1, block), top=max(1, top))
    current = int(np.random.default_rng(seed).integers(n))
    selected = np.empty(n_select, dtype=np.int64)
    report_every = max(1, n_select // 100)
    for i in range(n_select):
        selected[i] = current
        if progress is not None and i and i % report_every == 0:
            progress(report_every)
        if i + 1 < n_select:
            current = state.add(current, first=i == 0)
    stats = CoresetStats(n, n_select, q.shape[1], levels, state.flushes, state.expansions, state.early_flushes)
    return np.sort(selected), stats


def greedy_coreset_reference(features: np.ndarray, n_select: int, *, projection_dim: int = DEFAULT_PROJECTION_DIM, seed: int = 0) -> np.ndarray:
    """The textbook O(N·k) greedy loop on the same quantised projection (the definition)."""
    q, sq, _ = _projected(features, projection_dim, seed)
    mind = np.full(q.shape[0], np.inf, dtype=np.float32)
    current = int(np.random.default_rng(seed).integers(q.shape[0]))
    selected = []
    for _ in range(n_select):
        selected.append(current)
        np.minimum(mind, sq - 2.0 * (q @ q[current]) + sq[current], out=mind)
        current = int(mind.argmax())
    return np.sort(np.asarray(selected, dtype=np.int64))

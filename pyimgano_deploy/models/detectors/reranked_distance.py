"""Re-ranked nearest-neighbour head: cheap candidates, then the exact distance for those only.

Stage 1 finds ``c`` candidate rows per query. Here (:class:`RerankedNearestNeighbourDistance`) it
projects queries and bank onto the bank's ``r`` leading principal directions and takes the ``c``
rows nearest in that space (one ``[R, r + 1] × [r + 1, M]`` GEMM and a TopK); the int8 engine's
head takes them from int8 distances in such a projection (:mod:`.int8_candidates`). Stage 2
(:class:`TwoStageNearestNeighbourDistance`) gathers those ``c`` rows and computes their exact
fp32 squared distances. The result equals :class:`~.layers.NearestNeighbourDistance` whenever a
query's true k nearest rows are among its ``c`` candidates; otherwise it is the distance to the
nearest candidate, never smaller than the true one. Projected distances are a lower bound of the true ones (an
orthonormal projection), so a row far in the projection is far in fact.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pyimgano_deploy.models.detectors.layers import NearestNeighbourDistance, augmented_bank
from pyimgano_deploy.models.detectors.nn_head_options import CANDIDATE_SOURCES, PCA_PROJECTION_DIM


def principal_axes(bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Variances ``[D]`` (fp64, descending) and principal directions ``[D, D]`` (orthonormal
    columns in that order, fp32) of ``bank [M, D]``: eigen-decomposition of the D × D covariance
    in fp64, sign-fixed so it is deterministic."""
    x = bank.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    vals, vecs = torch.linalg.eigh(x.t() @ x)
    order = torch.argsort(vals, descending=True)
    vecs = vecs[:, order]
    signs = torch.sign(vecs[vecs.abs().argmax(0), torch.arange(vecs.shape[1])])
    return vals[order].clamp(min=0.0), (vecs * signs).to(torch.float32).contiguous()


def principal_directions(bank: torch.Tensor, r: int) -> torch.Tensor:
    """The ``r`` leading principal directions of ``bank [M, D]`` as orthonormal columns ``[D, r]`` (fp32)."""
    return principal_axes(bank)[1][:, :r].contiguous()


class TwoStageNearestNeighbourDistance(nn.Module):
    """Drop-in for :class:`NearestNeighbourDistance` (``forward``, ``nearest``, ``bank``,
    ``augment_queries``, ``partial_sq_distances``) with a two-stage search: subclasses give
    :meth:`candidates` (indices ``[R, c]``), this class re-ranks them exactly; ``candidates`` ≥ k."""

    def __init__(self, bank: torch.Tensor, *, k: int = 1, candidates: int = 16) -> None:
        super().__init__()
        m = bank.shape[0]
        if not 1 <= k <= candidates:
            raise ValueError(f"candidates must be >= k ({k}, the neighbours the head averages), got {candidates}: "
                             "raise --nn-rerank or --int8-candidates")
        self.k = int(k)
        self.n_candidates = int(min(candidates, m))
        bank = bank.to(torch.float32).contiguous()
        self.register_buffer("bank_rows", bank)
        self.register_buffer("bank_sq", (bank * bank).sum(1))

    @property
    def bank(self) -> torch.Tensor:
        return self.bank_rows

    augment_queries = staticmethod(NearestNeighbourDistance.augment_queries)

    def partial_sq_distances(self, q1: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Exact ``‖B‖² − 2·q·Bᵀ`` over bank rows ``start:end`` (few queries only: the image-score
        re-weighting), from augmented ``q1 [R, D + 1]``."""
        rows = self.bank_rows[start:end]
        return self.bank_sq[start:end].unsqueeze(0) - 2.0 * nn.functional.linear(q1[:, :-1], rows)

    def candidates(self, q: torch.Tensor) -> torch.Tensor:
        """Stage 1: ``q [R, D]`` fp32 → indices ``[R, c]`` of candidate bank rows."""
        raise NotImplementedError

    def _candidate_sq_distances(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2: exact squared distances ``[R, c]`` to the candidates, and their indices ``[R, c]``."""
        idx = self.candidates(q)
        rows = self.bank_rows.index_select(0, idx.reshape(-1)).reshape(q.shape[0], idx.shape[1], -1)
        cross = torch.bmm(rows, q.unsqueeze(2)).squeeze(2)  # [R, c]
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * cross + self.bank_sq.index_select(0, idx.reshape(-1)).reshape(idx.shape)
        return d2, idx

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        d2, _ = self._candidate_sq_distances(q.to(torch.float32))
        if self.k == 1:
            return d2.amin(dim=1).clamp(min=0.0).sqrt()
        return torch.topk(d2, self.k, dim=1, largest=False).values.clamp(min=0.0).sqrt().mean(dim=1)

    nearest = NearestNeighbourDistance.nearest  # the nearest of two_nearest, as in the full head

    def two_nearest(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`~.layers.NearestNeighbourDistance.two_nearest`, over the candidates (one candidate: given twice)."""
        d2, idx = self._candidate_sq_distances(q.to(torch.float32))
        best, which = torch.topk(d2, min(2, self.n_candidates), dim=1, largest=False)
        idx = idx.gather(1, which)
        if self.n_candidates == 1:
            best, idx = best.repeat(1, 2), idx.repeat(1, 2)
        return best.clamp(min=0.0), idx


class RerankedNearestNeighbourDistance(TwoStageNearestNeighbourDistance):
    """Candidates = the bank rows nearest in the bank's ``projection_dim`` leading principal directions."""

    def __init__(self, bank: torch.Tensor, *, k: int = 1, candidates: int = 16, projection_dim: int = PCA_PROJECTION_DIM) -> None:
        super().__init__(bank, k=k, candidates=candidates)
        self.projection_dim = int(min(projection_dim, bank.shape[1]))
        proj = principal_directions(self.bank_rows, self.projection_dim)
        self.register_buffer("projection", proj)
        self.register_buffer("bank_proj_aug", augmented_bank(self.bank_rows @ proj))

    def candidates(self, q: torch.Tensor) -> torch.Tensor:
        qp = self.augment_queries(q @ self.projection)
        return torch.topk(torch.mm(qp, self.bank_proj_aug), self.n_candidates, dim=1, largest=False).indices


def _make_head(bank: torch.Tensor, k: int, candidates: int, projection_dim: int | None, source: str) -> nn.Module:
    if source == "int8":
        from pyimgano_deploy.models.detectors.int8_candidates import Int8RerankedNearestNeighbourDistance

        return Int8RerankedNearestNeighbourDistance(bank, k=k, candidates=candidates, projection_dim=projection_dim)
    dim = PCA_PROJECTION_DIM if projection_dim is None else projection_dim
    return RerankedNearestNeighbourDistance(bank, k=k, candidates=candidates, projection_dim=dim)


def rerank_nearest_neighbours(module: nn.Module, *, candidates: int, projection_dim: int | None = None, source: str = "pca") -> int:
    """Replace, in place, every :class:`NearestNeighbourDistance` inside ``module`` by a re-ranked
    one over the same bank, with candidates from ``source`` (:data:`CANDIDATE_SOURCES`) in
    ``projection_dim`` principal directions (``None``: :data:`PCA_PROJECTION_DIM` for ``pca``, the
    variance rule of the int8 head for ``int8``); returns how many were replaced. (Used on a copy
    at export: the detector's own full head stays the eager reference of the parity gate.)"""
    if source not in CANDIDATE_SOURCES:
        raise ValueError(f"candidate source must be one of {list(CANDIDATE_SOURCES)}, got {source!r}")
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, NearestNeighbourDistance):
                setattr(parent, name, _make_head(child.bank.detach(), child.k, candidates, projection_dim, source))
                replaced += 1
    return replaced


class NoNearestNeighbourHeadError(ValueError):
    """An option that needs a nearest-neighbour head was given for a detector without one."""


def reranked_copy(module: nn.Module, *, candidates: int, projection_dim: int | None = None, source: str = "pca") -> nn.Module:
    """A copy of the inference ``module`` with re-ranked nearest-neighbour heads;
    :class:`NoNearestNeighbourHeadError` when it has none (not a memory-bank detector)."""
    out = copy.deepcopy(module)
    if rerank_nearest_neighbours(out, candidates=candidates, projection_dim=projection_dim, source=source) == 0:
        raise NoNearestNeighbourHeadError(f"{type(module).__name__} has no nearest-neighbour head to re-rank: only memory-bank detectors "
                         "(PatchCore, SoftPatch, AnomalyDINO) have one")
    return out

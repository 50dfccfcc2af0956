"""Export-friendly torch layers shared by detectors.

Every layer here traces to plain ONNX ops (AveragePool, Resize, Conv, MatMul, ReduceMin,
TopK, Gather) with static shapes except the batch axis, per ARCHITECTURE §4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def channel_pool_matrix(d_in: int, d_out: int) -> torch.Tensor:
    """``[d_out, d_in]`` matrix equal to 1-D adaptive average pooling over channels.

    PatchCore reduces feature dimensions by adaptive average pooling along the channel
    axis; as a fixed matrix it exports as one MatMul instead of a reshape-dependent pool.
    """
    m = torch.zeros(d_out, d_in)
    for i in range(d_out):
        start = (i * d_in) // d_out
        end = -((-(i + 1) * d_in) // d_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class PatchEmbedding(nn.Module):
    """Feature maps of several stages → one patch embedding ``[B, D, h, w]``.

    Each stage is aggregated over its 3×3 neighbourhood (average, zero padding counted, as
    in PatchCore), optionally reduced per stage to ``stage_dim`` channels, upsampled
    bilinearly to the grid of the first (finest) stage, and concatenated; an optional final
    projection reduces the concatenation to ``out_dim`` channels.
    """

    def __init__(
        self,
        channels: list[int],
        strides: list[int],
        grid: tuple[int, int],
        *,
        aggregate: bool = True,
        projection_dim: int | None = None,
        select_channels: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.aggregate = aggregate
        # Decided here, not from runtime shapes, so tracing records no shape-dependent branch.
        self.resize = [int(s) != int(strides[0]) for s in strides]
        d_total = int(sum(channels))
        if select_channels is not None:
            self.register_buffer("select", select_channels.to(torch.int64), persistent=True)
            d_total = int(select_channels.numel())
        else:
            self.select = None
        if projection_dim is not None and projection_dim < d_total:
            self.register_buffer("projection", channel_pool_matrix(d_total, projection_dim), persistent=True)
            self.out_dim = int(projection_dim)
        else:
            self.projection = None
            self.out_dim = d_total

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        parts = []
        for f, resize in zip(features, self.resize):
            if self.aggregate:
                f = F.avg_pool2d(f, kernel_size=3, stride=1, padding=1, count_include_pad=True)
            if resize:
                f = F.interpolate(f, size=self.grid, mode="bilinear", align_corners=False)
            parts.append(f)
        emb = torch.cat(parts, dim=1)
        if self.select is not None:
            emb = emb.index_select(1, self.select)
        if self.projection is not None:
            emb = torch.einsum("bchw,dc->bdhw", emb, self.projection.to(emb.dtype))
        return emb


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``ceil(4σ)`` (truncation error < 1e-4)."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(torch.float32)


class AnomalyMapFinisher(nn.Module):
    """Patch scores ``[B, h, w]`` → anomaly map ``[B, H, W]`` (bilinear upsampling to the model
    input size, then a separable Gaussian blur with reflect padding; σ = 0 disables it)."""

    def __init__(self, out_size: tuple[int, int], sigma: float = 4.0) -> None:
        super().__init__()
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.sigma = float(sigma)
        if sigma > 0:
            k = gaussian_kernel1d(sigma)
            self.register_buffer("kernel_x", k.view(1, 1, 1, -1), persistent=False)
            self.register_buffer("kernel_y", k.view(1, 1, -1, 1), persistent=False)
            self.radius = (k.numel() - 1) // 2
        else:
            self.kernel_x = self.kernel_y = None
            self.radius = 0

    def forward(self, patch_scores: torch.Tensor) -> torch.Tensor:
        m = F.interpolate(patch_scores.unsqueeze(1), size=self.out_size, mode="bilinear", align_corners=False)
        if self.kernel_x is not None:
            r = self.radius
            m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="reflect"), self.kernel_x)
            m = F.conv2d(F.pad(m, (0, 0, r, r), mode="reflect"), self.kernel_y)
        # An explicit reshape (not squeeze) keeps H and W static in the exported graph.
        return m.reshape(-1, self.out_size[0], self.out_size[1])


class NearestNeighbourDistance(nn.Module):
    """Distance of each query row to its k nearest memory-bank rows (ARCHITECTURE §4).

    Squared distances use the expanded form ``‖q‖² − 2·q·Bᵀ + ‖B‖²``. The bank is stored
    as ``−2·Bᵀ`` (``[D, M]``, laid out for one GEMM) with ``‖B‖²`` precomputed, so each chunk
    is a single ``Gemm`` whose bias is ``‖B‖²``; ``‖q‖²`` is constant per row and is added
    after the min / top-k, which keeps the only full-size element-wise work in the GEMM.
    The bank is split into fixed, static chunks so no intermediate exceeds ``chunk × rows``
    elements. Returns ``[R]`` (mean over the k nearest, after clamping at 0 and sqrt), fp32.
    """

    def __init__(self, bank: torch.Tensor, *, k: int = 1, chunk_size: int = 16384) -> None:
        super().__init__()
        if bank.ndim != 2 or bank.shape[0] < 1:
            raise ValueError(f"memory bank must be [M, D] with M >= 1, got {tuple(bank.shape)}")
        m = bank.shape[0]
        if not 1 <= k <= min(m, 3840):
            raise ValueError(f"k must be in 1..min(bank size {m}, 3840 (TensorRT's TopK limit)), got {k}")
        self.k = int(k)
        bank = bank.to(torch.float32)
        self.register_buffer("bank_t_neg2", (-2.0 * bank).t().contiguous())
        self.register_buffer("bank_sq", (bank * bank).sum(1))
        self.chunks = [(s, min(s + chunk_size, m)) for s in range(0, m, chunk_size)]

    @property
    def bank(self) -> torch.Tensor:
        """The memory bank ``[M, D]`` (exact: scaling by −2 and back is lossless in fp32)."""
        return self.bank_t_neg2.t() * -0.5

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        q = q.to(torch.float32)
        q_sq = (q * q).sum(1, keepdim=True)
        parts = []
        for s, e in self.chunks:
            partial = torch.addmm(self.bank_sq[s:e], q, self.bank_t_neg2[:, s:e])  # ‖B‖² − 2·q·Bᵀ
            if self.k == 1:
                parts.append(partial.amin(dim=1, keepdim=True))
            else:
                parts.append(torch.topk(partial, min(self.k, e - s), dim=1, largest=False).values)
        partial = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self.k == 1:
            d2 = partial.amin(dim=1, keepdim=True) + q_sq
        else:
            d2 = torch.topk(partial, self.k, dim=1, largest=False).values + q_sq
        d = d2.clamp(min=0.0).sqrt()
        return d.squeeze(1) if self.k == 1 else d.mean(dim=1)


class MahalanobisDistance(nn.Module):
    """Per-position Mahalanobis distance (PaDiM) as batched matmuls.

    ``mean [P, d]`` and ``inv_cov [P, d, d]`` are constants; input ``[B, d, h, w]`` with
    ``P = h·w``; output ``[B, h, w]`` fp32.
    """

    def __init__(self, mean: torch.Tensor, inv_cov: torch.Tensor, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.register_buffer("mean", mean.to(torch.float32).contiguous())
        self.register_buffer("inv_cov", inv_cov.to(torch.float32).contiguous())

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        emb = emb.to(torch.float32)
        x = emb.flatten(2).permute(2, 0, 1)  # [P, B, d]
        diff = x - self.mean.unsqueeze(1)
        left = torch.bmm(diff, self.inv_cov)  # [P, B, d]
        m2 = (left * diff).sum(-1).clamp(min=0.0)  # [P, B]
        return m2.sqrt().t().reshape(-1, self.grid[0], self.grid[1])

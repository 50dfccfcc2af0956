"""Export-friendly torch layers shared by detectors.

Every layer here traces to plain ONNX ops (AveragePool, Resize, Concat, MatMul/Gemm, ReduceMin,
TopK, Gather) with static shapes except the batch axis, per ARCHITECTURE §4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pyimgano_deploy.models.detectors.params import require_neighbourhood


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

    Each stage is averaged over its ``neighbourhood × neighbourhood`` positions (zero padding
    counted, as in PatchCore; 1 = no aggregation), upsampled bilinearly to the grid of the
    first (finest) stage, and concatenated; an optional final projection reduces the concatenation to
    ``projection_dim`` channels. ``select_channels`` (sorted, unique indices into the
    concatenation, PaDiM's random subset) is applied per stage *before* aggregation and
    upsampling: both act per channel, so the result is identical, and unselected channels
    are never upsampled or copied.
    """

    def __init__(
        self,
        channels: list[int],
        strides: list[int],
        grid: tuple[int, int],
        *,
        neighbourhood: int = 3,
        projection_dim: int | None = None,
        select_channels: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.neighbourhood = require_neighbourhood(neighbourhood)
        self.channels = [int(c) for c in channels]
        # Decided here, not from runtime shapes, so tracing records no shape-dependent branch.
        self.resize = [int(s) != int(strides[0]) for s in strides]
        d_total = int(sum(channels))
        self.stage_keep: list[str] = ["all"] * len(self.channels)
        if select_channels is not None:
            sel = select_channels.to(torch.int64).flatten()
            if sel.numel() < 1 or bool((sel[1:] <= sel[:-1]).any()) or int(sel[0]) < 0 or int(sel[-1]) >= d_total:
                raise ValueError(f"select_channels must be sorted, unique indices in 0..{d_total - 1}, got {sel.tolist()[:8]}…")
            self.register_buffer("select", sel, persistent=True)
            self._split_selection()
            self.register_load_state_dict_post_hook(lambda module, _keys: module._split_selection())
            d_total = int(sel.numel())
        else:
            self.select = None
        if projection_dim is not None and projection_dim < d_total:
            self.register_buffer("projection", channel_pool_matrix(d_total, projection_dim), persistent=True)
            self.out_dim = int(projection_dim)
        else:
            self.projection = None
            self.out_dim = d_total

    @classmethod
    def of_stages(cls, extractor: nn.Module, stages: tuple[str, ...] | list[str], grid: tuple[int, int], **kwargs: object) -> "PatchEmbedding":
        """The embedding of ``stages`` of a feature extractor (their channels and strides)."""
        return cls([extractor.stage_channels[s] for s in stages], [extractor.stage_strides[s] for s in stages], grid, **kwargs)  # type: ignore[attr-defined, index, arg-type]

    def _split_selection(self) -> None:
        """``select`` → per-stage local indices (buffers ``select_stage{i}``) and a mode per
        stage: ``all`` (no gather), ``some`` (gather) or ``none`` (stage dropped)."""
        offset = 0
        for i, c in enumerate(self.channels):
            local = self.select[(self.select >= offset) & (self.select < offset + c)] - offset
            self.stage_keep[i] = "all" if local.numel() == c else ("none" if local.numel() == 0 else "some")
            self.register_buffer(f"select_stage{i}", local.contiguous(), persistent=False)
            offset += c

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        parts = []
        for i, (f, resize) in enumerate(zip(features, self.resize)):
            keep = self.stage_keep[i]
            if keep == "none":
                continue
            if keep == "some":
                f = f.index_select(1, getattr(self, f"select_stage{i}"))
            if self.neighbourhood > 1:
                p = self.neighbourhood
                f = F.avg_pool2d(f, kernel_size=p, stride=1, padding=p // 2, count_include_pad=True)
            if resize:
                f = F.interpolate(f, size=self.grid, mode="bilinear", align_corners=False)
            parts.append(f)
        emb = torch.cat(parts, dim=1)
        if self.projection is not None:
            emb = torch.einsum("bchw,dc->bdhw", emb, self.projection.to(emb.dtype))
        return emb


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian, radius ``ceil(4σ)`` (truncation error < 1e-4)."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def resample_blur_matrix(n_in: int, n_out: int, sigma: float) -> torch.Tensor:
    """``[n_out, n_in]`` float64 matrix of one axis of :class:`AnomalyMapFinisher`.

    Linear resampling (``align_corners=False``) from ``n_in`` to ``n_out`` samples followed
    by a Gaussian blur with reflect padding (σ = 0: no blur), obtained by pushing the
    identity basis through exactly those operations. Both are linear and act on one axis
    each, so the 2-D map operation is ``A_rows · P · A_colsᵀ``.
    """
    basis = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)  # [n_in, 1, n_in]: one impulse per row
    out = F.interpolate(basis, size=n_out, mode="linear", align_corners=False)  # [n_in, 1, n_out]
    if sigma > 0:
        k = gaussian_kernel1d(sigma, torch.float64)
        r = (k.numel() - 1) // 2
        if r >= n_out:
            raise ValueError(f"blur sigma {sigma} needs a kernel radius of {r} px, which reflect padding allows only on maps larger than {r} px; the map is {n_out} px: lower blur_sigma or raise image_size")
        out = F.conv1d(F.pad(out, (r, r), mode="reflect"), k.view(1, 1, -1))
    return out.squeeze(1).t().contiguous()


class AnomalyMapFinisher(nn.Module):
    """Patch scores ``[B, h, w]`` → anomaly map ``[B, H, W]`` float32: bilinear upsampling to
    the model input size, then a separable Gaussian blur with reflect padding (σ = 0
    disables it).

    Both steps are linear and separable, so they are folded into two constant matrices
    (``rows [H, h]``, ``cols_t [w, W]``) and the map is ``rows · P · cols_t``: two small
    MatMuls instead of Resize → Pad → Conv → Pad → Conv on a 1-channel map (which runtimes
    pad to a full vector of channels). Same operator up to fp32 rounding of the matrices.
    """

    def __init__(self, out_size: tuple[int, int], sigma: float = 4.0, *, in_size: tuple[int, int]) -> None:
        super().__init__()
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.in_size = (int(in_size[0]), int(in_size[1]))
        self.sigma = float(sigma)
        rows = resample_blur_matrix(self.in_size[0], self.out_size[0], self.sigma)
        cols = resample_blur_matrix(self.in_size[1], self.out_size[1], self.sigma)
        # Derived from (in_size, out_size, sigma), so not saved with the detector's state.
        self.register_buffer("rows", rows.to(torch.float32), persistent=False)
        self.register_buffer("cols_t", cols.t().contiguous().to(torch.float32), persistent=False)

    def forward(self, patch_scores: torch.Tensor) -> torch.Tensor:
        p = patch_scores.to(torch.float32).reshape(-1, self.in_size[0], self.in_size[1])
        return torch.matmul(torch.matmul(self.rows, p), self.cols_t)


class NearestNeighbourDistance(nn.Module):
    """Distance of each query row to its k nearest memory-bank rows (ARCHITECTURE §4).

    Squared distances use the expanded form ``‖q‖² − 2·q·Bᵀ + ‖B‖²``. The bank is stored
    augmented, ``bank_aug = [−2·Bᵀ; ‖B‖²]`` (``[D + 1, M]``), and each query gets a constant
    1 appended, so ``[q, 1] · bank_aug = ‖B‖² − 2·q·Bᵀ`` is one bias-free GEMM:
    a GEMM bias costs a full extra pass over the ``rows × M`` output (≈ 30 % of the distance
    time in ONNX Runtime). ``‖q‖²`` is constant per row and is added after the min / top-k,
    so nothing else touches the full-size product. The bank is split into fixed, static
    chunks so no intermediate exceeds ``chunk × rows`` elements. Returns ``[R]`` (mean over
    the k nearest, after clamping at 0 and sqrt), fp32.
    """

    def __init__(self, bank: torch.Tensor, *, k: int = 1, chunk_size: int = 16384) -> None:
        super().__init__()
        if bank.ndim != 2 or bank.shape[0] < 1:
            raise ValueError(f"memory bank must be [M, D] with M >= 1, got {tuple(bank.shape)}")
        m = bank.shape[0]
        if not 1 <= k <= min(m, 3840):
            raise ValueError(f"k must be in 1..min(bank size {m}, 3840 (TensorRT's TopK limit)), got {k}")
        self.k = int(k)
        self.register_buffer("bank_aug", augmented_bank(bank))
        self.chunks = [(s, min(s + chunk_size, m)) for s in range(0, m, chunk_size)]
        self._register_load_state_dict_pre_hook(_upgrade_split_bank_state)

    @property
    def bank(self) -> torch.Tensor:
        """The memory bank ``[M, D]`` (exact: scaling by −2 and back is lossless in fp32)."""
        return self.bank_aug[:-1].t() * -0.5

    @staticmethod
    def augment_queries(q: torch.Tensor) -> torch.Tensor:
        """``q [R, D]`` → ``[q, 1]`` ``[R, D + 1]`` fp32, the left operand of the distance GEMM."""
        q = q.to(torch.float32)
        # cat with ones_like (Shape → ConstantOfShape → Concat), not F.pad: the exporter
        # turns a pad into a chain of ops that compute the pads array at run time.
        return torch.cat([q, torch.ones_like(q[:, :1])], dim=1)

    def partial_sq_distances(self, q1: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """``‖B‖² − 2·q·Bᵀ`` for bank columns ``start:end``: augmented ``q1 [R, D + 1]`` → ``[R, end − start]``."""
        return torch.mm(q1, self.bank_aug[:, start:end])

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        q = q.to(torch.float32)
        q_sq = (q * q).sum(1, keepdim=True)
        q1 = self.augment_queries(q)
        parts = []
        for s, e in self.chunks:
            partial = self.partial_sq_distances(q1, s, e)
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

    def nearest(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance to the nearest bank row and that row's index: ``q [R, D]`` → (``[R]`` fp32, ``[R]`` int64)."""
        d2, idx = self.two_nearest(q)
        return d2[:, 0].sqrt(), idx[:, 0]

    def two_nearest(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Squared distances to the two nearest bank rows, ascending, and their indices:
        ``q [R, D]`` → (``[R, 2]`` fp32, ``[R, 2]`` int64); a one-row bank gives its row twice. One
        TopK per chunk: in ONNX Runtime a TopK(2) costs half of the ReduceMin + ArgMin pair that
        :meth:`nearest` exports to."""
        q = q.to(torch.float32)
        q_sq = (q * q).sum(1, keepdim=True)
        q1 = self.augment_queries(q)
        values, indices = [], []
        for s, e in self.chunks:
            v, i = torch.topk(self.partial_sq_distances(q1, s, e), min(2, e - s), dim=1, largest=False)
            values.append(v)
            indices.append(i + s)
        best, idx = values[0], indices[0]
        if len(values) > 1:
            best, which = torch.topk(torch.cat(values, dim=1), 2, dim=1, largest=False)
            idx = torch.cat(indices, dim=1).gather(1, which)
        elif self.chunks[0][1] == 1:  # a one-row bank
            best, idx = best.repeat(1, 2), idx.repeat(1, 2)
        return (best + q_sq).clamp(min=0.0), idx


def augmented_bank(bank: torch.Tensor) -> torch.Tensor:
    """``[M, D]`` bank → ``[D + 1, M]`` fp32 ``[−2·Bᵀ; ‖B‖²]`` (see :class:`NearestNeighbourDistance`)."""
    bank = bank.to(torch.float32)
    return torch.cat([(-2.0 * bank).t(), (bank * bank).sum(1).unsqueeze(0)], dim=0).contiguous()


def _upgrade_split_bank_state(state: dict, prefix: str, *args: object) -> None:
    """Detectors saved before the augmented layout stored ``bank_t_neg2`` and ``bank_sq``."""
    old_t, old_sq = prefix + "bank_t_neg2", prefix + "bank_sq"
    if old_t in state and old_sq in state and prefix + "bank_aug" not in state:
        state[prefix + "bank_aug"] = torch.cat([state.pop(old_t), state.pop(old_sq).unsqueeze(0)], dim=0).contiguous()


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
        # Eager only (no ONNX node): on the permuted layout, bmm copies every position's
        # matrix and the product below runs strided; contiguous makes the head 2.3x faster.
        diff = (x - self.mean.unsqueeze(1)).contiguous()
        left = torch.bmm(diff, self.inv_cov)  # [P, B, d]
        m2 = (left * diff).sum(-1).clamp(min=0.0)  # [P, B]
        return m2.sqrt().t().reshape(-1, self.grid[0], self.grid[1])

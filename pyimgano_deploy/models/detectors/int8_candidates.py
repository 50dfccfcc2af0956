"""int8 candidates for the re-ranked nearest-neighbour head (the int8 engine of memory-bank detectors).

Stage 1 computes every query's approximate squared distance to every bank row with an int8
product, in the bank's ``projection_dim`` leading principal directions (chosen to keep
:data:`VARIANCE_KEPT` of the bank's variance; a projection never moves a row closer, and the
exact stage re-ranks in full dimension): queries quantised per chunk of rows
(``DynamicQuantizeLinear``: uint8, one scale), the bank stored as 7-bit int8 codes with one scale per row,
``MatMulInteger`` accumulating in int32, then the scales and ``‖B‖²`` applied. ONNX Runtime fuses
that chain into one ``DynamicQuantizeMatMul`` kernel (VNNI on x86). Candidates come from it in
two cheap steps instead of one TopK over ``M`` (ORT's TopK over 10⁴ columns costs as much as the
product):

* the minimum of each group of ``GROUP`` consecutive bank rows (one vectorised ReduceMin), then
  the ``c`` groups with the smallest minima;
* inside those ``c × GROUP`` rows, the ``c`` with the smallest approximate distance.

Queries go through stage 1 in chunks of ``chunk_rows`` (an ONNX ``Loop``), so each chunk's
``[chunk_rows, M]`` product is read back from cache rather than memory: at 784 queries per image
and an 18 816-row bank the whole product is 59 MB per image, and writing and re-reading it cost
more than the int8 arithmetic.

Stage 2 (shared with the PCA candidates) gathers those ``c`` rows and computes their exact fp32
squared distances. The result equals the full head whenever the true nearest row is among the
``c`` candidates, and is never below the true distance otherwise.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from pyimgano_deploy.models.detectors.reranked_distance import TwoStageNearestNeighbourDistance, principal_axes

#: bank rows per group of the first candidate step (TopK runs over M / GROUP group minima)
GROUP = 32
UINT8_MAX = 255
INT16_MAX = 32767
#: largest |int8 code| whose products with uint8 values cannot saturate (64). x86 CPUs without VNNI
#: (AVX2 only) multiply uint8 by int8 with ``vpmaddubsw``, which adds two products in a saturating
#: int16: 2 · 255 · 127 overflows it, 2 · 255 · 64 = 32 640 does not. With full-range codes ONNX
#: Runtime's product is wrong on those CPUs (most candidates lost, bsd_ballscrew's scores up by
#: half) and right with VNNI. ONNX Runtime's ``reduce_range`` weights stay within the same bound.
CODE_MAX = INT16_MAX // (2 * UINT8_MAX)
#: ‖B‖² of the padding rows that fill the last group: never a candidate
PAD_SQ = 3.0e38
#: share of the bank's variance the candidate distances keep (projection_dim="auto")
VARIANCE_KEPT = 0.98
#: projection dimensions are rounded up to a multiple of this (the int8 kernels' K blocking)
PROJECTION_STEP = 16
#: queries per chunk of stage 1: a [128, M] fp32 product stays in this class of CPU's L2/L3
CHUNK_ROWS = 128


def dynamic_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ONNX ``DynamicQuantizeLinear`` of fp32 ``x``: (uint8 values, scale, zero point), as its spec
    computes them (range widened to include 0, round half to even, saturate)."""
    lo = torch.clamp(x.min(), max=0.0)
    hi = torch.clamp(x.max(), min=0.0)
    scale = (hi - lo) / UINT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero x quantises to its zero point
    zero = torch.clamp(torch.round(-lo / scale), 0, UINT8_MAX)
    values = torch.clamp(torch.round(x / scale) + zero, 0, UINT8_MAX)
    return values.to(torch.uint8), scale, zero.to(torch.uint8)


@torch.library.custom_op("pyimgano_deploy::int8_sq_distances", mutates_args=())
def int8_sq_distances(q: torch.Tensor, bank_q: torch.Tensor, bank_scale: torch.Tensor, bank_zero: torch.Tensor,
                      bank_sq: torch.Tensor) -> torch.Tensor:
    """``‖B‖² − 2·q·Bᵀ`` ``[R, M]`` from fp32 ``q [R, K]`` and the int8 bank ``−2·Bᵀ [K, M]``
    (per-row ``bank_scale``, zero ``bank_zero``); exported as the ONNX chain ORT fuses."""
    values, scale, zero = dynamic_quantize(q)
    # Integer dot products, exact in float64 (an int32 accumulation in the engine).
    acc = (values.to(torch.float64) - zero.to(torch.float64)) @ (bank_q.to(torch.float64) - bank_zero.to(torch.float64))
    return (acc.to(torch.float32) * (scale * bank_scale)) + bank_sq


def _int8_sq_distances_onnx(g, q, bank_q, bank_scale, bank_zero, bank_sq):  # type: ignore[no-untyped-def]
    values, scale, zero = g.op("DynamicQuantizeLinear", q, outputs=3)
    acc = g.op("MatMulInteger", values, bank_q, zero, bank_zero)
    product = g.op("Mul", g.op("Cast", acc, to_i=1), g.op("Mul", scale, bank_scale))  # to_i=1: FLOAT
    return g.op("Add", product, bank_sq)


torch.onnx.register_custom_op_symbolic("pyimgano_deploy::int8_sq_distances", _int8_sq_distances_onnx, 17)


def _chunk_candidates(q: torch.Tensor, bank_q: torch.Tensor, bank_scale: torch.Tensor, bank_zero: torch.Tensor,
                      bank_sq: torch.Tensor, offsets: torch.Tensor, groups: int, probed: int, c: int, rows: int) -> torch.Tensor:
    """Candidate indices ``[R, c]`` of ``q [R, K]``, ``rows`` queries at a time (scripted: the
    loop over a dynamic R exports as an ONNX Loop). ``offsets`` is ``arange(GROUP)``."""
    group = offsets.shape[0]
    out: list[torch.Tensor] = []
    for start in range(0, q.shape[0], rows):
        approx = torch.ops.pyimgano_deploy.int8_sq_distances(q[start : start + rows], bank_q, bank_scale, bank_zero, bank_sq)
        group_idx = torch.topk(approx.reshape(-1, groups, group).amin(dim=2), probed, dim=1, largest=False).indices
        # Bank rows of the probed groups [n, probed · group]; no division back from positions.
        row_idx = (group_idx.unsqueeze(2) * group + offsets).reshape(-1, probed * group)
        local = torch.topk(torch.gather(approx, 1, row_idx), c, dim=1, largest=False).indices
        out.append(torch.gather(row_idx, 1, local))
    return torch.cat(out, 0)


_SCRIPTED: list[torch.jit.ScriptFunction] = []


def _scripted_chunk_candidates() -> torch.jit.ScriptFunction:
    """:func:`_chunk_candidates` compiled once, on first use (scripting costs a second at import)."""
    if not _SCRIPTED:
        with warnings.catch_warnings():
            # Like the TorchScript ONNX exporter this feeds, scripting is deprecated upstream; it is
            # what turns a loop over a dynamic number of rows into an ONNX Loop.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.script.*")
            _SCRIPTED.append(torch.jit.script(_chunk_candidates))
    return _SCRIPTED[0]


def quantize_bank(bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``−2·B`` as int8 ``[D, M]`` in ``[−CODE_MAX, CODE_MAX]`` (7 bits, see
    :data:`CODE_MAX`) with one symmetric scale per bank row ``[M]`` (fp32)."""
    neg2 = (-2.0 * bank.to(torch.float32)).t()
    scale = neg2.abs().amax(0) / CODE_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.clamp(torch.round(neg2 / scale), -CODE_MAX, CODE_MAX).to(torch.int8)
    return values.contiguous(), scale.contiguous()


def variance_profile(variances: torch.Tensor) -> torch.Tensor:
    """Cumulative share of the total held by the leading ``variances`` (descending) ``[D]``."""
    return torch.cumsum(variances, 0) / variances.sum().clamp(min=1e-300)


def auto_projection_dim(bank: torch.Tensor, kept: float = VARIANCE_KEPT) -> int:
    """Fewest principal directions holding ``kept`` of the bank's variance, rounded up to a
    multiple of :data:`PROJECTION_STEP`, at most the bank's dimension."""
    return _dimensions_keeping(variance_profile(principal_axes(bank)[0]), kept)


def _dimensions_keeping(profile: torch.Tensor, kept: float) -> int:
    r = int(torch.searchsorted(profile, torch.tensor(kept, dtype=profile.dtype)).item()) + 1
    return int(min(profile.shape[0], -(-r // PROJECTION_STEP) * PROJECTION_STEP))


class Int8RerankedNearestNeighbourDistance(TwoStageNearestNeighbourDistance):
    """Two-stage head whose candidates come from int8 distances to the whole bank (see the module
    docstring); ``candidates`` rows are re-ranked exactly. ``projection_dim``: dimensions of the
    candidate distances (``None``: :func:`auto_projection_dim`; the bank's dimension: none);
    ``chunk_rows``: queries per chunk of stage 1."""

    def __init__(self, bank: torch.Tensor, *, candidates: int, k: int = 1, projection_dim: int | None = None,
                 chunk_rows: int = CHUNK_ROWS) -> None:
        super().__init__(bank, k=k, candidates=candidates)
        m, d = bank.shape
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        variances, directions = principal_axes(self.bank_rows)  # one decomposition for the rule and the projection
        profile = variance_profile(variances)
        self.projection_dim = _dimensions_keeping(profile, VARIANCE_KEPT) if projection_dim is None else int(min(max(projection_dim, 1), d))
        self.variance_kept = float(profile[self.projection_dim - 1])
        self.chunk_rows = int(chunk_rows)
        self.projected = self.projection_dim < d
        rows = self.bank_rows
        if self.projected:
            self.register_buffer("projection", directions[:, : self.projection_dim].contiguous())
            rows = rows @ self.projection
        padded = -(-m // GROUP) * GROUP
        self.groups = padded // GROUP
        self.probed_groups = int(min(self.n_candidates, self.groups))
        values, scale = quantize_bank(rows)
        pad = padded - m
        self.register_buffer("bank_q", nn.functional.pad(values, (0, pad)))
        self.register_buffer("bank_q_scale", nn.functional.pad(scale, (0, pad), value=1.0))
        self.register_buffer("bank_q_zero", torch.zeros(padded, dtype=torch.int8))
        self.register_buffer("bank_q_sq", nn.functional.pad((rows * rows).sum(1), (0, pad), value=PAD_SQ))
        self.register_buffer("group_offsets", torch.arange(GROUP))

    def candidates(self, q: torch.Tensor) -> torch.Tensor:
        if self.projected:
            q = q @ self.projection
        return _scripted_chunk_candidates()(q, self.bank_q, self.bank_q_scale, self.bank_q_zero, self.bank_q_sq,
                                            self.group_offsets, self.groups, self.probed_groups, self.n_candidates, self.chunk_rows)

    def record(self) -> dict[str, object]:
        """What the manifest says about this head (the int8 engine's ``calibration`` record)."""
        return {"candidates": self.n_candidates, "group": GROUP, "projection_dim": self.projection_dim,
                "variance_kept": round(self.variance_kept, 4), "chunk_rows": self.chunk_rows,
                "bank_code_max": CODE_MAX}

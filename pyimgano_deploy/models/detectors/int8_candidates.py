"""int8 candidates for the re-ranked nearest-neighbour head (the int8 engine of memory-bank detectors).

Stage 1 computes every query's approximate squared distance to every bank row with an int8
product: queries quantised per batch (``DynamicQuantizeLinear``: uint8, one scale), the bank
stored as int8 with one scale per row, ``MatMulInteger`` accumulating in int32, then the scales
and ``‖B‖²`` applied. ONNX Runtime fuses that chain into one ``DynamicQuantizeMatMul`` kernel
(VNNI on x86), which writes the ``[R, M]`` product once. Candidates come from it in two cheap
steps instead of one TopK over ``M`` (ORT's TopK over 10⁴ columns costs as much as the product):

* the minimum of each group of ``GROUP`` consecutive bank rows (one vectorised ReduceMin), then
  the ``c`` groups with the smallest minima;
* inside those ``c × GROUP`` rows, the ``c`` with the smallest approximate distance.

Stage 2 (shared with the PCA candidates) gathers those ``c`` rows and computes their exact fp32
squared distances. The result equals the full head whenever the true nearest row is among the
``c`` candidates, and is never below the true distance otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from pyimgano_deploy.models.detectors.reranked_distance import TwoStageNearestNeighbourDistance

#: bank rows per group of the first candidate step (TopK runs over M / GROUP group minima)
GROUP = 32
INT8_MAX = 127
UINT8_MAX = 255
#: ‖B‖² of the padding rows that fill the last group: never a candidate
PAD_SQ = 3.0e38


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


class _Int8Product(torch.autograd.Function):
    """``‖B‖² − 2·q·Bᵀ`` from int8 operands; exported as the standard ONNX chain ORT fuses."""

    @staticmethod
    def forward(ctx, q, bank_q, bank_scale, bank_zero, bank_sq):  # type: ignore[no-untyped-def]
        values, scale, zero = dynamic_quantize(q)
        # Integer dot products, exact in float64 (an int32 accumulation in the engine).
        acc = (values.to(torch.float64) - zero.to(torch.float64)) @ (bank_q.to(torch.float64) - bank_zero.to(torch.float64))
        return (acc.to(torch.float32) * (scale * bank_scale)) + bank_sq

    @staticmethod
    def symbolic(g, q, bank_q, bank_scale, bank_zero, bank_sq):  # type: ignore[no-untyped-def]
        values, scale, zero = g.op("DynamicQuantizeLinear", q, outputs=3)
        acc = g.op("MatMulInteger", values, bank_q, zero, bank_zero)
        product = g.op("Mul", g.op("Cast", acc, to_i=1), g.op("Mul", scale, bank_scale))  # to_i=1: FLOAT
        return g.op("Add", product, bank_sq)


def quantize_bank(bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``−2·B`` as int8 ``[D, M]`` with one symmetric scale per bank row ``[M]`` (fp32)."""
    neg2 = (-2.0 * bank.to(torch.float32)).t()
    scale = neg2.abs().amax(0) / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = torch.clamp(torch.round(neg2 / scale), -INT8_MAX, INT8_MAX).to(torch.int8)
    return values.contiguous(), scale.contiguous()


class Int8RerankedNearestNeighbourDistance(TwoStageNearestNeighbourDistance):
    """Two-stage head whose candidates come from int8 distances to the whole bank (see the module
    docstring); ``candidates`` rows are re-ranked exactly."""

    def __init__(self, bank: torch.Tensor, *, k: int = 1, candidates: int = 4) -> None:
        super().__init__(bank, k=k, candidates=candidates)
        m = bank.shape[0]
        padded = -(-m // GROUP) * GROUP
        self.groups = padded // GROUP
        self.probed_groups = int(min(self.n_candidates, self.groups))
        values, scale = quantize_bank(bank)
        pad = padded - m
        self.register_buffer("bank_q", nn.functional.pad(values, (0, pad)))
        self.register_buffer("bank_q_scale", nn.functional.pad(scale, (0, pad), value=1.0))
        self.register_buffer("bank_q_zero", torch.zeros(padded, dtype=torch.int8))
        self.register_buffer("bank_sq_padded", nn.functional.pad(self.bank_sq, (0, pad), value=PAD_SQ))

    def candidates(self, q: torch.Tensor) -> torch.Tensor:
        approx = _Int8Product.apply(q, self.bank_q, self.bank_q_scale, self.bank_q_zero, self.bank_sq_padded)
        grouped = approx.reshape(q.shape[0], self.groups, GROUP)
        group_idx = torch.topk(grouped.amin(dim=2), self.probed_groups, dim=1, largest=False).indices  # [R, g]
        inside = torch.gather(grouped, 1, group_idx.unsqueeze(2).expand(-1, -1, GROUP))  # [R, g, GROUP]
        local = torch.topk(inside.reshape(q.shape[0], -1), self.n_candidates, dim=1, largest=False).indices
        group_of = torch.gather(group_idx, 1, torch.div(local, GROUP, rounding_mode="floor"))
        return group_of * GROUP + torch.remainder(local, GROUP)

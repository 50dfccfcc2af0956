"""SoftPatch's matched weight at ties between the two nearest bank rows: continuous, so eager and
ONNX Runtime give the same map even when their roundings rank two equally near rows differently."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from pyimgano_deploy.cli import main
from pyimgano_deploy.models.detectors.layers import NearestNeighbourDistance
from pyimgano_deploy.exporters.onnx_export import trace_to_onnx
from pyimgano_deploy.models.detectors.reranked_distance import RerankedNearestNeighbourDistance
from pyimgano_deploy.models.detectors.softpatch.model import TIE_RTOL, SoftWeightedScorer, tie_blended_weight

G = torch.Generator().manual_seed(0)


def _blend(d2: list[float], w: list[float], q_sq: float = 0.0) -> float:
    return float(tie_blended_weight(torch.tensor([d2]), torch.tensor([w]), torch.tensor([q_sq]))[0])


def test_the_nearest_rows_weight_when_the_second_row_is_clearly_farther() -> None:
    assert _blend([1.0, 1.5], [2.0, 1.0]) == pytest.approx(2.0)


def test_an_exact_tie_gets_the_mean_weight_whichever_row_is_ranked_first() -> None:
    assert _blend([1.0, 1.0], [2.0, 1.0]) == pytest.approx(1.5)
    assert _blend([1.0, 1.0], [1.0, 2.0]) == pytest.approx(1.5)


def test_a_rounding_sized_change_of_the_distances_moves_the_weight_by_a_rounding_sized_amount() -> None:
    # the two orders of the same near-tie, as two engines' roundings may give them
    d, eps = 100.0, 100.0 * 1e-6
    first, second = _blend([d, d + eps], [2.0, 1.0]), _blend([d, d + eps], [1.0, 2.0])
    assert abs(first - second) < 2e-3  # the paper's rule would jump by the full 1.0


def test_the_blend_ends_at_the_tie_width() -> None:
    width = TIE_RTOL * (3.0 + 1.0)
    assert _blend([1.0, 1.0 + 1.01 * width], [2.0, 1.0], q_sq=3.0) == pytest.approx(2.0)
    assert _blend([1.0, 1.0 + 0.5 * width], [2.0, 1.0], q_sq=3.0) == pytest.approx((2.0 + 0.5) / 1.5, rel=1e-5)


@pytest.mark.parametrize("chunk_size", [16384, 256])
def test_two_nearest_are_the_two_smallest_squared_distances(chunk_size: int) -> None:
    bank, q = torch.randn(700, 16, generator=G), torch.randn(40, 16, generator=G)
    d2, idx = NearestNeighbourDistance(bank, chunk_size=chunk_size).two_nearest(q)
    true = torch.cdist(q.double(), bank.double()) ** 2
    ref = torch.topk(true, 2, dim=1, largest=False)
    assert torch.equal(idx, ref.indices)
    torch.testing.assert_close(d2.double(), ref.values, rtol=1e-4, atol=1e-4)


def test_two_nearest_of_the_reranked_head_equal_the_full_heads_when_the_candidates_cover_the_bank() -> None:
    bank, q = torch.randn(120, 16, generator=G), torch.randn(30, 16, generator=G)
    full = NearestNeighbourDistance(bank).two_nearest(q)
    rr = RerankedNearestNeighbourDistance(bank, candidates=120, projection_dim=4).two_nearest(q)
    assert torch.equal(rr[1], full[1])
    torch.testing.assert_close(rr[0], full[0], rtol=1e-5, atol=1e-4)


def _tied_scorer() -> tuple[SoftWeightedScorer, torch.Tensor]:
    """Two bank rows mirror-symmetric about the one query position (weights 2 and 1), and a far row."""
    dim = 8
    direction = torch.zeros(dim)
    direction[0] = 1.0
    centre = torch.linspace(0.5, 2.0, dim)
    bank = torch.stack([centre + 0.7 * direction, centre - 0.7 * direction, centre + 5.0])
    scorer = SoftWeightedScorer(bank, torch.tensor([2.0, 1.0, 1.0]), (1, 1), chunk_size=16384).eval()
    return scorer, centre.reshape(1, dim, 1, 1)


def test_an_equidistant_query_scores_the_mean_weight_times_its_distance() -> None:
    scorer, emb = _tied_scorer()
    with torch.no_grad():
        got = float(scorer(emb).reshape(-1)[0])
    assert got == pytest.approx(0.7 * 1.5, rel=1e-3)


def test_onnx_runtime_scores_a_tied_query_as_eager_does(tmp_path) -> None:
    scorer, emb = _tied_scorer()
    # queries around the tie, 1e-6 apart: the two rows swap rank between them
    offsets = torch.linspace(-3e-6, 3e-6, 7)
    batch = emb.repeat(7, 1, 1, 1)
    batch[:, 0, 0, 0] += offsets
    path = tmp_path / "scorer.onnx"
    with torch.no_grad():
        trace_to_onnx(scorer, (batch,), path, opset=17, input_names=["emb"], output_names=["map"],
                      dynamic_axes={"emb": {0: "batch"}, "map": {0: "batch"}})
        eager = scorer(batch).numpy()
    exported = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"emb": batch.numpy()})[0]
    np.testing.assert_allclose(exported, eager, rtol=1e-4, atol=1e-5)
    assert np.ptp(eager) < 1e-3  # continuous across the swap: the paper's rule spans 0.7


@pytest.mark.pretrained
def test_softpatch_without_aggregation_exports_on_hazelnut(hazelnut_root, tmp_path) -> None:
    """The configuration whose export the parity gate refused when the weight followed the arithmetic's ranking."""
    cfg = {"name": "softpatch_n1", "recipe": "industrial-adapt-fp40",
           "model": {"name": "vision_softpatch", "kwargs": {"image_size": "keep_aspect", "coreset_ratio": 0.01, "neighbourhood": 1}},
           "dataset": {"kind": "mvtec", "root": str(hazelnut_root.parent), "category": hazelnut_root.name},
           "output": {"dir": str(tmp_path / "run"), "report": False}, "seed": 0}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    runner = CliRunner()
    r = runner.invoke(main, ["train", "--config", str(tmp_path / "cfg.json"), "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "bundle"), "--json"])
    assert r.exit_code == 0, r.output
    fp32 = json.loads(r.stdout)["parity"]["fp32"]
    assert fp32["labels_identical"] and fp32["max_abs_map"] <= fp32["tolerance"]["map_abs"]


@pytest.mark.parametrize("head", ["full", "one candidate"])
def test_a_single_nearest_row_is_given_twice_and_keeps_its_weight(head: str) -> None:
    bank = torch.randn(1 if head == "full" else 50, 8, generator=G)
    q = torch.randn(5, 8, generator=G)
    distance = NearestNeighbourDistance(bank) if head == "full" else RerankedNearestNeighbourDistance(bank, candidates=1, projection_dim=8)
    d2, idx = distance.two_nearest(q)
    assert d2.shape == idx.shape == (5, 2) and torch.equal(idx[:, 0], idx[:, 1])
    w = torch.rand(bank.shape[0], generator=G) + 0.5
    torch.testing.assert_close(tie_blended_weight(d2, w[idx], (q * q).sum(1)), w[idx[:, 0]])

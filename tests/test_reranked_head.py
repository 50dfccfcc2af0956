"""The re-ranked nearest-neighbour head against the full head, and `export --nn-rerank`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from run_factory import make_run_dir

from pyimgano_deploy.bundles.exit_codes import EXIT_USAGE
from pyimgano_deploy.models.detectors.layers import NearestNeighbourDistance
from pyimgano_deploy.models.detectors.reranked_distance import RerankedNearestNeighbourDistance, principal_directions

G = torch.Generator().manual_seed(0)


def _bank_and_queries(m: int = 300, d: int = 24, r: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    bank = torch.randn(m, d, generator=G)
    return bank, bank[torch.randint(0, m, (r,), generator=G)] + 0.3 * torch.randn(r, d, generator=G)


@pytest.mark.parametrize("k", [1, 3])
def test_candidates_covering_the_bank_give_the_full_head(k: int) -> None:
    bank, q = _bank_and_queries()
    full = NearestNeighbourDistance(bank, k=k)
    rr = RerankedNearestNeighbourDistance(bank, k=k, candidates=bank.shape[0], projection_dim=4)
    torch.testing.assert_close(rr(q), full(q), rtol=1e-5, atol=1e-5)
    (d_full, i_full), (d_rr, i_rr) = full.nearest(q), rr.nearest(q)
    torch.testing.assert_close(d_rr, d_full, rtol=1e-5, atol=1e-5)
    assert torch.equal(i_rr, i_full)


def test_few_candidates_are_exact_when_they_hold_the_neighbour_and_never_below_it() -> None:
    bank, q = _bank_and_queries()
    full = NearestNeighbourDistance(bank)
    rr = RerankedNearestNeighbourDistance(bank, candidates=3, projection_dim=2)
    d_true, i_true = full.nearest(q)
    _, candidates = rr._candidate_sq_distances(q)
    found = (candidates == i_true.unsqueeze(1)).any(dim=1)
    got = rr(q)
    assert found.any() and not found.all()  # the test covers both cases
    torch.testing.assert_close(got[found], d_true[found], rtol=1e-5, atol=1e-5)
    assert bool((got[~found] >= d_true[~found] - 1e-5).all())


def test_principal_directions_are_orthonormal_and_deterministic() -> None:
    bank, _ = _bank_and_queries()
    p = principal_directions(bank, 5)
    torch.testing.assert_close(p.t() @ p, torch.eye(5), atol=1e-5, rtol=0)
    assert torch.equal(p, principal_directions(bank.clone(), 5))


def test_candidates_below_k_are_refused() -> None:
    with pytest.raises(ValueError, match="candidates must be >= k"):
        RerankedNearestNeighbourDistance(torch.randn(20, 4, generator=G), k=3, candidates=2)


def test_export_with_a_reranked_head_passes_the_gate_against_the_full_head(tmp_path: Path) -> None:
    import onnx

    run = make_run_dir(tmp_path, "vision_patchcore", size=48, coreset_ratio=0.5)
    code, out, err = run_cli("export", "--run", str(run), "--out", str(tmp_path / "b"), "--nn-rerank", "16", "--nn-rerank-dim", "16", "--json")
    assert code == 0, err
    assert json.loads(out)["parity"]["fp32"]["labels_identical"]
    manifest = json.loads((tmp_path / "b" / "bundle.json").read_text())
    head = manifest["model"]["nn_head"]
    assert (head["kind"], head["candidates"], head["projection_dim"]) == ("reranked", 16, 16)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node if n.name.startswith("/scorer/")]
    assert "TopK" in ops and "Gather" in ops
    code, out, _ = run_cli("validate", str(tmp_path / "b"))
    assert code == 0


def test_rerank_of_a_detector_without_a_memory_bank_is_refused(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, "vision_padim", size=48, d=8)
    code, _, err = run_cli("export", "--run", str(run), "--out", str(tmp_path / "b"), "--nn-rerank", "8")
    assert code == EXIT_USAGE and "no nearest-neighbour head" in err and not (tmp_path / "b").exists()


def test_the_cli_export_options_and_head_share_one_default_projection() -> None:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions
    from pyimgano_deploy.models.detectors.nn_head_options import PCA_PROJECTION_DIM
    from pyimgano_deploy.models.detectors.reranked_distance import rerank_nearest_neighbours

    code, out, _ = run_cli("export", "--help")
    assert code == 0 and f"[default: {PCA_PROJECTION_DIM};" in " ".join(out.split("--nn-rerank-dim", 1)[1].split()[:12])
    assert ExportOptions().nn_rerank_dim == PCA_PROJECTION_DIM
    holder = torch.nn.Sequential(NearestNeighbourDistance(torch.randn(PCA_PROJECTION_DIM + 36, PCA_PROJECTION_DIM + 8, generator=G)))
    assert rerank_nearest_neighbours(holder, candidates=4) == 1
    assert holder[0].projection.shape[1] == PCA_PROJECTION_DIM

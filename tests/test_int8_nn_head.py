"""The int8 engine of memory-bank detectors: nearest-neighbour candidates from int8 distances,
re-ranked in fp32 (`export --precision int8`, scope nn_head), against the full head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import jsonl_records, run_cli
from onnx import TensorProto, helper
from run_factory import make_run_dir

from pyimgano_deploy.bundles.exit_codes import EXIT_USAGE
from pyimgano_deploy.bundles.parity import ParityError
from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
from pyimgano_deploy.exporters.onnx_export import trace_to_onnx
from pyimgano_deploy.models.detectors import int8_candidates
from pyimgano_deploy.models.detectors.int8_candidates import (
    CODE_MAX,
    INT16_MAX,
    PROJECTION_STEP,
    UINT8_MAX,
    Int8RerankedNearestNeighbourDistance,
    auto_projection_dim,
    dynamic_quantize,
    quantize_bank,
)
from pyimgano_deploy.models.detectors.layers import NearestNeighbourDistance

G = torch.Generator().manual_seed(0)


def test_dynamic_quantize_is_onnx_dynamic_quantize_linear() -> None:
    x = (torch.randn(64, 40, generator=G) * 3 + 1).to(torch.float32)
    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    y, s, z = sess.run(None, {"x": x.numpy()})
    values, scale, zero = dynamic_quantize(x)
    assert np.array_equal(values.numpy(), y) and float(scale) == pytest.approx(float(s), rel=1e-7) and int(zero) == int(z)


def test_bank_codes_leave_no_uint8_int8_pair_sum_to_saturate() -> None:
    # CPUs without VNNI add two uint8 × int8 products in a saturating int16.
    bank = torch.randn(500, 48, generator=G) * torch.logspace(-2, 2, 48)
    values, scale = quantize_bank(bank)
    assert int(values.abs().max()) == CODE_MAX and 2 * UINT8_MAX * CODE_MAX <= INT16_MAX
    torch.testing.assert_close(values.to(torch.float32) * scale, -2.0 * bank.t(), rtol=0, atol=float(scale.max()) / 2 + 1e-6)


class _Int8Product(torch.nn.Module):
    def __init__(self, bank: torch.Tensor) -> None:
        super().__init__()
        values, scale = quantize_bank(bank)
        self.register_buffer("values", values)
        self.register_buffer("scale", scale)
        self.register_buffer("zero", torch.zeros(bank.shape[0], dtype=torch.int8))
        self.register_buffer("sq", (bank * bank).sum(1))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return torch.ops.pyimgano_deploy.int8_sq_distances(q, self.values, self.scale, self.zero, self.sq)


def test_int8_product_in_onnx_runtime_is_the_integer_product_at_extreme_codes(tmp_path: Path) -> None:
    # Rows of one sign and queries of one sign put every code at ±CODE_MAX and every query value
    # at 0 or 255: the worst case for a saturating int16 pair sum (wrong on AVX2 with 8-bit codes).
    bank = torch.ones(64, 96) + 0.01 * torch.rand(64, 96, generator=G)
    q = torch.where(torch.rand(16, 96, generator=G) < 0.5, -1.0, 1.0)
    model = _Int8Product(bank).eval()
    path = tmp_path / "product.onnx"
    trace_to_onnx(model, (q,), path, opset=17, input_names=["q"], output_names=["d"])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"q": q.numpy()})[0]
    np.testing.assert_allclose(got, model(q).numpy(), rtol=1e-6, atol=1e-3)


def _all_ops(graph: onnx.GraphProto) -> set[str]:
    """Op types of ``graph`` and of its subgraphs (the candidate Loop's body)."""
    ops = {n.op_type for n in graph.node}
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                ops |= _all_ops(a.g)
    return ops


@pytest.mark.parametrize("k, chunk_rows, projection_dim", [(1, 128, None), (3, 128, None), (1, 7, 24), (1, 7, 8)])
def test_candidates_covering_the_bank_give_the_full_head(k: int, chunk_rows: int, projection_dim: int | None) -> None:
    # chunk_rows 7: several chunks of queries and a short last one; projection 8 of 24 dims.
    bank = torch.randn(100, 24, generator=G)  # 4 groups of 32, the last one padded
    q = torch.randn(40, 24, generator=G)
    full = NearestNeighbourDistance(bank, k=k)
    head = Int8RerankedNearestNeighbourDistance(bank, k=k, candidates=100, chunk_rows=chunk_rows, projection_dim=projection_dim)
    torch.testing.assert_close(head(q), full(q), rtol=1e-5, atol=1e-5)
    assert torch.equal(head.nearest(q)[1], full.nearest(q)[1])


def test_few_candidates_are_exact_when_they_hold_the_neighbour_and_never_below_it() -> None:
    # Far queries and a single candidate, so that int8 rounding misses some neighbours.
    bank = torch.randn(2000, 64, generator=G)
    q = bank[torch.randint(0, 2000, (300,), generator=G)] + 3.0 * torch.randn(300, 64, generator=G)
    full = NearestNeighbourDistance(bank)
    head = Int8RerankedNearestNeighbourDistance(bank, candidates=1, chunk_rows=64)
    d_true, i_true = full.nearest(q)
    found = (head.candidates(q) == i_true.unsqueeze(1)).any(dim=1)
    got = head(q)
    assert found.float().mean() > 0.9 and not found.all()  # both cases are covered
    torch.testing.assert_close(got[found], d_true[found], rtol=1e-5, atol=1e-5)
    assert bool((got[~found] >= d_true[~found] - 1e-5).all())


def test_auto_projection_keeps_the_stated_variance_in_steps_of_16() -> None:
    # 20 strong directions of 64: the rule keeps them and rounds up to the next multiple of 16.
    strong = torch.randn(3000, 20, generator=G) * 10.0
    bank = torch.cat([strong, 0.01 * torch.randn(3000, 44, generator=G)], 1) @ torch.linalg.qr(torch.randn(64, 64, generator=G))[0]
    head = Int8RerankedNearestNeighbourDistance(bank, candidates=4)
    assert auto_projection_dim(bank) == head.projection_dim == 32 and head.projection_dim % PROJECTION_STEP == 0
    assert head.variance_kept >= 0.98 and head.record()["projection_dim"] == 32
    # Isotropic features: no direction can be dropped, so there is no projection.
    iso = Int8RerankedNearestNeighbourDistance(torch.randn(3000, 24, generator=G), candidates=4)
    assert iso.projection_dim == 24 and not iso.projected


def test_chunked_candidates_export_as_a_loop_that_matches_eager(tmp_path: Path) -> None:
    bank = torch.randn(300, 40, generator=G)
    head = Int8RerankedNearestNeighbourDistance(bank, candidates=3, chunk_rows=16, projection_dim=16).eval()
    q = bank[torch.randint(0, 300, (100,), generator=G)] + 0.5 * torch.randn(100, 40, generator=G)
    path = tmp_path / "head.onnx"
    trace_to_onnx(head, (q,), path, opset=17, input_names=["q"], output_names=["d"], dynamic_axes={"q": {0: "rows"}})
    assert "Loop" in _all_ops(onnx.load(str(path)).graph)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for rows in (100, 16, 5):  # several chunks, exactly one, one short one
        np.testing.assert_allclose(sess.run(None, {"q": q[:rows].numpy()})[0], head(q[:rows]).detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def patchcore_run(hazelnut_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PatchCore with the pretrained Lite0 at 224 px, trained through the CLI on the real images."""
    out = tmp_path_factory.mktemp("i8nn") / "run"
    code, _, err = run_cli("train", "--dataset", "mvtec", "--root", str(hazelnut_root), "--model", "vision_patchcore",
                           "--out", str(out), "--no-progress", "--no-report")
    assert code == 0, err
    return out


def test_int8_nn_head_passes_the_gate_and_runs_in_ort_int8_kernels(patchcore_run: Path, hazelnut_root: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    code, out, err = run_cli("export", "--run", str(patchcore_run), "--out", str(bundle), "--precision", "int8", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["engines"] == ["model.onnx", "model.int8.onnx"]
    parity = summary["parity"]["int8"]
    assert parity["labels_identical"] and parity["max_abs_score"] <= 1e-3  # exact re-rank: far inside the int8 bound
    manifest = json.loads((bundle / "bundle.json").read_text())
    record = next(e for e in manifest["engines"] if e["precision"] == "int8")["calibration"]
    assert (record["scope"], record["candidates"], record["backbone"]) == ("nn_head", 8, "fp32")
    assert 1 <= record["projection_dim"] <= 152 and record["variance_kept"] >= 0.98 and record["chunk_rows"] == 128
    ops = _all_ops(onnx.load(str(bundle / "model.int8.onnx")).graph)
    assert {"Loop", "DynamicQuantizeLinear", "MatMulInteger"} <= ops and "QuantizeLinear" not in ops
    # What makes it fast: ONNX Runtime fuses the chain into one int8 kernel with the bias.
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(bundle / "model.int8.onnx"), opts, providers=["CPUExecutionProvider"])
    assert "DynamicQuantizeMatMul" in _all_ops(onnx.load(str(tmp_path / "optimized.onnx")).graph)

    code, _, err = run_cli("validate", str(bundle), "--precision", "int8")
    assert code == 0, err
    for precision in ("fp32", "int8"):
        code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(hazelnut_root / "test"),
                               "--save-jsonl", str(tmp_path / f"{precision}.jsonl"), "--precision", precision)
        assert code == 0, err
    fp32, int8 = jsonl_records(tmp_path / "fp32.jsonl"), jsonl_records(tmp_path / "int8.jsonl")
    np.testing.assert_allclose([r["score"] for r in int8], [r["score"] for r in fp32], rtol=1e-4)
    assert [r["label"] for r in int8] == [r["label"] for r in fp32]


def test_broken_int8_candidates_fail_the_gate_and_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run_dir(tmp_path, "vision_patchcore", size=48, coreset_ratio=0.5)

    def first_rows_only(self, q):  # type: ignore[no-untyped-def]
        return torch.arange(self.n_candidates).expand(q.shape[0], -1)

    monkeypatch.setattr(int8_candidates.Int8RerankedNearestNeighbourDistance, "candidates", first_rows_only)
    with pytest.raises(ParityError, match="int8"):
        export_run(run, tmp_path / "b", ExportOptions(precision="int8"), log=lambda m: None)
    assert not (tmp_path / "b").exists()


def test_nn_head_scope_is_refused_without_a_memory_bank(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path, "vision_padim", size=48, d=8)
    code, _, err = run_cli("export", "--run", str(run), "--out", str(tmp_path / "b"), "--precision", "int8", "--int8-scope", "nn_head")
    assert code == EXIT_USAGE and "no nearest-neighbour head" in err and "--int8-scope backbone" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("model", ["vision_softpatch", "vision_anomalydino"])
def test_every_memory_bank_detector_gets_the_int8_nn_head(model: str, tmp_path: Path) -> None:
    kwargs = {"size": 56} if model == "vision_anomalydino" else {"size": 48}
    run = make_run_dir(tmp_path, model, **kwargs)
    result = export_run(run, tmp_path / "b", ExportOptions(precision="int8"), log=lambda m: None)
    engine = next(e for e in result.manifest["engines"] if e["precision"] == "int8")
    assert engine["calibration"]["scope"] == "nn_head" and result.parity["int8"].labels_identical

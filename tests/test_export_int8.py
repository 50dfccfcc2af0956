"""int8 export (ONNX Runtime static QDQ, calibrated on the calibration split) and its parity
gate, on a small autoencoder trained through the CLI on the real hazelnut images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import jsonl_records, run_cli

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.parity import ParityError
from pyimgano_deploy.exporters import int8_quantize
from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
from pyimgano_deploy.models.detectors.int8_candidates import CODE_MAX
from pyimgano_deploy.runtimes import load_bundle
from pyimgano_deploy.bundles.environment import cpu_features
from pyimgano_deploy.runtimes.errors import EngineParityError
from pyimgano_deploy.runtimes.runtime import Runtime

SMALL_AE = {"image_size": 64, "widths": [8, 16, 32], "epochs": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def run_dir(hazelnut_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "run"
    code, _, err = run_cli("train", "--dataset", "mvtec", "--root", str(hazelnut_root), "--model", "vision_autoencoder",
                           "--model-kwargs", json.dumps(SMALL_AE), "--out", str(out), "--no-progress", "--no-report")
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def int8_bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8b") / "b"
    code, stdout, err = run_cli("export", "--run", str(run_dir), "--out", str(out), "--precision", "int8", "--json")
    assert code == 0, err
    assert json.loads(stdout)["engines"] == ["model.onnx", "model.int8.onnx"]
    return out


def test_int8_engine_passes_its_gate_and_records_its_calibration(int8_bundle: Path, run_dir: Path) -> None:
    b = read_bundle(int8_bundle)
    entry = next(e for e in b.engines if e["precision"] == "int8")
    n_calibration = json.loads((run_dir / "report.json").read_text())["dataset"]["n_calibration"]
    assert entry["calibration"]["split"] == "calibration" and entry["calibration"]["n_images"] == n_calibration
    assert entry["calibration"]["quantized_nodes"] > 0 and entry["calibration"]["method"] == "minmax"
    parity = b.manifest["parity"]["int8"]
    assert parity["labels_identical"] and parity["max_abs_score"] <= parity["tolerance"]["score_abs"]
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8_bundle / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_weights_leave_no_uint8_int8_pair_sum_to_saturate(int8_bundle: Path) -> None:
    # 7-bit weights (reduce_range): the same engine scores alike on x86 CPUs with and without VNNI.
    import onnx
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(t) for t in onnx.load(str(int8_bundle / "model.int8.onnx")).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.name.endswith("_quantized")]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= CODE_MAX


def test_opening_an_int8_engine_checks_it_on_the_golden_images(int8_bundle: Path) -> None:
    runtime = load_bundle(int8_bundle, precision="int8", streams=1)
    try:
        check = runtime.engine_info["self_test"]
        assert check["passed"] and check["max_abs_score"] <= check["tolerance"]["score_abs"]
        assert check["cpu_features"] == cpu_features()  # which CPU's integer kernels were checked
    finally:
        runtime.close()
    with load_bundle(int8_bundle, precision="fp32", streams=1) as fp32:
        assert "self_test" not in fp32.engine_info  # fp32 is the reference the export gated


def test_an_int8_engine_that_scores_differently_here_is_refused(int8_bundle: Path, hazelnut_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real = Runtime.run_batch

    def other_kernels(self, batch):  # what an int8 kernel that saturates on this CPU does to the outputs
        score, amap = real(self, batch)
        return score * 2.0, amap * 2.0

    monkeypatch.setattr(Runtime, "run_batch", other_kernels)
    with pytest.raises(EngineParityError, match=r"model\.int8\.onnx \(int8\) does not reproduce .*"
                                                r"exported on a CPU with .*this one has .*--precision fp32"):
        load_bundle(int8_bundle, precision="int8", streams=1)
    jsonl = tmp_path / "r.jsonl"
    code, stdout, _ = run_cli("infer", "--bundle", str(int8_bundle), "--input", str(hazelnut_root / "test"),
                              "--save-jsonl", str(jsonl), "--precision", "int8", "--json")
    assert code == EngineParityError.exit_code == 6 and "does not reproduce" in json.loads(stdout)["error"]
    assert not jsonl.exists()
    code, stdout, _ = run_cli("validate", str(int8_bundle), "--precision", "int8")
    assert code == 6 and "outside the parity gate (exported on a CPU with" in stdout and "--precision fp32" in stdout


def test_validate_applies_the_int8_gate_and_infer_runs_int8_only_when_named(int8_bundle: Path, hazelnut_root: Path, tmp_path: Path) -> None:
    code, out, _ = run_cli("validate", str(int8_bundle), "--precision", "int8", "--json")
    report = json.loads(out)
    assert code == 0 and report["engine"]["precision"] == "int8" and report["parity"]["precision"] == "int8"
    for precision, expected in (("auto", "fp32"), ("int8", "int8")):
        jsonl = tmp_path / f"{precision}.jsonl"
        code, stdout, _ = run_cli("infer", "--bundle", str(int8_bundle), "--input", str(hazelnut_root / "test"),
                                  "--save-jsonl", str(jsonl), "--precision", precision, "--json")
        engine = json.loads(stdout)["engine"]
        assert code == 0 and engine["precision"] == expected
        assert (engine["self_test"] is not None and engine["self_test"]["passed"]) == (expected == "int8")
    fp32, int8 = jsonl_records(tmp_path / "auto.jsonl"), jsonl_records(tmp_path / "int8.jsonl")
    np.testing.assert_allclose([r["score"] for r in int8], [r["score"] for r in fp32], rtol=0.1)  # test images, defects included
    assert np.mean([a["label"] == b["label"] for a, b in zip(int8, fp32)]) >= 0.9


def test_broken_calibration_fails_the_gate_and_writes_nothing(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = int8_quantize.quantize_int8

    def blank_calibration(model, out, calibration, scopes, **kw):  # every activation range collapses to one value
        return real(model, out, np.zeros_like(calibration), scopes, **kw)

    monkeypatch.setattr(int8_quantize, "quantize_int8", blank_calibration)
    with pytest.raises(ParityError, match="int8"):
        export_run(run_dir, tmp_path / "b", ExportOptions(precision="int8"), log=lambda m: None)
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []

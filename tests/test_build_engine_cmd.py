"""``pyimgano-deploy build-engine`` through click's CliRunner (TensorRT faked or absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pyimgano_deploy.cli import build_engine_cmd as cmd
from pyimgano_deploy.cli import main
from pyimgano_deploy.exporters.tensorrt_build import EngineInfo, TensorRTUnavailableError

SIZE = 32
HINT = "pip install 'pyimgano-deploy[tensorrt]'"


def _threshold(value: float) -> dict:
    return {"value": value, "method": "quantile q=0.99", "quantile": 0.99, "source_split": "calibration",
            "n_images": 6, "n_values": 6, "code_path": "test"}


def _tiny_onnx(path: Path) -> None:
    """images uint8 [batch,32,32,3] -> score; includes a TopK with K=5000 (pre-check warns)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", SIZE, SIZE, 3])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", SIZE, SIZE])
    inits = [
        numpy_helper.from_array(np.array([3], dtype=np.int64), "axes3"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes12"),
        numpy_helper.from_array(np.array([5000], dtype=np.int64), "k"),
        numpy_helper.from_array(np.array([-1, SIZE * SIZE], dtype=np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes3"], ["anomaly_map"], keepdims=0),
        helper.make_node("Reshape", ["anomaly_map", "flat"], ["flatmap"]),
        helper.make_node("TopK", ["flatmap", "k"], ["top", "idx"], axis=1, name="distance/TopK"),
        helper.make_node("ReduceMax", ["top"], ["score"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "g", [x], [score, amap], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _make_bundle(root: Path) -> Path:
    from pyimgano_deploy.bundles import SCHEMA_VERSION, config_sha256, save_golden, write_manifest

    root.mkdir(parents=True)
    _tiny_onnx(root / "model.onnx")
    pre = {"size": [SIZE, SIZE], "interpolation": "linear", "center_crop": None}
    (root / "infer_config.json").write_text(json.dumps({
        "schema_version": "1.0", "model": {"name": "toy", "family": "knn"}, "preprocess": pre,
        "thresholds": {"image": _threshold(0.5), "pixel": None}, "tiling": None, "defects": None}))
    rng = np.random.default_rng(0)
    save_golden(root / "golden.npz", rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8),
                rng.random(2, dtype=np.float32), rng.random((2, SIZE, SIZE), dtype=np.float32))
    parity = {"n_images": 2, "max_abs_score": 0.0, "max_rel_score": 0.0, "max_abs_map": 0.0, "map_range": [0.0, 1.0],
              "labels_identical": True, "tolerance": {"score_abs": 1e-4, "map_abs": 1e-3}}
    write_manifest(root, {
        "schema_version": SCHEMA_VERSION,
        "toolkit": {"name": "pyimgano-deploy", "version": "0.1.0"},
        "created_at": "2024-05-01T12:00:00Z",
        "model": {"name": "toy", "family": "knn", "parameters": {}},
        "input": {"name": "images", "layout": "NHWC", "dtype": "uint8", "channels": "RGB",
                  "height": SIZE, "width": SIZE, "preprocess": pre},
        "outputs": [{"name": "score", "shape": ["batch"], "dtype": "float32"},
                    {"name": "anomaly_map", "shape": ["batch", SIZE, SIZE], "dtype": "float32"}],
        "engines": [{"file": "model.onnx", "format": "onnx", "precision": "fp32", "opset": 17,
                     "external_data": False, "batch": {"min": 1, "opt": 8, "max": 32, "dynamic": True}}],
        "thresholds": {"image": _threshold(0.5), "pixel": None},
        "defects": None, "tiling": None, "environment": {},
        "source_run": {"path": "runs/toy", "config_sha256": config_sha256({}), "metrics": {}},
        "parity": {"fp32": parity},
        "golden": {"file": "golden.npz", "n_images": 2},
    })
    return root


def test_without_tensorrt_exits_5_with_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    (bundle / "model.onnx").write_bytes(b"fake")
    result = CliRunner().invoke(main, ["build-engine", str(bundle), "--fp16"])
    assert result.exit_code == 5, result.output
    assert "cannot build a TensorRT engine on this machine" in result.output
    assert "TensorRT is not installed" in result.output and HINT in result.output
    assert not (bundle / "engines").exists()


def test_bad_batch_range_is_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["build-engine", str(tmp_path), "--min-batch", "8", "--opt-batch", "4"])
    assert result.exit_code == 2 and "--min-batch <= --opt-batch <= --max-batch" in result.output


def _fake_available(monkeypatch):
    monkeypatch.setattr(cmd, "tensorrt_available", lambda: (True, "TensorRT 10.3.0 on Fake GPU"))


def test_invalid_bundle_exit_code(monkeypatch, tmp_path):
    pytest.importorskip("pyimgano_deploy.bundles.reader")
    _fake_available(monkeypatch)
    bundle = tmp_path / "b"
    bundle.mkdir()
    result = CliRunner().invoke(main, ["build-engine", str(bundle)])
    assert result.exit_code == 3, result.output
    assert "bundle.json" in result.output


def test_engine_registered_in_manifest(monkeypatch, tmp_path):
    pytest.importorskip("pyimgano_deploy.bundles.reader")
    from pyimgano_deploy.bundles import read_bundle, sha256_file

    bundle = _make_bundle(tmp_path / "b")
    _fake_available(monkeypatch)
    calls: list[dict] = []

    def fake_build(onnx_path, engine_dir, **kwargs):
        calls.append({"onnx_path": Path(onnx_path), "engine_dir": Path(engine_dir), **kwargs})
        rel = "engines/sm86-trt10.3.0.plan"
        (Path(engine_dir) / "engines").mkdir(exist_ok=True)
        (Path(engine_dir) / rel).write_bytes(b"PLAN-%d" % len(calls))
        batch = {"min": kwargs["min_batch"], "opt": kwargs["opt_batch"], "max": kwargs["max_batch"]}
        return EngineInfo(rel, "10.3.0", "Fake GPU", "8.6", "fp16" if kwargs["fp16"] else "fp32", batch)

    monkeypatch.setattr(cmd, "_build_engine", fake_build)
    runner = CliRunner()
    args = ["build-engine", str(bundle), "--fp16", "--max-batch", "16", "--opt-batch", "4",
            "--workspace-gb", "2", "--timing-cache", str(tmp_path / "tc.bin")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "K=5000" in result.output  # offline pre-check warning (build still attempted)
    call = calls[0]
    assert call["onnx_path"] == bundle / "model.onnx" and call["hw"] == (SIZE, SIZE)
    assert call["input_name"] == "images" and call["workspace_gb"] == 2.0
    assert call["timing_cache_path"] == tmp_path / "tc.bin"

    b = read_bundle(bundle)
    trt_entries = [e for e in b.engines if e["format"] == "tensorrt"]
    assert len(b.engines) == 2 and len(trt_entries) == 1
    entry = trt_entries[0]
    assert entry["file"] == "engines/sm86-trt10.3.0.plan" and entry["precision"] == "fp16"
    assert entry["gpu"] == {"name": "Fake GPU", "compute_capability": "8.6"}
    assert entry["batch"] == {"min": 1, "opt": 4, "max": 16, "dynamic": True}
    assert entry["sha256"] == sha256_file(bundle / entry["file"])
    listed = {f["path"]: f["sha256"] for f in b.manifest["files"]}
    assert listed[entry["file"]] == entry["sha256"]

    # rebuilding replaces the entry for the same file instead of appending a duplicate
    result = runner.invoke(main, ["build-engine", str(bundle)])
    assert result.exit_code == 0, result.output
    b = read_bundle(bundle)
    entries = [e for e in b.engines if e["format"] == "tensorrt"]
    assert len(entries) == 1 and entries[0]["precision"] == "fp32"
    assert entries[0]["sha256"] == sha256_file(bundle / entries[0]["file"])


def test_build_time_unavailable_exits_5(monkeypatch, tmp_path):
    pytest.importorskip("pyimgano_deploy.bundles.reader")
    bundle = _make_bundle(tmp_path / "b")
    _fake_available(monkeypatch)

    def gone(*args, **kwargs):
        raise TensorRTUnavailableError(f"no NVIDIA GPU found; {HINT}")

    monkeypatch.setattr(cmd, "_build_engine", gone)
    result = CliRunner().invoke(main, ["build-engine", str(bundle)])
    assert result.exit_code == 5 and "no NVIDIA GPU found" in result.output

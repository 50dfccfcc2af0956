"""`pyimgano-deploy validate` exit codes on a real tiny bundle and tampered copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from bundle_factory import build_tiny_bundle, rewrite_manifest
from click.testing import CliRunner

from pyimgano_deploy.bundles import load_golden, save_golden
from pyimgano_deploy.cli import main
from pyimgano_deploy.runtimes.validation import validate_bundle


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b")


@pytest.fixture()
def bundle(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "b"
    shutil.copytree(pristine, copy)
    return copy


def _validate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def test_ok_bundle_exits_0_with_table_and_json(bundle: Path) -> None:
    code, out = _validate(str(bundle))
    assert code == 0
    for name in ("structure", "checksums", "signature", "thresholds", "engine", "golden", "pipeline"):
        assert name in out
    assert "result: OK (exit 0)" in out
    code, out = _validate(str(bundle), "--json", "--engine", "onnx")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["exit_code"] == 0
    assert [c["status"] for c in report["checks"]] == ["pass"] * 7
    assert report["digest"].startswith("sha256:") and len(report["digest"]) == 71
    assert report["parity"]["max_abs_score"] <= 1e-5 and report["parity"]["labels_identical"] is True


def test_precision_the_bundle_lacks_exits_5(bundle: Path) -> None:
    code, out = _validate(str(bundle), "--precision", "fp16")
    assert code == 5 and "fp16" in out


def test_flipped_byte_exits_4(bundle: Path) -> None:
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    code, out = _validate(str(bundle))
    assert code == 4 and "model.onnx" in out and "sha256" in out


def test_deleted_file_exits_3(bundle: Path) -> None:
    (bundle / "golden.npz").unlink()
    code, out = _validate(str(bundle))
    assert code == 3 and "golden.npz" in out


def test_nan_threshold_in_manifest_exits_3(bundle: Path) -> None:
    _edit_json(bundle / "bundle.json", lambda m: m["thresholds"]["image"].__setitem__("value", float("nan")))
    code, out = _validate(str(bundle), "--json")
    assert code == 3 and "thresholds.image.value" in out


def test_path_leaving_bundle_exits_3(bundle: Path) -> None:
    def edit(m: dict) -> None:
        m["files"].append({"path": "../outside.bin", "sha256": "0" * 64, "bytes": 1})

    _edit_json(bundle / "bundle.json", edit)
    code, out = _validate(str(bundle))
    assert code == 3 and "../outside.bin" in out


def test_schema_2_exits_3(bundle: Path) -> None:
    _edit_json(bundle / "bundle.json", lambda m: m.__setitem__("schema_version", "2.0"))
    code, out = _validate(str(bundle))
    assert code == 3 and "2.0" in out


def test_missing_bundle_dir_exits_3(tmp_path: Path) -> None:
    assert _validate(str(tmp_path / "does-not-exist"))[0] == 3


def test_tampered_golden_outputs_exit_6(bundle: Path) -> None:
    """A bundle whose golden outputs fail the export's gate fails validate: one gate for both."""
    from pyimgano_deploy.bundles.parity import compare_outputs
    from pyimgano_deploy.bundles import read_bundle

    golden = load_golden(bundle / "golden.npz")
    thr = read_bundle(bundle).image_threshold.value
    export_gate = compare_outputs(golden["score"] + 0.05, golden["anomaly_map"], golden["score"], golden["anomaly_map"],
                                  threshold=thr, precision="fp32")
    assert not export_gate.passed
    save_golden(bundle / "golden.npz", golden["images"], golden["score"] + 0.05, golden["anomaly_map"])
    rewrite_manifest(bundle)
    code, out = _validate(str(bundle), "--json")
    report = json.loads(out)
    golden = next(c for c in report["checks"] if c["name"] == "golden")
    assert code == 6 and golden["status"] == "fail" and report["checks"][-1]["status"] == "skip"
    assert next(c for c in report["checks"] if c["name"] == "engine")["status"] == "pass"


def test_garbage_engine_is_an_invalid_bundle_exit_3(bundle: Path) -> None:
    """Broken content is exit 3; exit 5 is kept for an engine that cannot load on this machine."""
    (bundle / "model.onnx").write_bytes(b"this is not an onnx model" * 10)
    rewrite_manifest(bundle)
    code, out = _validate(str(bundle))
    assert code == 3 and "model.onnx" in out and "not an ONNX model" in out
    assert "SKIP" in out  # golden skipped after the engine failed


def test_tensorrt_requested_on_cpu_machine_exits_5(bundle: Path) -> None:
    report = validate_bundle(bundle, engine="tensorrt")
    engine = next(c for c in report.checks if c.name == "engine")
    assert report.exit_code == 5 and engine.status == "fail"


def test_bundle_without_golden_sources_skips_the_pipeline_check(bundle: Path) -> None:
    """Bundles exported before schema 1.1 carry no source files: still valid, the check says why."""
    golden = load_golden(bundle / "golden.npz")
    save_golden(bundle / "golden.npz", golden["images"], golden["score"], golden["anomaly_map"])
    rewrite_manifest(bundle, lambda m: m["golden"].pop("n_sources"))
    code, out = _validate(str(bundle), "--json")
    pipeline = next(c for c in json.loads(out)["checks"] if c["name"] == "pipeline")
    assert code == 0 and pipeline["status"] == "skip" and "before schema 1.1" in pipeline["detail"]

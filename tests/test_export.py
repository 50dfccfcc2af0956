"""Export: ONNX parity against eager, the bundle, atomic writes, determinism, external data."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from pyimgano_deploy.bundles.exit_codes import EXIT_OUTPUT
from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.cli import main
from pyimgano_deploy.exporters.bundle_export import BundleExistsError, ExportOptions, export_run
from pyimgano_deploy.exporters.onnx_export import onnx_outputs
from pyimgano_deploy.bundles.parity import ParityError, compare_outputs
from pyimgano_deploy.exporters.tensorrt_compat import check_tensorrt_compatibility

from run_factory import make_run_dir


@pytest.fixture(scope="module", params=["vision_patchcore", "vision_padim"])
def run_dir(request, tmp_path_factory):
    kw = {"coreset_ratio": 0.2} if request.param == "vision_patchcore" else {"d": 16}
    return make_run_dir(tmp_path_factory.mktemp(request.param), request.param, **kw)


@pytest.fixture(scope="module")
def bundle(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    export_run(run_dir, out, ExportOptions(golden=4), log=lambda m: None)
    return out


def test_onnx_matches_eager_on_new_images(run_dir, bundle):
    from pyimgano_deploy.models.detectors.base import Detector

    det = Detector.load(run_dir / "model")
    rng = np.random.default_rng(11)
    batch = rng.integers(0, 255, size=(5, 64, 64, 3), dtype=np.uint8)
    es, em = det.predict_batch(batch)
    xs, xm = onnx_outputs(bundle / "model.onnx", batch, batch_size=3)
    thr = det.threshold.value
    assert np.abs(es - xs).max() <= 1e-4 * max(1.0, abs(thr))
    assert np.abs(em - xm).max() <= 1e-3 * (em.max() - em.min())


def test_manifest_records_parity_and_verifies(bundle):
    b = read_bundle(bundle)
    par = b.manifest["parity"]["fp32"]
    assert par["labels_identical"] is True and par["n_images"] == 4
    assert par["max_abs_score"] <= par["tolerance"]["score_abs"]
    assert b.manifest["input"]["dtype"] == "uint8" and b.manifest["engines"][0]["opset"] >= 17
    assert b.image_threshold is not None and b.manifest["source_run"]["config_sha256"]
    g = b.load_golden()
    assert g["images"].dtype == np.uint8 and g["images"].std() > 0  # real images, not zeros


def test_graph_contract_dynamic_batch_and_no_cdist(bundle):
    m = onnx.load(str(bundle / "model.onnx"))
    assert [i.name for i in m.graph.input] == ["images"]
    assert [o.name for o in m.graph.output] == ["score", "anomaly_map"]
    dims = m.graph.output[1].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [64, 64]
    assert m.opset_import[0].version >= 17
    ops = {n.op_type for n in m.graph.node}
    assert "Loop" not in ops and "If" not in ops
    conv_outputs = {n.output[0] for n in m.graph.node if n.op_type == "Conv"}
    assert not [n.name for n in m.graph.node if n.op_type == "Slice" and n.input[0] in conv_outputs]  # folded into pads


def test_exported_graph_is_tensorrt_compatible(bundle):
    report = check_tensorrt_compatibility(bundle / "model.onnx", max_batch=32)
    assert report.ok, report.format_table()


def test_refuses_to_overwrite_without_force(run_dir, bundle):
    with pytest.raises(BundleExistsError, match="--force"):
        export_run(run_dir, bundle, ExportOptions(golden=4), log=lambda m: None)


def test_failed_export_leaves_nothing(run_dir, tmp_path, monkeypatch):
    import pyimgano_deploy.exporters.bundle_export as be

    def always_fail(*a, **k):
        r = compare_outputs(np.zeros(2), np.zeros((2, 2, 2)), np.ones(2), np.zeros((2, 2, 2)), threshold=0.5, precision="fp32")
        return r

    monkeypatch.setattr(be, "compare_outputs", always_fail)
    out = tmp_path / "b"
    with pytest.raises(ParityError, match="parity gate failed"):
        export_run(run_dir, out, ExportOptions(golden=4), log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_and_exports_are_deterministic(run_dir, tmp_path):
    out = tmp_path / "b"
    export_run(run_dir, out, ExportOptions(golden=4), log=lambda m: None)
    first_onnx = (out / "model.onnx").read_bytes()
    first = json.loads((out / "bundle.json").read_text())
    export_run(run_dir, out, ExportOptions(golden=4, force=True), log=lambda m: None)
    second = json.loads((out / "bundle.json").read_text())
    assert (out / "model.onnx").read_bytes() == first_onnx
    assert (out / "golden.npz").read_bytes() == (out / "golden.npz").read_bytes()
    first.pop("created_at"), second.pop("created_at")
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_external_data_when_model_exceeds_threshold(run_dir, tmp_path):
    out = tmp_path / "b"
    export_run(run_dir, out, ExportOptions(golden=4, external_data_threshold=1024), log=lambda m: None)
    assert (out / "model.onnx.data").is_file()
    b = read_bundle(out)
    assert "model.onnx.data" in {f["path"] for f in b.manifest["files"]}
    assert b.manifest["engines"][0]["external_data"] is True
    g = b.load_golden()
    xs, _ = onnx_outputs(out / "model.onnx", g["images"])
    np.testing.assert_allclose(xs, g["score"], rtol=1e-5, atol=1e-5)


def test_cli_export_and_exit_codes(run_dir, tmp_path):
    out = tmp_path / "cli_bundle"
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--run", str(run_dir), "--out", str(out), "--golden", "3", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["engines"] == ["model.onnx"] and summary["parity"]["fp32"]["labels_identical"]
    r = runner.invoke(main, ["export", "--run", str(run_dir), "--out", str(out)])
    assert r.exit_code == EXIT_OUTPUT and "--force" in r.output
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    r = runner.invoke(main, ["export", "--run", str(run_dir), "--out", str(a_file / "b"), "--json"])
    assert r.exit_code == EXIT_OUTPUT and f"{a_file} is a file, not a folder" in json.loads(r.stdout)["error"]
    r = runner.invoke(main, ["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_tensorrt_flag_without_tensorrt_fails_clearly(run_dir, tmp_path):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; this test covers machines without it")
    except ImportError:
        pass
    r = CliRunner().invoke(main, ["export", "--run", str(run_dir), "--out", str(tmp_path / "t"), "--tensorrt", "--golden", "2"])
    assert r.exit_code == 5 and "tensorrt" in r.output.lower()
    assert not (tmp_path / "t").exists()


def test_parity_table_names_the_difference():
    r = compare_outputs(np.array([1.0, 2.0]), np.zeros((2, 3, 3)), np.array([1.0, 2.5]), np.zeros((2, 3, 3)), threshold=1.5, precision="fp32")
    assert not r.passed and "5.00e-01" in r.table()


def test_api_run_requires_a_calibrated_detector(tmp_path):
    from pyimgano_deploy.models import create_model
    from pyimgano_deploy.workbench.api_run import write_api_run

    det = create_model("vision_padim", pretrained=False, image_size=32, d=4, progress=False)
    det.fit(np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8), input_format="rgb_u8_hwc")
    with pytest.raises(ValueError, match="calibrate_threshold"):
        write_api_run(tmp_path / "r", det, calibration_inputs=["x.png"])

"""fp16 export with the pretrained EfficientNet-Lite0 (random-init fp16 features are not
representative: their activations overflow the half range)."""

import numpy as np
import pytest

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.parity import GATE_RULE
from pyimgano_deploy.runtimes.validation import validate_bundle
from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
from pyimgano_deploy.exporters.onnx_export import onnx_outputs

from run_factory import make_run_dir


@pytest.mark.pretrained
@pytest.mark.parametrize("model", ["vision_patchcore", "vision_padim"])
def test_fp16_bundle_passes_gate_and_keeps_distances_fp32(model, tmp_path):
    import onnx

    run = make_run_dir(tmp_path, model, size=96, pretrained=True)
    out = tmp_path / "b"
    export_run(run, out, ExportOptions(precision="fp16", golden=4), log=lambda m: None)
    b = read_bundle(out)
    assert [e["precision"] for e in b.engines] == ["fp32", "fp16"]
    par = b.manifest["parity"]["fp16"]
    assert par["labels_identical"] and par["max_abs_score"] <= par["tolerance"]["score_abs"]
    g = onnx.load(str(out / "model.fp16.onnx"))
    conv_inputs = {n.input[1] for n in g.graph.node if n.op_type == "Conv"}
    inits = {i.name: i for i in g.graph.initializer}
    assert any(inits[c].data_type == onnx.TensorProto.FLOAT16 for c in conv_inputs if c in inits)
    head_inputs = {i for n in g.graph.node if n.name.startswith("/scorer/") for i in n.input}
    head = [inits[i] for i in head_inputs if i in inits and inits[i].data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert head and all(i.data_type == onnx.TensorProto.FLOAT for i in head)
    s16, _ = onnx_outputs(out / "model.fp16.onnx", b.load_golden()["images"])
    assert np.all(np.isfinite(s16))
    report = validate_bundle(out, engine="onnx", precision="fp16")
    assert report.ok and report.engine_info["precision"] == "fp16" and report.parity["tolerance"]["rule"] == GATE_RULE

"""Offline TensorRT 10 compatibility checks on small ONNX graphs (no TensorRT, no GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pyimgano_deploy.exporters.tensorrt_compat import CompatReport, check_tensorrt_compatibility
from pyimgano_deploy.exporters.tensorrt_ops import (
    TENSORRT10_LATER_OPS,
    TENSORRT10_ONNX_OPS,
    is_supported_op,
)


def _model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _clean_model() -> onnx.ModelProto:
    """uint8 NHWC images -> float -> mean over H,W,C -> score [batch]."""
    x = helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 16, 16, 3])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    axes = numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("ReduceMean", ["f", "axes"], ["score"], keepdims=0, name="mean"),
    ]
    return _model(nodes, [x], [y], [axes], opset=18)


def test_op_list_sane():
    for op in ("Conv", "MatMul", "TopK", "ReduceMin", "Sqrt", "Resize", "Cast", "Slice", "Gemm"):
        assert op in TENSORRT10_ONNX_OPS
    for op in ("StringNormalizer", "Unique", "SequenceAt", "ConvInteger"):
        assert op not in TENSORRT10_ONNX_OPS
    assert not set(TENSORRT10_LATER_OPS) & TENSORRT10_ONNX_OPS
    assert is_supported_op("Conv") and not is_supported_op("Conv", "com.acme")


def test_clean_graph_passes():
    report = check_tensorrt_compatibility(_clean_model())
    assert isinstance(report, CompatReport)
    assert report.ok, report.format_table()
    assert report.problems == []
    assert report.op_counts == {"Cast": 1, "ReduceMean": 1}
    assert report.checked_opset == 18
    assert any("uint8" in n for n in report.notes)
    assert "OK" in report.format_table()
    assert report.to_dict()["ok"] is True


def test_torch_exported_module_passes(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from pyimgano_deploy.exporters.onnx_export import trace_to_onnx

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.register_buffer("bank", torch.randn(10, 4))

        def forward(self, images):
            x = images.permute(0, 3, 1, 2).float() / 255.0
            f = self.conv(x)
            b, c, h, w = f.shape
            q = f.permute(0, 2, 3, 1).reshape(b, h * w, c)
            d = (q * q).sum(-1, keepdim=True) - 2 * q @ self.bank.T + (self.bank * self.bank).sum(1)
            amap = d.min(-1).values.clamp(min=0).sqrt().reshape(b, h, w)
            return amap.amax(dim=(1, 2)), amap[:, 1:, :]

    path = tmp_path / "head.onnx"
    trace_to_onnx(Head().eval(), (torch.zeros(2, 16, 16, 3, dtype=torch.uint8),), path, opset=17, input_names=["images"],
                  output_names=["score", "anomaly_map"],
                  dynamic_axes={"images": {0: "batch"}, "score": {0: "batch"}, "anomaly_map": {0: "batch"}})
    report = check_tensorrt_compatibility(path)
    assert report.ok, report.format_table()
    assert report.checked_opset == 17
    assert {"Conv", "MatMul", "ReduceMin", "Sqrt"} <= set(report.op_counts)
    # torch writes INT64_MAX as the Slice end of amap[:, 1:, :]: noted, not a problem
    assert any("Slice" in n for n in report.notes)


def test_custom_domain_op_fails():
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("FancyNorm", ["images"], ["y"], domain="com.acme", name="fancy")
    report = check_tensorrt_compatibility(_model([node], [x], [y], extra_opsets=[("com.acme", 1)]))
    assert not report.ok
    assert any("com.acme::FancyNorm" in p for p in report.problems)
    assert "com.acme::FancyNorm" in report.op_counts
    table = report.format_table()
    assert "FAILED" in table and "FancyNorm" in table


def test_unsupported_standard_op_fails():
    x = helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, ["batch", 4])
    node = helper.make_node("StringNormalizer", ["text"], ["y"], case_change_action="LOWER", name="norm")
    report = check_tensorrt_compatibility(_model([node], [x], [y]))
    assert not report.ok
    assert any("StringNormalizer" in p and "not supported" in p for p in report.problems)


def test_later_tensorrt10_op_names_release():
    x = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("w", TensorProto.FLOAT, [None])
    node = helper.make_node("HannWindow", ["n"], ["w"], name="hann")
    report = check_tensorrt_compatibility(_model([node], [x], [y]))
    assert any("HannWindow" in p and "10.4" in p for p in report.problems)


def _topk_model(k: int | None, *, sorted_: int = 1) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8000])
    vals = helper.make_tensor_value_info("vals", TensorProto.FLOAT, ["batch", None])
    inputs = [x]
    inits = []
    if k is None:
        inputs.append(helper.make_tensor_value_info("k", TensorProto.INT64, [1]))
    else:
        inits.append(numpy_helper.from_array(np.array([k], dtype=np.int64), "k"))
    node = helper.make_node("TopK", ["images", "k"], ["vals", "idx"], axis=1, sorted=sorted_, name="topk")
    return _model([node], inputs, [vals], inits)


def test_topk_within_limit_passes():
    report = check_tensorrt_compatibility(_topk_model(3))
    assert report.ok, report.format_table()


def test_topk_too_large_fails():
    report = check_tensorrt_compatibility(_topk_model(5000))
    assert not report.ok
    assert any("TopK node 'topk'" in p and "K=5000" in p and "3840" in p for p in report.problems)
    assert check_tensorrt_compatibility(_topk_model(5000), max_topk=8000).ok


def test_topk_dynamic_k_and_unsorted_fail():
    dyn = check_tensorrt_compatibility(_topk_model(None))
    assert any("not a constant" in p for p in dyn.problems)
    unsorted = check_tensorrt_compatibility(_topk_model(3, sorted_=0))
    assert any("sorted=0" in p for p in unsorted.problems)


def _huge_model() -> onnx.ModelProto:
    a = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 50000, 8])
    b = helper.make_tensor_value_info("bank", TensorProto.FLOAT, [8, 50000])
    y = helper.make_tensor_value_info("d", TensorProto.FLOAT, ["batch", 50000])
    nodes = [
        helper.make_node("MatMul", ["images", "bank"], ["prod"], name="distance/MatMul"),
        helper.make_node("ReduceMin", ["prod"], ["d"], axes=[2], keepdims=0, name="distance/ReduceMin"),
    ]
    return _model(nodes, [a, b], [y], opset=17)


def test_huge_tensor_fails():
    report = check_tensorrt_compatibility(_huge_model())
    assert not report.ok
    # 32 * 50000 * 50000 = 8e10 elements for the shape-inferred MatMul output
    assert any("'prod'" in p and "80000000000" in p for p in report.problems), report.problems


def test_volume_limit_uses_max_batch():
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1000, 1000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1000, 1000])
    model = _model([helper.make_node("Relu", ["images"], ["y"])], [x], [y])
    assert check_tensorrt_compatibility(model, max_batch=32).ok
    small = check_tensorrt_compatibility(model, max_batch=32, max_elements=10_000_000)
    assert any("32000000" in p for p in small.problems)


def _int64_model(value: int, consumer: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("images", TensorProto.INT64, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, ["batch", None])
    init = numpy_helper.from_array(np.array([value], dtype=np.int64), "c")
    if consumer == "Add":
        nodes = [helper.make_node("Add", ["images", "c"], ["y"], name="add")]
        inits = [init]
    else:
        starts = numpy_helper.from_array(np.array([1], dtype=np.int64), "starts")
        axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
        nodes = [helper.make_node("Slice", ["images", "starts", "c", "axes"], ["y"], name="slice")]
        inits = [init, starts, axes]
    return _model(nodes, [x], [y], inits)


def test_int64_out_of_int32_range_fails():
    report = check_tensorrt_compatibility(_int64_model(2**40, "Add"))
    assert not report.ok
    assert any("'c'" in p and "int32" in p and str(2**40) in p for p in report.problems)
    assert check_tensorrt_compatibility(_int64_model(7, "Add")).ok


def test_int64_slice_sentinel_is_only_noted():
    report = check_tensorrt_compatibility(_int64_model(2**63 - 1, "Slice"))
    assert report.ok, report.format_table()
    assert any("Slice" in n for n in report.notes)


def test_int64_external_data_is_read_from_path(tmp_path: Path):
    model = _int64_model(-(2**35), "Add")
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    assert (tmp_path / "m.onnx.data").is_file()
    report = check_tensorrt_compatibility(path)
    assert any(str(-(2**35)) in p for p in report.problems)


def test_dynamic_non_batch_axis_fails():
    x = helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", "h", 16, 3])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, ["batch", "h", 16, 3])
    report = check_tensorrt_compatibility(_model([helper.make_node("Identity", ["images"], ["y"])], [x], [y]))
    assert any("input 'images' axis 1 is dynamic" in p for p in report.problems)
    assert any("output 'y' axis 1 is dynamic" in p for p in report.problems)


def test_uint8_input_needs_opset_17():
    model = _clean_model()
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", 13))
    model.graph.node[1].CopyFrom(helper.make_node("ReduceMean", ["f"], ["score"], axes=[1, 2, 3], keepdims=0))
    report = check_tensorrt_compatibility(model)
    assert report.checked_opset == 13
    assert any("uint8" in p and "opset 13" in p for p in report.problems)


def test_missing_file_raises(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        check_tensorrt_compatibility(tmp_path / "nope.onnx")

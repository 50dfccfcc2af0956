"""Folding SAME-padding slices into asymmetric Conv pads is exact."""

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pyimgano_deploy.exporters.graph_rewrites import fold_conv_output_slices
from pyimgano_deploy.exporters.onnx_export import trace_to_onnx


class _ConvThenCrop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=2, bias=False)

    def forward(self, x):
        return self.conv(x)[:, :, 1:, 1:]


def test_slices_after_strided_conv_are_folded_exactly(tmp_path):
    m = _ConvThenCrop().eval()
    x = torch.randn(2, 3, 17, 16)
    path = tmp_path / "m.onnx"
    trace_to_onnx(m, (x,), path, opset=17, input_names=["x"], output_names=["y"])
    model = onnx.load(str(path))
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x.numpy()})[0]
    assert fold_conv_output_slices(model) >= 1
    onnx.checker.check_model(model, full_check=True)
    assert "Slice" not in {n.op_type for n in model.graph.node}
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(after, m(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def _loop_model() -> onnx.ModelProto:
    """y = x · 2 · 2 · 2: a Loop of 3 trips whose body multiplies by a Constant of the outer graph."""
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Mul", ["acc_in", "two"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Constant", [], ["two"], name="/scorer/Constant", value=helper.make_tensor("v", TensorProto.FLOAT, [], [2.0])),
        helper.make_node("Constant", [], ["trips"], name="/scorer/Constant_1", value=helper.make_tensor("t", TensorProto.INT64, [], [3])),
        helper.make_node("Constant", [], ["yes"], name="/scorer/Constant_2", value=helper.make_tensor("b", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["trips", "yes", "x"], ["y"], name="/scorer/Loop_1", body=body),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_rewrites_keep_what_a_loop_body_reads_and_name_its_nodes_under_the_loop():
    from pyimgano_deploy.exporters.graph_rewrites import scope_constants, scope_unnamed_nodes

    model = _loop_model()
    fold_conv_output_slices(model)  # drops unused Constants: "two" is used, by the body only
    scope_constants(model)
    scope_unnamed_nodes(model)
    onnx.checker.check_model(model, full_check=True)
    body = next(a.g for a in model.graph.node[-1].attribute if a.name == "body")
    assert all(n.name.startswith("/scorer/Loop_1/") for n in body.node)
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": np.array([1.0, -3.0], np.float32)})[0]
    np.testing.assert_allclose(y, [8.0, -24.0])

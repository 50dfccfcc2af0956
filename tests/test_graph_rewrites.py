"""Folding SAME-padding slices into asymmetric Conv pads is exact."""

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from pyimgano_deploy.exporters.graph_rewrites import fold_conv_output_slices


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
    torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    model = onnx.load(str(path))
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x.numpy()})[0]
    assert fold_conv_output_slices(model) >= 1
    onnx.checker.check_model(model, full_check=True)
    assert "Slice" not in {n.op_type for n in model.graph.node}
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    np.testing.assert_allclose(after, m(x).detach().numpy(), rtol=1e-5, atol=1e-5)

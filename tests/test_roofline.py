"""benchmarks/roofline.py: the bounds are plain arithmetic on the two ceilings, and the
streamed bytes are the MatMul/Gemm constant operands of the graph."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from roofline import roofline, streamed_constant_bytes  # noqa: E402


def test_roofline_bounds_follow_the_two_ceilings():
    # 100 GFLOP/s GEMM, 10 GB/s: Conv 1 GFLOP → 10 ms; MatMul 0.1 GFLOP (1 ms) but 100 MB streamed → 10 ms.
    out = roofline({"Conv": 10**9, "MatMul": 10**8}, {"MatMul": 10**8}, 100.0, 10.0, {"Conv": 20.0, "MatMul": 16.0}, batch=3)
    assert out["ideal_floor_ms"] == pytest.approx(20.0)
    assert out["ideal_max_fraction_of_gemm"] == pytest.approx(1.1e9 / 0.020 / 1e11, abs=1e-3)
    assert out["with_measured_conv_floor_ms"] == pytest.approx(30.0)
    assert out["with_measured_conv_max_fraction_of_gemm"] == pytest.approx(1.1e9 / 0.030 / 1e11, abs=1e-3)
    assert out["streaming_ops"]["MatMul"]["gbs"] == pytest.approx(6.25)
    assert out["ideal_max_images_per_s"] == pytest.approx(150.0) and out["with_measured_conv_max_images_per_s"] == pytest.approx(100.0)


def test_roofline_without_a_profile_gives_only_the_ideal_bound():
    out = roofline({"Gemm": 10**9}, {"Gemm": 4096}, 100.0, 10.0)
    assert out["ideal_max_fraction_of_gemm"] == pytest.approx(1.0)
    assert "with_measured_conv_max_fraction_of_gemm" not in out and "streaming_ops" not in out


def test_streamed_constant_bytes_counts_matmul_initializers(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((64, 32), dtype=np.float32), "W")
    s = numpy_helper.from_array(np.ones((1, 32), dtype=np.float32), "S")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"]), helper.make_node("Mul", ["Y", "S"], ["Z"])], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 64])], [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [4, 32])],
        initializer=[w, s],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert streamed_constant_bytes(path) == {"MatMul": 64 * 32 * 4}

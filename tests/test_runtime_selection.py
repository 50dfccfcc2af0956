"""Engine selection rules (pure function, fake TensorRT probes)."""

from __future__ import annotations

import pytest

from pyimgano_deploy.runtimes.errors import EngineLoadError
from pyimgano_deploy.runtimes.selection import TensorRTProbe, select_engine

ONNX32 = {"file": "model.onnx", "format": "onnx", "precision": "fp32"}
ONNX16 = {"file": "model.fp16.onnx", "format": "onnx", "precision": "fp16"}
PLAN = {
    "file": "engines/sm86-trt10.3.0.plan", "format": "tensorrt", "precision": "fp16",
    "tensorrt_version": "10.3.0", "gpu": {"name": "RTX A4000", "compute_capability": "8.6"},
}
GPU_EPS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def _probe(cc: str = "8.6", trt: str = "10.3.0.26") -> TensorRTProbe:
    return TensorRTProbe(trt_version=trt, gpu_name="GPU", compute_capability=cc)


def test_cpu_only_machine_uses_fp32_onnx_on_cpu() -> None:
    choice = select_engine([ONNX32, ONNX16, PLAN], probe_tensorrt=lambda: TensorRTProbe(reason="not installed"))
    assert (choice.kind, choice.precision, choice.device) == ("onnxruntime", "fp32", "cpu")
    assert choice.providers == ["CPUExecutionProvider"]
    assert any("falling back" in r for r in choice.reasons)


def test_matching_plan_is_preferred() -> None:
    choice = select_engine([ONNX32, PLAN], available_providers=GPU_EPS, probe_tensorrt=_probe)
    assert choice.kind == "tensorrt" and choice.entry["file"] == PLAN["file"]


def test_plan_for_other_gpu_or_trt_falls_back_with_message() -> None:
    choice = select_engine([ONNX32, ONNX16, PLAN], available_providers=GPU_EPS, probe_tensorrt=lambda: _probe(cc="9.0"))
    assert choice.kind == "onnxruntime" and choice.precision == "fp16" and choice.device == "cuda"
    assert choice.providers == GPU_EPS
    assert any("compute capability 8.6" in r for r in choice.reasons)
    choice = select_engine([ONNX32, PLAN], available_providers=GPU_EPS, probe_tensorrt=lambda: _probe(trt="10.0.1"))
    assert choice.kind == "onnxruntime" and choice.precision == "fp32"
    assert any("TensorRT 10.3.0" in r for r in choice.reasons)


def test_explicit_requests() -> None:
    with pytest.raises(EngineLoadError, match="TensorRT"):
        select_engine([ONNX32, PLAN], engine="tensorrt", available_providers=GPU_EPS, probe_tensorrt=lambda: _probe(cc="7.5"))
    with pytest.raises(EngineLoadError, match="GPU"):
        select_engine([ONNX32], engine="tensorrt", device="cpu")
    with pytest.raises(EngineLoadError, match="fp16"):
        select_engine([ONNX32], precision="fp16")
    with pytest.raises(EngineLoadError, match="cuda"):
        select_engine([ONNX32], device="cuda")
    with pytest.raises(ValueError, match="engine"):
        select_engine([ONNX32], engine="openvino")
    choice = select_engine([ONNX32, ONNX16], device="cpu", precision="fp16", available_providers=GPU_EPS)
    assert choice.precision == "fp16" and choice.providers == ["CPUExecutionProvider"]
    choice = select_engine([ONNX32, ONNX16, PLAN], engine="onnx", available_providers=GPU_EPS, probe_tensorrt=_probe)
    assert choice.kind == "onnxruntime" and choice.precision == "fp16"
    info = choice.info()
    assert info["engine"] == "onnxruntime" and info["providers"] == GPU_EPS and info["reasons"]


ONNX8 = {"file": "model.int8.onnx", "format": "onnx", "precision": "int8"}


def test_auto_never_picks_int8_but_a_named_int8_is_chosen() -> None:
    assert select_engine([ONNX32, ONNX8], device="cpu").entry["file"] == "model.onnx"
    assert select_engine([ONNX32, ONNX8], device="cpu", precision="int8").entry["file"] == "model.int8.onnx"
    with pytest.raises(EngineLoadError, match="never picks int8"):
        select_engine([ONNX8], device="cpu")

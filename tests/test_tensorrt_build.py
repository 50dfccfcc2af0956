"""TensorRT engine building: pure helpers, missing-TensorRT errors, and the build flow against a
fake ``tensorrt`` module (the real build runs only where TensorRT and a GPU exist)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from pyimgano_deploy.exporters import tensorrt_build as tb
from pyimgano_deploy.exporters.tensorrt_build import (
    EngineInfo,
    GpuInfo,
    TensorRTBuildError,
    TensorRTUnavailableError,
    build_engine,
    engine_file_name,
    parse_compute_capability,
    parse_engine_file_name,
    select_fp32_layers,
    tensorrt_available,
)


# ------------------------------------------------------------------------------- naming
def test_engine_file_name():
    assert engine_file_name((8, 6), "10.3.0") == "engines/sm86-trt10.3.0.plan"
    assert engine_file_name("9.0", "10.0.1.6") == "engines/sm90-trt10.0.1.6.plan"
    assert engine_file_name((12, 0), "10.8.0") == "engines/sm120-trt10.8.0.plan"
    assert parse_engine_file_name("engines/sm86-trt10.3.0.plan") == ((8, 6), "10.3.0")
    assert parse_engine_file_name("sm120-trt10.8.0.plan") == ((12, 0), "10.8.0")


@pytest.mark.parametrize("cap", ["8", "8.x", (8,), (8, -1), "a.b"])
def test_bad_compute_capability(cap):
    with pytest.raises(ValueError, match="compute_capability"):
        parse_compute_capability(cap)


@pytest.mark.parametrize("version", ["", "10.3 beta", "../10"])
def test_bad_version(version):
    with pytest.raises(ValueError, match="tensorrt_version"):
        engine_file_name((8, 6), version)


def test_batch_range_validated():
    assert tb.validate_batch_range(1, 8, 32) == {"min": 1, "opt": 8, "max": 32}
    with pytest.raises(ValueError, match="min_batch <= opt_batch <= max_batch"):
        tb.validate_batch_range(4, 2, 32)


# ----------------------------------------------------------------------------- pinning
def test_select_fp32_layers_by_declared_scope():
    layers = [
        ("/extractor/net/conv1/Conv", "CONVOLUTION"),
        ("/extractor/net/blocks.3/attn/MatMul", "MATRIX_MULTIPLY"),  # a backbone MatMul stays fp16
        ("/scorer/distance/Gemm", "MATRIX_MULTIPLY"),
        ("/scorer/distance/Add", "ELEMENTWISE"),
        ("scorer.distance.bank_aug", "CONSTANT"),  # the bank constant
        ("[ONNX Layer: /finisher/MatMul_1]", None),  # TensorRT-wrapped name
        ("/members.0/scorer/Sqrt", "UNARY"),  # a ModuleList child
        ("/scorer_like/Sqrt", "UNARY"),  # a prefix of a name is not a scope
        ("/scorer/distance/Gemm", "MATRIX_MULTIPLY"),  # duplicate listed once
    ]
    assert select_fp32_layers(layers, ("scorer", "finisher", "members.0.scorer")) == [
        "/scorer/distance/Gemm",
        "/scorer/distance/Add",
        "scorer.distance.bank_aug",
        "[ONNX Layer: /finisher/MatMul_1]",
        "/members.0/scorer/Sqrt",
    ]


def test_select_fp32_layers_refuses_malformed_scopes():
    with pytest.raises(ValueError, match="dotted module paths"):
        select_fp32_layers([("/a/Add", None)], ("/scorer/",))
    with pytest.raises(ValueError, match="list of module paths"):
        select_fp32_layers([("/a/Add", None)], "scorer")


# ---------------------------------------------------------------------- missing TensorRT
def _onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not parsed before TensorRT is found")
    return path


def test_missing_tensorrt_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    ok, reason = tensorrt_available()
    assert ok is False
    assert "TensorRT is not installed" in reason
    assert "pip install 'pyimgano-deploy[tensorrt]'" in reason
    with pytest.raises(TensorRTUnavailableError, match=r"pyimgano-deploy\[tensorrt\]") as info:
        build_engine(_onnx_file(tmp_path), tmp_path)
    assert info.value.exit_code == 5


def test_missing_gpu_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setattr(tb.shutil, "which", lambda name: None)
    ok, reason = tensorrt_available()
    assert ok is False and "no NVIDIA GPU found" in reason and "pyimgano-deploy[tensorrt]" in reason


def test_gpu_info_from_nvidia_smi(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setattr(tb.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def fake_run(cmd, **kwargs):
        assert "--query-gpu=name,compute_cap" in cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="NVIDIA H100 80GB HBM3, 9.0\n", stderr="")

    monkeypatch.setattr(tb.subprocess, "run", fake_run)
    assert tb.gpu_info() == GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))


def test_build_validates_arguments_before_tensorrt(tmp_path):
    with pytest.raises(ValueError, match="min_batch"):
        build_engine(_onnx_file(tmp_path), tmp_path, min_batch=8, opt_batch=4)
    with pytest.raises(ValueError, match="workspace_gb"):
        build_engine(_onnx_file(tmp_path), tmp_path, workspace_gb=0)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        build_engine(tmp_path / "missing.onnx", tmp_path)


# ------------------------------------------------------------------ fake tensorrt module
class _Enum:
    def __init__(self, name: str) -> None:
        self.name = name

    def __int__(self) -> int:
        return 0


class _Tensor:
    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, shape, dtype


class _Layer:
    def __init__(self, name, type_name, out_dtypes):
        self.name = name
        self.type = _Enum(type_name)
        self.precision = None
        self._outs = [_Tensor(f"{name}:{i}", (), d) for i, d in enumerate(out_dtypes)]
        self.output_types: dict[int, object] = {}

    @property
    def num_outputs(self):
        return len(self._outs)

    def get_output(self, j):
        return self._outs[j]

    def set_output_type(self, j, dtype):
        self.output_types[j] = dtype


def _fake_trt(record: dict, *, parse_ok: bool = True, build_ok: bool = True) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.float32, trt.float16, trt.int32 = "float32", "float16", "int32"
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=_Enum("EXPLICIT_BATCH"))

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            record["logger"] = severity

    class Network:
        def __init__(self):
            self.inputs = [_Tensor("images", (-1, 32, 48, 3), "uint8")]
            self.layers = [
                _Layer("/backbone/Conv", "CONVOLUTION", ["float32"]),
                _Layer("/head/distance/Sub", "ELEMENTWISE", ["float32"]),
                _Layer("/head/TopK", "TOPK", ["float32", "int32"]),
                _Layer("/head/distance/Shape", "SHAPE", ["int64"]),  # selected, never pinned
                _Layer("/head/distance/Gather", "GATHER", ["int32"]),  # no float output: skipped
            ]
            record["network"] = self

        num_inputs = property(lambda self: len(self.inputs))
        num_layers = property(lambda self: len(self.layers))

        def get_input(self, i):
            return self.inputs[i]

        def get_layer(self, i):
            return self.layers[i]

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"CACHE:" + self.data

    class Config:
        def __init__(self):
            self.flags, self.profiles = [], []
            record["config"] = self

        def set_memory_pool_limit(self, pool, size):
            self.pool = (pool, size)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def set_flag(self, flag):
            self.flags.append(flag)

        def create_timing_cache(self, data):
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shape = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            record["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN" if build_ok else None

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path):
            record["parsed"] = path
            return parse_ok

        def get_error(self, i):
            return "In node 3 (importFancy): UNSUPPORTED_NODE: FancyOp"

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


def _install_fake(monkeypatch, record, **kwargs):
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(record, **kwargs))
    monkeypatch.setattr(tb, "gpu_info", lambda device=0: GpuInfo("Fake GPU", (8, 6)))


def test_build_flow_fp16_with_fake_tensorrt(monkeypatch, tmp_path):
    record: dict = {}
    _install_fake(monkeypatch, record)
    cache = tmp_path / "cache" / "trt.cache"
    info = build_engine(_onnx_file(tmp_path), tmp_path, fp16=True, fp32_scopes=("head",), workspace_gb=0.5,
                        min_batch=1, opt_batch=4, max_batch=16, timing_cache_path=cache)
    assert isinstance(info, EngineInfo)
    assert info.file == "engines/sm86-trt10.3.0.plan"
    assert (tmp_path / info.file).read_bytes() == b"PLAN"
    assert cache.read_bytes() == b"CACHE:"  # empty cache created, then saved
    assert (info.tensorrt_version, info.gpu_name, info.compute_capability) == ("10.3.0", "Fake GPU", "8.6")
    assert info.precision == "fp16" and info.batch == {"min": 1, "opt": 4, "max": 16}
    assert record["network_flags"] == 0  # TensorRT 10: no EXPLICIT_BATCH flag
    cfg = record["config"]
    assert cfg.pool == ("WORKSPACE", 1 << 29)
    assert cfg.flags == ["FP16", "OBEY"]
    assert cfg.profiles[0].shape == ("images", (1, 32, 48, 3), (4, 32, 48, 3), (16, 32, 48, 3))
    conv, sub, topk, shape, gather = record["network"].layers
    assert info.fp32_layers == ["/head/distance/Sub", "/head/TopK"]
    assert conv.precision is None and sub.precision == "float32" and sub.output_types == {0: "float32"}
    assert topk.output_types == {0: "float32"}  # int32 indices output untouched
    assert shape.precision is None and gather.precision is None and gather.output_types == {}
    entry = info.to_manifest_entry("ab" * 32)
    assert entry["format"] == "tensorrt" and entry["gpu"] == {"name": "Fake GPU", "compute_capability": "8.6"}
    assert entry["batch"] == {"min": 1, "opt": 4, "max": 16, "dynamic": True} and entry["sha256"] == "ab" * 32


def test_fp16_build_refuses_when_no_layer_is_in_the_fp32_scopes(monkeypatch, tmp_path):
    _install_fake(monkeypatch, {})
    with pytest.raises(TensorRTBuildError, match=r"no layer .* lies in the fp32 scopes \['scorer'\]"):
        build_engine(_onnx_file(tmp_path), tmp_path, fp16=True, fp32_scopes=("scorer",))


def test_build_flow_fp32_reuses_timing_cache(monkeypatch, tmp_path):
    record: dict = {}
    _install_fake(monkeypatch, record)
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"old")
    info = build_engine(_onnx_file(tmp_path), tmp_path, hw=(32, 48), timing_cache_path=cache)
    assert info.precision == "fp32" and info.fp32_layers == []
    assert record["config"].flags == []
    assert cache.read_bytes() == b"CACHE:old"
    with pytest.raises(TensorRTBuildError, match="hw="):
        build_engine(_onnx_file(tmp_path), tmp_path, hw=(64, 64))


def test_parser_and_builder_errors(monkeypatch, tmp_path):
    _install_fake(monkeypatch, {}, parse_ok=False)
    with pytest.raises(TensorRTBuildError, match="UNSUPPORTED_NODE: FancyOp"):
        build_engine(_onnx_file(tmp_path), tmp_path)
    _install_fake(monkeypatch, {}, build_ok=False)
    with pytest.raises(TensorRTBuildError, match="workspace"):
        build_engine(_onnx_file(tmp_path), tmp_path)
    assert not (tmp_path / "engines").exists()


# ---------------------------------------------------------------------- real TensorRT
@pytest.mark.gpu
def test_real_tensorrt_build(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU machine)")
    ok, reason = tensorrt_available()
    if not ok:
        pytest.skip(reason)
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.UINT8, ["batch", 8, 8, 3])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["score"], axes=[1, 2, 3], keepdims=0, name="distance/mean"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    info = build_engine(path, tmp_path, fp16=True, max_batch=4, opt_batch=2, timing_cache_path=tmp_path / "c")
    assert (tmp_path / info.file).stat().st_size > 0
    assert (tmp_path / "c").stat().st_size > 0

"""The one-folder detector contract, checked for every registered detector.

Each detector is built from its spec's ``small_kwargs`` on 64 px random-init inputs:
fit → save → load gives bit-identical scores; the exported graph matches eager; every
distance/statistics node lies inside the declared fp32 scopes; ``models info`` states it.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from pyimgano_deploy.bundles.parity import compare_outputs
from pyimgano_deploy.bundles.precision_scopes import in_scopes
from pyimgano_deploy.exporters.onnx_export import export_module, onnx_outputs
from pyimgano_deploy.models import list_models, model_entry, model_info
from pyimgano_deploy.models.registry import create_model

SIZE = 64
#: ops of a distance/statistics head: outside the submodules that may run in fp16 (the
#: backbone, the embedding), each must lie in an fp32 scope
HEAD_OPS = {"ReduceMin", "ReduceMax", "TopK", "ArgMin", "Sqrt", "Pow", "ReduceL2", "ReduceSum", "ReduceMean", "Softmax"}
#: ops that compute (not shape bookkeeping): each must sit in some module scope, never at the root
ARITHMETIC = HEAD_OPS | {"MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "ReduceMax", "ReduceSum", "ReduceMean",
                         "Softmax", "Clip", "Neg", "ArgMax", "Conv", "Erf", "Resize", "AveragePool"}


def _images(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(99).integers(70, 130, size=(1, size, size, 3))
    return np.clip(base + rng.integers(-25, 25, size=(n, size, size, 3)), 0, 255).astype(np.uint8)


def _build(name: str):
    kwargs = {"pretrained": False, "image_size": SIZE, "progress": False, **model_entry(name).small_kwargs}
    det = create_model(name, **kwargs)
    size = det.input_size[0]
    det.fit(_images(12, 0, size), input_format="rgb_u8_hwc")
    if det.needs_calibration:
        det.calibrate(_images(8, 1, size), input_format="rgb_u8_hwc")
    return det, size


@pytest.fixture(scope="module", params=list_models())
def fitted(request):
    return request.param, *_build(request.param)


def test_save_load_gives_bit_identical_scores_and_maps(fitted, tmp_path):
    name, det, size = fitted
    batch = det.preprocess.batch(list(_images(3, 2, size)))
    det.save(tmp_path / "m")
    loaded = type(det).load(tmp_path / "m")
    assert loaded.model_name == name and loaded.hyperparameters() == det.hyperparameters()
    (s0, m0), (s1, m1) = det.predict_batch(batch), loaded.predict_batch(batch)
    assert np.array_equal(s0, s1) and np.array_equal(m0, m1)


def test_outputs_follow_the_inference_module_protocol(fitted):
    _, det, size = fitted
    scores, maps = det.predict_batch(det.preprocess.batch(list(_images(3, 3, size))))
    assert scores.shape == (3,) and scores.dtype == np.float32 and np.all(np.isfinite(scores))
    assert maps.shape == (3, *det.input_size) and maps.dtype == np.float32


def test_export_parity_on_held_out_images(fitted, tmp_path):
    _, det, size = fitted
    batch = det.preprocess.batch(list(_images(6, 4, size)))
    eager_s, eager_m = det.predict_batch(batch)
    export_module(det.inference_module, batch[:2], tmp_path / "m.onnx")
    onnx_s, onnx_m = onnx_outputs(tmp_path / "m.onnx", batch)
    assert np.all(np.abs(onnx_s - eager_s) <= 1e-4 * np.maximum(1.0, np.abs(eager_s)))
    report = compare_outputs(eager_s, eager_m, onnx_s, onnx_m, threshold=float(np.median(eager_s)), precision="fp32")
    assert report.passed and report.labels_identical


def _nodes(path):
    return list(onnx.load(str(path)).graph.node)


def test_distance_and_statistics_nodes_lie_in_the_declared_fp32_scopes(fitted, tmp_path):
    _, det, size = fitted
    module = det.inference_module
    scopes = tuple(module.fp32_scopes)
    assert scopes, "an inference module must declare its fp32 scopes"
    export_module(module, det.preprocess.batch(list(_images(2, 5, size))), tmp_path / "m.onnx")
    nodes = _nodes(tmp_path / "m.onnx")
    halved = tuple(name for name, _ in module.named_children()
                   if name not in scopes and not any(s.startswith(name + ".") for s in scopes))
    head = [n.name for n in nodes if n.op_type in HEAD_OPS and not in_scopes(n.name, halved)]
    assert head, "no distance or statistics op outside the fp16 submodules"
    assert all(in_scopes(n, scopes) for n in head), [n for n in head if not in_scopes(n, scopes)]
    assert any(n.op_type in ("MatMul", "Gemm") and in_scopes(n.name, scopes) for n in nodes), "no distance product is pinned"
    root = [n.name for n in nodes if n.op_type in ARITHMETIC and n.name.count("/") < 2]
    assert not root, f"arithmetic outside any module scope cannot be pinned: {root}"


def test_fp16_export_keeps_the_fp32_scopes_in_fp32(fitted, tmp_path):
    _, det, size = fitted
    scopes = tuple(det.inference_module.fp32_scopes)
    export_module(det.inference_module, det.preprocess.batch(list(_images(2, 6, size))), tmp_path / "h.onnx", precision="fp16")
    inits = onnx.load(str(tmp_path / "h.onnx")).graph.initializer
    floats = {i.name: i for i in inits if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)}
    read_in_scope = {x for n in _nodes(tmp_path / "h.onnx") if in_scopes(n.name, scopes) for x in n.input if x in floats}
    assert all(in_scopes(x, scopes) for x in read_in_scope), sorted(x for x in read_in_scope if not in_scopes(x, scopes))
    in_scope = [floats[x] for x in read_in_scope]
    halved = [i for i in inits if i.data_type == onnx.TensorProto.FLOAT16]
    assert halved, "fp16 export halved nothing"
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in in_scope), [i.name for i in in_scope if i.data_type != onnx.TensorProto.FLOAT]


@pytest.mark.parametrize("name", list_models())
def test_models_info_states_family_summary_memory_and_parameters(name):
    info = model_info(name)
    meta = info["metadata"]
    assert meta["summary"] and meta["paper"] and "bytes" in meta["memory"]
    cls = model_entry(name).load_class()
    assert cls.family == meta["family"] and cls.model_name == name
    assert set(info["parameters"]) >= {"backbone", "pretrained", "stages", "image_size", "interpolation", "center_crop",
                                       "blur_sigma", "seed", "device", "batch_size", "progress"}
    assert cls.__module__.startswith(f"pyimgano_deploy.models.detectors.{name.removeprefix('vision_')}.")

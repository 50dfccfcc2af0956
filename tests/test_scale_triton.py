"""`export-triton` on real exports of small PatchCore and PaDiM runs: configs against Triton's
schema (tritonclient's protobuf), the ensemble's wiring, and the Python-backend models run
through a stub of ``triton_python_backend_utils`` against the torch-free runtime."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import rewrite_manifest
from cli_helpers import run_cli
from run_factory import make_run_dir

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.golden import unpack_sources
from pyimgano_deploy.scale.triton_config import parse_model_config
from pyimgano_deploy.scale.triton_repository import ensemble_problems, model_configs

tritonclient = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed (pip install 'tritonclient[grpc]')")


@pytest.fixture(scope="module", params=["vision_patchcore", "vision_padim"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    root = tmp_path_factory.mktemp(request.param)
    kwargs = {"coreset_ratio": 0.2} if request.param == "vision_patchcore" else {"d": 16}
    run = make_run_dir(root, request.param, size=48, **kwargs)
    return export_run(run, root / "bundle", ExportOptions(golden=4), log=lambda m: None).bundle_dir


@pytest.fixture(scope="module")
def repository(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "models"
    code, stdout, _ = run_cli("export-triton", "--bundle", str(bundle), "--out", str(out), "--json")
    assert code == 0 and json.loads(stdout)["schema_check"].startswith("every config.pbtxt parses")
    return out


def _kind(config) -> str:
    return tritonclient.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind)


def test_every_config_parses_against_tritons_schema(bundle: Path, repository: Path) -> None:
    b = read_bundle(bundle)
    name = b.manifest["model"]["name"]
    configs = {p.parent.name: parse_model_config(p.read_text()) for p in repository.glob("*/config.pbtxt")}
    assert set(configs) == {name, f"{name}_engine", f"{name}_preprocess", f"{name}_postprocess"}
    engine = configs[f"{name}_engine"]
    assert engine.platform == "onnxruntime_onnx" and engine.max_batch_size == b.engines[0]["batch"]["max"]
    assert [i.name for i in engine.input] == ["images"] and list(engine.input[0].dims) == [*b.input_size, 3]
    assert engine.dynamic_batching.preferred_batch_size == [8] and _kind(engine) == "KIND_CPU"
    assert {c.parameters["bundle_digest"].string_value for c in configs.values()} == {b.digest}
    assert configs[name].platform == "ensemble" and [s.model_name for s in configs[name].ensemble_scheduling.step] == [
        f"{name}_preprocess", f"{name}_engine", f"{name}_postprocess"]
    assert (repository / f"{name}_engine" / "1" / "model.onnx").read_bytes() == b.file("model.onnx").read_bytes()
    info = json.loads((repository / name / "bundle_info.json").read_text())
    assert info["bundle_digest"] == b.digest and info["thresholds"]["image"] == b.image_threshold.value


def test_ensemble_wiring_is_checked(bundle: Path) -> None:
    b = read_bundle(bundle)
    configs = model_configs(b, "m")
    assert ensemble_problems(configs) == []
    del configs["m_postprocess"]
    assert any("not in the repository" in p for p in ensemble_problems(configs))


def test_gpu_repository_uses_the_tensorrt_accelerator(bundle: Path, tmp_path: Path) -> None:
    code, _, _ = run_cli("export-triton", "--bundle", str(bundle), "--out", str(tmp_path / "r"), "--gpu", "--name", "m")
    engine = parse_model_config((tmp_path / "r" / "m_engine" / "config.pbtxt").read_text())
    accelerator = engine.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert code == 0 and _kind(engine) == "KIND_GPU" and accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP32"  # this bundle has no fp16 engine: its gate never ran


def test_existing_repository_needs_force_and_tiled_bundles_are_refused(bundle: Path, repository: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("export-triton", "--bundle", str(bundle), "--out", str(repository))
    assert code == 8 and "--force" in err
    tiled = tmp_path / "tiled"
    import shutil

    shutil.copytree(bundle, tiled)
    rewrite_manifest(tiled, lambda m: m.update(tiling={"tile": 48, "stride": 32}))
    code, _, err = run_cli("export-triton", "--bundle", str(tiled), "--out", str(tmp_path / "r"))
    assert code == 3 and "tiled bundle" in err


# ------------------------------------------------------------------ Python backend through a stub
class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, np.asarray(array)

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors: list, error: object = None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


@pytest.fixture
def backend_utils(monkeypatch: pytest.MonkeyPatch) -> None:
    stub = types.ModuleType("triton_python_backend_utils")
    stub.Tensor = _Tensor
    stub.InferenceResponse = _Response
    stub.TritonError = lambda message: message
    stub.get_input_tensor_by_name = lambda request, name: request[name]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)


def _python_model(repository: Path, model: str):
    from google.protobuf import json_format

    from pyimgano_deploy.scale.triton_python import TritonPythonModel

    config = parse_model_config((repository / model / "config.pbtxt").read_text())
    m = TritonPythonModel()
    m.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True), "model_name": model,
                  "model_repository": str(repository / model), "model_version": "1"})
    return m


def test_python_models_and_engine_reproduce_the_runtime(backend_utils: None, bundle: Path, repository: Path) -> None:
    import onnxruntime as ort

    from pyimgano_deploy.runtimes import load_bundle

    b = read_bundle(bundle)
    name = b.manifest["model"]["name"]
    files = unpack_sources(b.load_golden())
    pre, post = _python_model(repository, f"{name}_preprocess"), _python_model(repository, f"{name}_postprocess")
    requests = [{"IMAGE": _Tensor("IMAGE", np.array([[f]], dtype=object))} for f in files] + [{"IMAGE": _Tensor("IMAGE", np.array([[b"not an image"]], dtype=object))}]
    responses = pre.execute(requests)
    assert responses[-1].error is not None and "request image #0" in responses[-1].error
    images = np.concatenate([r.outputs["images"] for r in responses[:-1]])
    session = ort.InferenceSession(str(repository / f"{name}_engine" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    scores, _ = session.run(None, {"images": images})
    labelled = post.execute([{"score": _Tensor("score", scores.reshape(-1, 1))}])[0].outputs
    from pyimgano_deploy.inputs import decode_image

    with load_bundle(bundle) as rt:
        want = rt.infer([decode_image(f, name="golden") for f in files], input_format="rgb_u8_hwc")
    np.testing.assert_allclose(scores, [r.score for r in want], rtol=1e-5)
    assert labelled["label"].reshape(-1).tolist() == [r.label for r in want]
    assert np.all(labelled["threshold"] == np.float32(b.image_threshold.value))


def test_gpu_accelerator_is_fp16_only_for_a_bundle_with_an_fp16_engine(bundle: Path) -> None:
    b = read_bundle(bundle)
    b.manifest["engines"].append({**b.engines[0], "file": "model.fp16.onnx", "precision": "fp16"})  # in memory only
    engine = model_configs(b, "m", gpu=True)["m_engine"]
    assert engine.gpu_accelerator["precision_mode"] == "FP16" and engine.instance_kind == "KIND_GPU"

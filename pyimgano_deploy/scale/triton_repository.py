"""A Triton model repository from a bundle (``pyimgano-deploy export-triton``).

For a bundle served under the name ``N``, four models:

* ``N_engine``: the bundle's fp32 ONNX graph on the ``onnxruntime_onnx`` platform. Input
  ``images`` uint8 ``[H, W, 3]`` (preprocessed, as the bundle's engine takes it), outputs
  ``score`` fp32 ``[1]`` and ``anomaly_map`` fp32 ``[h, w]``; ``max_batch_size`` is the bundle
  engine's largest batch; dynamic batching at its optimal batch. With ``gpu=True``: a GPU
  instance and ONNX Runtime's TensorRT accelerator, FP16 only when the bundle carries an fp16
  engine (its fp16 parity gate passed at export), FP32 otherwise.
* ``N_preprocess`` (Python backend): encoded image file bytes → the bundle's preprocessing,
  with our own decoder (:mod:`pyimgano_deploy.inputs`), so Triton scores what ``infer`` scores.
* ``N_postprocess`` (Python backend): score → label with the bundle's image threshold
  (thresholds are never baked into a graph).
* ``N``: the ensemble ``IMAGE`` (bytes) → ``label``, ``score``, ``threshold``, ``anomaly_map``.

Each model's folder holds ``bundle_info.json``: the bundle's digest, thresholds and
preprocessing, and where it came from (the Python models read the same record from their
``config.pbtxt`` parameter ``pyimgano_bundle_info``, so they need no file lookup). Tiled bundles are refused (their engine scores tiles,
which an ensemble cannot blend); serve them with ``infer`` or tile in the client.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.reader import Bundle
from pyimgano_deploy.scale.triton_config import ModelConfig, Step, Tensor

INFO_FILE = "bundle_info.json"
#: the config.pbtxt parameter that carries bundle_info.json to the Python-backend models
INFO_PARAMETER = "pyimgano_bundle_info"
INFO_SCHEMA_VERSION = "1.0"
PYTHON_MODEL = '''"""Triton Python-backend entry point, written by `pyimgano-deploy export-triton`."""
import os
import sys

# Triton's embedded Python stub does not read PYTHONPATH; honour it, so the environment that
# has pyimgano-deploy installed can be named there when it is not the stub's own.
sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

from pyimgano_deploy.scale.triton_python import TritonPythonModel  # noqa: E402,F401  (Triton loads this class)
'''
ROLES = ("preprocess", "postprocess")  # always Python-backend models; the engine is one on request


class RepositoryExistsError(FileExistsError):
    """The output folder holds files and ``force`` was not given."""


def bundle_info(bundle: Bundle, role: str, u16_max: int | None = None) -> dict[str, Any]:
    """What a served model needs of the bundle (``role``: engine, preprocess, postprocess, ensemble);
    ``u16_max``: the full scale of 16-bit request images (None: they are refused)."""
    image, pixel = bundle.image_threshold, bundle.pixel_threshold
    return {
        "schema_version": INFO_SCHEMA_VERSION, "role": role, "bundle_digest": bundle.digest, "bundle_path": str(bundle.root),
        "model": bundle.manifest["model"]["name"], "input_size": list(bundle.input_size),
        "preprocess": bundle.preprocess.to_dict(),
        "thresholds": {"image": None if image is None else image.value, "pixel": None if pixel is None else pixel.value},
        "u16_max": u16_max,
    }


def _engine_batch(bundle: Bundle) -> tuple[int, int]:
    entry = next(e for e in bundle.engines if e.get("format") == "onnx" and e.get("precision") == "fp32")
    batch = entry.get("batch") or {}
    return int(batch.get("max", 8)), int(batch.get("opt", 8))


ENGINE_BACKENDS = ("onnxruntime", "python")


def model_configs(bundle: Bundle, name: str, *, gpu: bool = False, instances: int = 1,
                  engine_backend: str = "onnxruntime", u16_max: int | None = None) -> dict[str, ModelConfig]:
    """The four configurations of the repository for ``bundle`` served as ``name``.
    ``engine_backend="python"`` serves the engine with ONNX Runtime inside the Python backend
    (:class:`~pyimgano_deploy.runtimes.onnx_session.OnnxSession`), for Triton builds without the
    onnxruntime backend (the one inside ``nvidia-pytriton``, say); CPU only."""
    if engine_backend not in ENGINE_BACKENDS:
        raise ValueError(f"engine backend must be one of {list(ENGINE_BACKENDS)}, got {engine_backend!r}")
    if engine_backend == "python" and gpu:
        raise ValueError("the Python-backend engine runs on CPU; use the onnxruntime backend for --gpu")
    h, w = bundle.input_size
    map_shape = next(o["shape"] for o in bundle.manifest["outputs"] if o["name"] == "anomaly_map")
    mh, mw = int(map_shape[1]), int(map_shape[2])
    max_batch, opt = _engine_batch(bundle)
    batching = {"preferred_batch_size": [min(opt, max_batch)], "max_queue_delay_microseconds": 2000}
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    has_fp16 = any(e.get("precision") == "fp16" and e.get("format") == "onnx" for e in bundle.engines)
    digest = {"bundle_digest": bundle.digest}

    def python_params(role: str) -> dict[str, str]:
        return {**digest, INFO_PARAMETER: json.dumps(bundle_info(bundle, role, u16_max), sort_keys=True)}

    images = Tensor("images", "TYPE_UINT8", (h, w, 3))
    score, amap = Tensor("score", "TYPE_FP32", (1,), reshape=()), Tensor("anomaly_map", "TYPE_FP32", (mh, mw))
    label, threshold = Tensor("label", "TYPE_INT32", (1,)), Tensor("threshold", "TYPE_FP32", (1,))
    image_bytes = Tensor("IMAGE", "TYPE_STRING", (1,))
    return {
        f"{name}_engine": ModelConfig(
            f"{name}_engine", [images], [score, amap], max_batch, dynamic_batching=batching,
            platform="onnxruntime_onnx" if engine_backend == "onnxruntime" else None,
            backend="python" if engine_backend == "python" else None,
            instance_kind=kind, instance_count=instances, parameters=digest if engine_backend == "onnxruntime" else python_params("engine"),
            gpu_accelerator={"precision_mode": "FP16" if has_fp16 else "FP32", "max_workspace_size_bytes": str(1 << 30)} if gpu else None),
        f"{name}_preprocess": ModelConfig(
            f"{name}_preprocess", [image_bytes], [images], max_batch, backend="python", dynamic_batching=batching,
            instance_count=instances, parameters=python_params("preprocess")),
        f"{name}_postprocess": ModelConfig(
            f"{name}_postprocess", [Tensor("score", "TYPE_FP32", (1,))], [label, threshold], max_batch, backend="python",
            instance_count=instances, parameters=python_params("postprocess")),
        name: ModelConfig(
            name, [image_bytes], [label, Tensor("score", "TYPE_FP32", (1,)), threshold, amap], max_batch, platform="ensemble",
            instance_kind=None, parameters=digest, steps=[
                Step(f"{name}_preprocess", {"IMAGE": "IMAGE"}, {"images": "preprocessed"}),
                Step(f"{name}_engine", {"images": "preprocessed"}, {"score": "score", "anomaly_map": "anomaly_map"}),
                Step(f"{name}_postprocess", {"score": "score"}, {"label": "label", "threshold": "threshold"}),
            ]),
    }


def ensemble_problems(configs: dict[str, ModelConfig]) -> list[str]:
    """What Triton would refuse in the ensembles of ``configs`` beyond the schema: a step naming
    an unknown model or tensor, a step input nobody produced, an ensemble output no step makes."""
    problems: list[str] = []
    for name, config in configs.items():
        if not config.steps:
            continue
        available = {t.name for t in config.inputs}
        for step in config.steps:
            model = configs.get(step.model_name)
            if model is None:
                problems.append(f"{name}: step model {step.model_name!r} is not in the repository")
                continue
            for model_input, tensor in step.input_map.items():
                if model_input not in {t.name for t in model.inputs}:
                    problems.append(f"{name}: {step.model_name} has no input {model_input!r}")
                if tensor not in available:
                    problems.append(f"{name}: {step.model_name} reads {tensor!r} before any step produces it")
            for model_output, tensor in step.output_map.items():
                if model_output not in {t.name for t in model.outputs}:
                    problems.append(f"{name}: {step.model_name} has no output {model_output!r}")
                available.add(tensor)
        problems += [f"{name}: output {t.name!r} is produced by no step" for t in config.outputs if t.name not in available]
    return problems


def _copy_engine(bundle: Bundle, dest: Path) -> None:
    entry = next(e for e in bundle.engines if e.get("format") == "onnx" and e.get("precision") == "fp32")
    shutil.copyfile(bundle.file(entry["file"]), dest / "model.onnx")
    if entry.get("external_data"):
        raise ValueError(f"{bundle.root}: the ONNX model keeps its weights in an external data file; "
                         "export the bundle with a higher --external-data-threshold to serve it with Triton")


def write_repository(bundle_path: str | os.PathLike[str], out: str | os.PathLike[str], *, name: str | None = None,
                     gpu: bool = False, instances: int = 1, engine_backend: str = "onnxruntime", force: bool = False,
                     expected_digest: str | None = None, u16_max: int | None = None) -> dict[str, Any]:
    """Verify the bundle, then write the repository to ``out`` (replaced as a whole with
    ``force``; refused when it holds files otherwise); ``u16_max``: the full scale of 16-bit
    request images. Returns ``{path, models, digest, …}``."""
    bundle = read_bundle(bundle_path, expected_digest=expected_digest)
    if bundle.tiling_block is not None:
        raise ValueError(f"{bundle.root} is a tiled bundle: its engine scores tiles, which a Triton ensemble cannot blend; "
                         "serve it with `pyimgano-deploy infer`, or tile in the client and call the engine model")
    name = name or bundle.manifest["model"]["name"]
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"model name must be letters, digits, '_' or '-', got {name!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise RepositoryExistsError(f"{out} already holds files; pass --force to replace it")
    configs = model_configs(bundle, name, gpu=gpu, instances=instances, engine_backend=engine_backend, u16_max=u16_max)
    problems = ensemble_problems(configs)
    if problems:  # our own layout is inconsistent: a bug, never a user's error
        raise AssertionError("; ".join(problems))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for model, config in configs.items():
            folder = tmp / model
            (folder / "1").mkdir(parents=True)
            (folder / "config.pbtxt").write_text(config.text())
            role = model[len(name) + 1:] if model != name else "ensemble"
            (folder / INFO_FILE).write_text(json.dumps(bundle_info(bundle, role, u16_max), indent=2) + "\n")
            if role == "engine":
                _copy_engine(bundle, folder / "1")
            if role in ROLES or (role == "engine" and engine_backend == "python"):
                (folder / "1" / "model.py").write_text(PYTHON_MODEL)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"path": out.as_posix(), "models": sorted(configs), "digest": bundle.digest, "name": name, "gpu": gpu,
            "engine_backend": engine_backend, "u16_max": u16_max, "trained_u16_max": bundle.trained_u16_max}

"""The Python-backend models of an exported Triton repository (``N_preprocess``, ``N_postprocess``,
and ``N_engine`` when the repository was written with ``--engine-backend python``).

Triton imports ``model.py`` in the model's version folder, which re-exports
:class:`TritonPythonModel`; the model's role and the bundle's preprocessing and thresholds come
from the ``pyimgano_bundle_info`` parameter of its ``config.pbtxt`` (the same record as
``bundle_info.json`` beside it). ``triton_python_backend_utils`` exists only
inside Triton's Python backend; it is imported when a model is initialised.

A request whose image cannot be read gets an error response naming the reason; the other
requests of the batch are still answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pyimgano_deploy.inputs import decode_image
from pyimgano_deploy.inputs.loading import INPUT_ERRORS
from pyimgano_deploy.inputs.preprocess import Preprocess
from pyimgano_deploy.postprocess.thresholds import apply_threshold
from pyimgano_deploy.scale.triton_repository import INFO_PARAMETER



def _backend_utils() -> Any:
    import triton_python_backend_utils  # provided by Triton's Python backend

    return triton_python_backend_utils


class TritonPythonModel:
    """Triton's Python-backend interface: ``initialize(args)``, ``execute(requests)``, ``finalize()``."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = _backend_utils()
        params = json.loads(args["model_config"]).get("parameters", {})
        if INFO_PARAMETER not in params:
            raise ValueError(f"model {args.get('model_name')!r}: config.pbtxt has no {INFO_PARAMETER!r} parameter; "
                             "write the repository with `pyimgano-deploy export-triton`")
        info = json.loads(params[INFO_PARAMETER]["string_value"])
        self.role = info["role"]
        if self.role not in ("preprocess", "postprocess", "engine"):
            raise ValueError(f"{INFO_PARAMETER}: role must be preprocess, postprocess or engine, got {self.role!r}")
        self.session = None
        if self.role == "engine":
            from pyimgano_deploy.runtimes.onnx_session import OnnxSession

            self.session = OnnxSession(Path(args["model_repository"]) / args["model_version"] / "model.onnx")
        self.preprocess = Preprocess.from_dict(info["preprocess"])
        self.threshold = info["thresholds"]["image"]
        self.u16_max = info.get("u16_max")
        self.digest = info["bundle_digest"]

    def execute(self, requests: list[Any]) -> list[Any]:
        step = {"preprocess": self._preprocess, "postprocess": self._postprocess, "engine": self._engine}[self.role]
        return [step(r) for r in requests]

    def _engine(self, request: Any) -> Any:
        pb = self.pb
        images = pb.get_input_tensor_by_name(request, "images").as_numpy()
        score, amap = self.session.run(images)
        return pb.InferenceResponse(output_tensors=[pb.Tensor("score", score), pb.Tensor("anomaly_map", amap)])

    def _preprocess(self, request: Any) -> Any:
        pb = self.pb
        blobs = pb.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
        try:
            images = [self.preprocess(decode_image(bytes(b), name=f"request image #{i}", u16_max=self.u16_max)) for i, b in enumerate(blobs)]
        except INPUT_ERRORS as exc:
            return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(f"{type(exc).__name__}: {exc}"))
        return pb.InferenceResponse(output_tensors=[pb.Tensor("images", np.stack(images).astype(np.uint8))])

    def _postprocess(self, request: Any) -> Any:
        pb = self.pb
        scores = self.pb.get_input_tensor_by_name(request, "score").as_numpy().reshape(-1).astype(np.float32)
        thr = np.float32(np.nan if self.threshold is None else self.threshold)
        labels = np.array([[-1 if (v := apply_threshold(float(s), self.threshold)) is None else v] for s in scores], dtype=np.int32)
        return pb.InferenceResponse(output_tensors=[pb.Tensor("label", labels), pb.Tensor("threshold", np.full((len(scores), 1), thr, np.float32))])

    def finalize(self) -> None:
        return None

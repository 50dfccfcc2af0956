"""``config.pbtxt`` text for Triton Inference Server (protobuf text format of Triton's
``ModelConfig``), written without Triton installed. :func:`parse_model_config` checks a text
against the schema that ``tritonclient`` ships (``tritonclient.grpc.model_config_pb2``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from pyimgano_deploy.scale.extras import MissingExtraError

TRITON_INSTALL = "pip install 'tritonclient[grpc]'"


@dataclass(frozen=True)
class Tensor:
    """One model input or output: ``dims`` without the batch dimension; ``reshape`` as Triton's."""

    name: str
    data_type: str  # TYPE_UINT8, TYPE_FP32, TYPE_INT32, TYPE_STRING
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None

    def text(self) -> str:
        parts = [f"name: {json.dumps(self.name)}", f"data_type: {self.data_type}", f"dims: [ {', '.join(map(str, self.dims))} ]"]
        if self.reshape is not None:
            parts.append(f"reshape: {{ shape: [ {', '.join(map(str, self.reshape))} ] }}")
        return "  {\n    " + "\n    ".join(parts) + "\n  }"


@dataclass(frozen=True)
class Step:
    """One step of an ensemble: ``input_map`` / ``output_map`` from the model's tensor names to ensemble tensors."""

    model_name: str
    input_map: dict[str, str]
    output_map: dict[str, str]

    def text(self) -> str:
        def pairs(kind: str, mapping: dict[str, str]) -> str:
            return "\n".join(f"      {kind} {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in mapping.items())

        return (f"    {{\n      model_name: {json.dumps(self.model_name)}\n      model_version: -1\n"
                f"{pairs('input_map', self.input_map)}\n{pairs('output_map', self.output_map)}\n    }}")


@dataclass(frozen=True)
class ModelConfig:
    """The parts of Triton's ``ModelConfig`` the repository uses (``platform`` or ``backend``)."""

    name: str
    inputs: Sequence[Tensor]
    outputs: Sequence[Tensor]
    max_batch_size: int
    platform: str | None = None
    backend: str | None = None
    dynamic_batching: dict[str, Any] | None = None  # {"preferred_batch_size": [...], "max_queue_delay_microseconds": n}
    instance_kind: str | None = "KIND_CPU"
    instance_count: int = 1
    gpu_accelerator: dict[str, str] | None = None  # TensorRT accelerator parameters, e.g. {"precision_mode": "FP16"}
    parameters: dict[str, str] = field(default_factory=dict)
    steps: Sequence[Step] = ()

    def text(self) -> str:
        lines = [f"name: {json.dumps(self.name)}"]
        if self.platform:
            lines.append(f"platform: {json.dumps(self.platform)}")
        if self.backend:
            lines.append(f"backend: {json.dumps(self.backend)}")
        lines.append(f"max_batch_size: {int(self.max_batch_size)}")
        lines.append("input [\n" + ",\n".join(t.text() for t in self.inputs) + "\n]")
        lines.append("output [\n" + ",\n".join(t.text() for t in self.outputs) + "\n]")
        if self.dynamic_batching is not None:
            db = self.dynamic_batching
            preferred = ", ".join(str(int(b)) for b in db.get("preferred_batch_size", []))
            lines.append(f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
                         f"  max_queue_delay_microseconds: {int(db.get('max_queue_delay_microseconds', 0))}\n}}")
        if self.instance_kind is not None and not self.steps:
            lines.append(f"instance_group [\n  {{\n    count: {int(self.instance_count)}\n    kind: {self.instance_kind}\n  }}\n]")
        if self.gpu_accelerator:
            params = "\n".join(f"        parameters {{ key: {json.dumps(k)} value: {json.dumps(v)} }}" for k, v in self.gpu_accelerator.items())
            lines.append("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [\n      {\n"
                         f"        name : \"tensorrt\"\n{params}\n      }}\n    ]\n  }}\n}}")
        if self.steps:
            lines.append("ensemble_scheduling {\n  step [\n" + ",\n".join(s.text() for s in self.steps) + "\n  ]\n}")
        for key, value in self.parameters.items():
            lines.append(f"parameters {{\n  key: {json.dumps(key)}\n  value: {{ string_value: {json.dumps(value)} }}\n}}")
        return "\n".join(lines) + "\n"


def parse_model_config(text: str) -> Any:
    """Parse ``text`` as Triton's ``ModelConfig`` (``google.protobuf.text_format``); raises
    ``ValueError`` naming the problem, :class:`MissingExtraError` without ``tritonclient``."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingExtraError(f"tritonclient is not installed ({exc}); install it with: {TRITON_INSTALL}") from exc
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"not a valid Triton model configuration: {exc}") from exc

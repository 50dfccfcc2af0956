"""Offline check that an ONNX graph will import into TensorRT 10 (no GPU, no TensorRT needed).

``check_tensorrt_compatibility`` looks at the things that make ``trt.OnnxParser`` or the
builder fail late on the target machine, and reports them all at once:

- every node's operator is in TensorRT 10's ONNX-parser support list
  (:mod:`pyimgano_deploy.exporters.tensorrt_ops`) and lives in the default ONNX domain;
- ``TopK``'s K is a build-time constant and ``<= max_topk`` (TensorRT's limit 3840), sorted=1;
- every tensor, with the batch axis of the inputs set to ``max_batch``, has at most
  ``max_elements`` (< 2^31) elements — TensorRT indexes tensors with 32-bit volumes;
- int64 constants hold values representable in int32 (Slice starts/ends sentinels such as
  INT64_MAX are clamped by Slice and are only noted);
- only the batch axis (axis 0) of graph inputs and outputs is dynamic;
- uint8 inputs (imported with a Cast to float by TensorRT >= 8.6) need opset >= 17 here.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_tensor

from pyimgano_deploy.exporters.tensorrt_ops import (
    DEFAULT_DOMAINS,
    TENSORRT10_LATER_OPS,
    TENSORRT10_MAX_OPSET,
    TENSORRT10_MIN_OPSET,
    TENSORRT10_ONNX_OPS,
    TENSORRT_MAX_TOPK,
)

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_STRIP_BYTES = 1 << 20  # initializers larger than this are not copied for shape inference
_UINT8_MIN_OPSET = 17


@dataclass
class CompatReport:
    """Result of :func:`check_tensorrt_compatibility`. ``ok`` is ``not problems``."""

    ok: bool
    problems: list[str]
    op_counts: dict[str, int]
    checked_opset: int | None
    notes: list[str] = field(default_factory=list)
    max_batch: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "op_counts": dict(self.op_counts),
            "checked_opset": self.checked_opset,
            "notes": list(self.notes),
            "max_batch": self.max_batch,
        }

    def format_table(self) -> str:
        """Human-readable report: verdict line, numbered problems, notes, op table."""
        verdict = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        n_nodes = sum(self.op_counts.values())
        lines = [
            f"TensorRT 10 compatibility: {verdict} — opset {self.checked_opset}, "
            f"{n_nodes} node(s), {len(self.op_counts)} op type(s), checked at batch {self.max_batch}"
        ]
        if self.problems:
            lines.append("problems:")
            lines.extend(f"  {i}. {p}" for i, p in enumerate(self.problems, 1))
        if self.notes:
            lines.append("notes:")
            lines.extend(f"  - {n}" for n in self.notes)
        if self.op_counts:
            width = max(len("op"), *(len(k) for k in self.op_counts))
            lines.append(f"  {'op'.ljust(width)}  {'count':>5}  supported")
            for op, count in sorted(self.op_counts.items()):
                domain, _, name = op.rpartition("::")
                supported = "yes" if not domain and name in TENSORRT10_ONNX_OPS else "NO"
                lines.append(f"  {op.ljust(width)}  {count:>5}  {supported}")
        return "\n".join(lines)


def check_tensorrt_compatibility(
    model_path_or_proto: str | os.PathLike[str] | onnx.ModelProto,
    *,
    max_topk: int = TENSORRT_MAX_TOPK,
    max_elements: int = 2**31 - 1,
    max_batch: int = 32,
    supported_ops: frozenset[str] | None = None,
) -> CompatReport:
    """Inspect an ONNX model (path or ``ModelProto``) for TensorRT 10 import problems.

    ``max_batch`` replaces the (dynamic) batch axis of the graph inputs before shape inference,
    so tensor volumes are checked at the largest batch the engine profile will allow.
    ``supported_ops`` overrides the default TensorRT 10 operator list.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    ops = TENSORRT10_ONNX_OPS if supported_ops is None else supported_ops
    model, base_dir = _load(model_path_or_proto)
    problems: list[str] = []
    notes: list[str] = []

    opset = _default_opset(model)
    if opset is None:
        problems.append("model declares no default-domain ('' / ai.onnx) opset in opset_import")
    elif opset < TENSORRT10_MIN_OPSET:
        problems.append(f"opset {opset} is below TensorRT 10's minimum opset {TENSORRT10_MIN_OPSET}")
    elif opset > TENSORRT10_MAX_OPSET:
        notes.append(
            f"opset {opset} is newer than the range documented for TensorRT 10.0 "
            f"({TENSORRT10_MIN_OPSET}..{TENSORRT10_MAX_OPSET}); later 10.x releases accept it"
        )

    graphs = list(_iter_graphs(model.graph))
    op_counts = _check_ops(graphs, ops, problems)
    constants = _collect_int_constants(graphs, base_dir, notes)
    _check_topk(graphs, constants, max_topk, problems)
    _check_int64(graphs, constants, problems, notes)
    inferred = _check_volumes(model, max_batch, max_elements, problems, notes)
    # declared I/O shapes, completed by shape inference (batch axis set to max_batch)
    _check_io(inferred.graph, opset, problems, notes)

    return CompatReport(
        ok=not problems,
        problems=problems,
        op_counts=dict(sorted(op_counts.items())),
        checked_opset=opset,
        notes=notes,
        max_batch=max_batch,
    )


# --------------------------------------------------------------------------------- loading


def _load(src: str | os.PathLike[str] | onnx.ModelProto) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(src, onnx.ModelProto):
        return src, None
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    # External data (model.onnx.data) is not loaded: only small int64 tensors are read later.
    return onnx.load(str(path), load_external_data=False), path.parent


def _default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS:
            return int(imp.version)
    return None


def _iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _iter_graphs(sub)


def _node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node '{node.name}'" if node.name else f"{node.op_type} node (unnamed)"


# ------------------------------------------------------------------------------------- ops


def _check_ops(graphs: list[onnx.GraphProto], ops: frozenset[str], problems: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    custom: Counter[str] = Counter()
    unsupported: Counter[str] = Counter()
    for graph in graphs:
        for node in graph.node:
            if node.domain not in DEFAULT_DOMAINS:
                key = f"{node.domain}::{node.op_type}"
                counts[key] += 1
                custom[key] += 1
                continue
            counts[node.op_type] += 1
            if node.op_type not in ops:
                unsupported[node.op_type] += 1
    for key, n in sorted(custom.items()):
        problems.append(
            f"op {key} uses the non-default domain '{key.rpartition('::')[0]}' ({n} node(s)); "
            "TensorRT's ONNX parser only imports standard ONNX ops (custom ops need a plugin)"
        )
    for op, n in sorted(unsupported.items()):
        later = TENSORRT10_LATER_OPS.get(op)
        hint = f" before TensorRT {later}" if later else ""
        problems.append(f"op {op} is not supported by TensorRT 10's ONNX parser{hint} ({n} node(s))")
    return counts


# ------------------------------------------------------------------------------- constants


def _collect_int_constants(
    graphs: list[onnx.GraphProto], base_dir: Path | None, notes: list[str]
) -> dict[str, np.ndarray]:
    """Integer-valued initializers and Constant outputs, by tensor name."""
    out: dict[str, np.ndarray] = {}
    int_types = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    for graph in graphs:
        for tensor in graph.initializer:
            if tensor.data_type in int_types:
                arr = _tensor_to_array(tensor, base_dir, notes)
                if arr is not None:
                    out[tensor.name] = arr
        for node in graph.node:
            if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS or not node.output:
                continue
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in int_types:
                    arr = _tensor_to_array(attr.t, base_dir, notes)
                    if arr is not None:
                        out[node.output[0]] = arr
                elif attr.name == "value_int":
                    out[node.output[0]] = np.asarray(attr.i, dtype=np.int64)
                elif attr.name == "value_ints":
                    out[node.output[0]] = np.asarray(list(attr.ints), dtype=np.int64)
    return out


def _tensor_to_array(tensor: onnx.TensorProto, base_dir: Path | None, notes: list[str]) -> np.ndarray | None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        if base_dir is None:
            notes.append(f"int tensor '{tensor.name}' is stored as external data; pass the model path to check it")
            return None
        loaded = onnx.TensorProto()
        loaded.CopyFrom(tensor)
        try:
            load_external_data_for_tensor(loaded, str(base_dir))
        except (OSError, ValueError) as exc:
            notes.append(f"could not read external data of '{tensor.name}': {exc}")
            return None
        tensor = loaded
    return numpy_helper.to_array(tensor)


def _consumers(graphs: list[onnx.GraphProto]) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for graph in graphs:
        for node in graph.node:
            for idx, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((node, idx))
    return uses


def _check_topk(
    graphs: list[onnx.GraphProto], constants: dict[str, np.ndarray], max_topk: int, problems: list[str]
) -> None:
    for graph in graphs:
        for node in graph.node:
            if node.op_type != "TopK" or node.domain not in DEFAULT_DOMAINS:
                continue
            label = _node_label(node)
            attrs = {a.name: a for a in node.attribute}
            if "sorted" in attrs and attrs["sorted"].i == 0:
                problems.append(f"{label}: sorted=0 is not supported by TensorRT (must be 1)")
            if len(node.input) >= 2 and node.input[1]:
                k_arr = constants.get(node.input[1])
                if k_arr is None:
                    problems.append(
                        f"{label}: K ('{node.input[1]}') is not a constant; TensorRT needs K as an "
                        "initializer or Constant"
                    )
                    continue
                k = int(np.asarray(k_arr).reshape(-1)[0])
            elif "k" in attrs:  # opset < 10: K is an attribute
                k = int(attrs["k"].i)
            else:
                problems.append(f"{label}: K is missing")
                continue
            if k > max_topk:
                problems.append(f"{label}: K={k} exceeds TensorRT's TopK limit of {max_topk}")


def _check_int64(
    graphs: list[onnx.GraphProto], constants: dict[str, np.ndarray], problems: list[str], notes: list[str]
) -> None:
    uses = _consumers(graphs)
    for name, arr in constants.items():
        if arr.dtype != np.int64 or arr.size == 0:
            continue
        bad = (arr < INT32_MIN) | (arr > INT32_MAX)
        if not bad.any():
            continue
        users = uses.get(name, [])
        if users and all(n.op_type == "Slice" and idx in (1, 2) for n, idx in users):
            notes.append(
                f"int64 constant '{name}' holds {int(bad.sum())} out-of-int32 value(s) used as Slice "
                "starts/ends (clamped by Slice; fine)"
            )
            continue
        sample = int(arr[bad].reshape(-1)[0])
        where = ", ".join(sorted({_node_label(n) for n, _ in users})) or "no consumer"
        problems.append(
            f"int64 constant '{name}' has {int(bad.sum())} value(s) outside the int32 range "
            f"(e.g. {sample}); TensorRT casts int64 weights to int32 (used by {where})"
        )


# ------------------------------------------------------------------------------- inputs/IO


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None] | None:
    ttype = value.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def _check_io(graph: onnx.GraphProto, opset: int | None, problems: list[str], notes: list[str]) -> None:
    init_names = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in init_names]
    for kind, values in (("input", inputs), ("output", list(graph.output))):
        for value in values:
            dims = _dims(value)
            if dims is None:
                problems.append(f"{kind} '{value.name}' has no declared shape (rank unknown)")
                continue
            for axis, d in enumerate(dims[1:], start=1):
                if not isinstance(d, int) or d <= 0:
                    problems.append(
                        f"{kind} '{value.name}' axis {axis} is dynamic ({d!r}); only the batch axis "
                        "(axis 0) may be dynamic"
                    )
    for value in inputs:
        if value.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        if opset is not None and opset < _UINT8_MIN_OPSET:
            problems.append(
                f"input '{value.name}' is uint8 with opset {opset}; export with opset >= "
                f"{_UINT8_MIN_OPSET} (uint8 inputs + Cast need TensorRT >= 8.6)"
            )
        else:
            notes.append(f"input '{value.name}' is uint8: imported with a Cast to float (TensorRT >= 8.6)")


# --------------------------------------------------------------------------------- volumes


def _inference_copy(model: onnx.ModelProto, max_batch: int) -> onnx.ModelProto:
    """A copy of ``model`` without large initializer payloads, batch axis set to ``max_batch``."""
    stripped: list[tuple[onnx.TensorProto, bytes]] = []
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) > _STRIP_BYTES:
            stripped.append((tensor, tensor.raw_data))
            tensor.ClearField("raw_data")
    try:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    finally:
        for tensor, raw in stripped:
            tensor.raw_data = raw
    init_names = {t.name for t in copy.graph.initializer}
    for value in copy.graph.input:
        if value.name in init_names or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = max_batch  # oneof: clears dim_param
    return copy


def _check_volumes(
    model: onnx.ModelProto, max_batch: int, max_elements: int, problems: list[str], notes: list[str]
) -> onnx.ModelProto:
    """Check every tensor's volume at ``max_batch``; return the shape-inferred copy."""
    copy = _inference_copy(model, max_batch)
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError) as exc:
        notes.append(f"shape inference failed ({exc}); tensor volumes were checked on declared shapes only")
        inferred = copy
    seen: set[str] = set()
    unknown = 0
    for graph in _iter_graphs(inferred.graph):
        shaped: list[tuple[str, list[int | str | None] | None]] = [
            (v.name, _dims(v)) for v in (*graph.input, *graph.value_info, *graph.output)
        ]
        shaped.extend((t.name, [int(d) for d in t.dims]) for t in graph.initializer)
        for name, dims in shaped:
            if name in seen:
                continue
            seen.add(name)
            if dims is None or not all(isinstance(d, int) and d >= 0 for d in dims):
                unknown += 1
                continue
            volume = math.prod(dims)  # type: ignore[arg-type]
            if volume > max_elements:
                problems.append(
                    f"tensor '{name}' has {volume} elements (shape {dims}) at batch {max_batch}; "
                    f"TensorRT needs every tensor below {max_elements + 1} elements"
                )
    if unknown:
        notes.append(f"{unknown} tensor(s) have unknown dims after shape inference; their volume was not checked")
    return inferred


__all__ = ["CompatReport", "check_tensorrt_compatibility"]

#!/usr/bin/env python
"""Count the FLOPs of an ONNX graph's Conv / ConvTranspose / MatMul / Gemm / Einsum nodes at a given batch.

Shapes come from ``onnx.shape_inference.infer_shapes`` (with data propagation) after the
symbolic batch axis of every graph input is fixed to ``--batch``. One multiply-add = 2 FLOPs;
bias additions, activations, pooling, resize and element-wise ops are not counted (they are
memory-bound and small next to the counted ops; their node counts are reported).

    python benchmarks/onnx_flops.py bundle/model.onnx --batch 8
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")
# ONNX Runtime's fused forms, met only in the constant-folded fallback graph (see count_flops).
FUSED = {"FusedConv": "Conv", "FusedMatMul": "MatMul", "FusedGemm": "Gemm"}


def _prod(xs: list[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _fix_batch(model: Any, batch: int) -> None:
    """Replace the first dim of every graph input that is symbolic (or unknown) by ``batch``."""
    for inp in model.graph.input:
        tt = inp.type.tensor_type
        if not tt.HasField("shape") or len(tt.shape.dim) == 0:
            continue
        d0 = tt.shape.dim[0]
        if not d0.HasField("dim_value") or d0.dim_value <= 0:
            d0.Clear()
            d0.dim_value = int(batch)


def _shape_table(model: Any) -> dict[str, list[int] | None]:
    """name → static shape (None when any dim is unknown)."""
    table: dict[str, list[int] | None] = {}

    def add(vi: Any) -> None:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            table[vi.name] = None
            return
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                table[vi.name] = None
                return
        table[vi.name] = dims

    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        add(vi)
    for init in g.initializer:
        table[init.name] = [int(d) for d in init.dims]
    for node in g.node:  # Constant nodes
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    table[node.output[0]] = [int(d) for d in attr.t.dims]
    return table


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _einsum_flops(eq: str, shapes: list[list[int]]) -> int:
    lhs, _, _ = eq.replace(" ", "").partition("->")
    sizes: dict[str, int] = {}
    for term, shape in zip(lhs.split(","), shapes):
        letters = [c for c in term if c.isalpha()]
        if "..." in term or len(letters) != len(shape):
            raise ValueError(f"unsupported einsum term {term!r} for shape {shape}")
        for c, s in zip(letters, shape):
            sizes[c] = max(sizes.get(c, 1), int(s))
    return 2 * _prod(list(sizes.values()))


def node_flops(node: Any, shapes: dict[str, list[int] | None]) -> int | None:
    """FLOPs of one counted node, or None when a needed shape is unknown."""
    get = lambda name: shapes.get(name)  # noqa: E731
    op = FUSED.get(node.op_type, node.op_type)
    if op in ("Conv", "ConvTranspose"):
        w, out = get(node.input[1]), get(node.output[0])
        x = get(node.input[0])
        if w is None or out is None or x is None:
            return None
        kernel = _prod(w[2:])
        if op == "Conv":  # w: [M, C/g, k...]; out: [N, M, spatial...]
            return 2 * _prod(out) * w[1] * kernel
        return 2 * _prod(x) * w[1] * kernel  # ConvTranspose w: [C, M/g, k...], per input element
    if op == "MatMul":
        a, out = get(node.input[0]), get(node.output[0])
        if a is None or out is None:
            return None
        k = a[-1]
        return 2 * _prod(out) * k
    if op == "Gemm":
        a, out = get(node.input[0]), get(node.output[0])
        if a is None or out is None:
            return None
        k = a[0] if int(_attr(node, "transA", 0)) else a[1]
        return 2 * _prod(out) * k
    if node.op_type == "Einsum":
        ins = [get(n) for n in node.input]
        if any(s is None for s in ins):
            return None
        eq = _attr(node, "equation", b"")
        eq = eq.decode() if isinstance(eq, bytes) else str(eq)
        return _einsum_flops(eq, ins)  # type: ignore[arg-type]
    return 0


def _count(model: Any, batch: int) -> tuple[dict[str, int], dict[str, int], list[str], list[tuple[int, str, str]]]:
    import onnx

    _fix_batch(model, batch)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shape_table(inferred)
    by_type: dict[str, int] = defaultdict(int)
    nodes_by_type: dict[str, int] = defaultdict(int)
    unresolved: list[str] = []
    per_node: list[tuple[int, str, str]] = []
    for node in inferred.graph.node:
        nodes_by_type[node.op_type] += 1
        op = FUSED.get(node.op_type, node.op_type)
        if op not in COUNTED:
            continue
        f = node_flops(node, shapes)
        if f is None:
            unresolved.append(f"{node.op_type}:{node.name}")
            continue
        by_type[op] += f
        per_node.append((f, op, node.name))
    return by_type, nodes_by_type, unresolved, per_node


def _folded_copy(path: Path, out: Path) -> Any:
    """The graph after ONNX Runtime's basic (constant-folding) optimisations, as a ModelProto."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    opts.log_severity_level = 3
    ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return onnx.load(str(out), load_external_data=False)


def count_flops(path: str | Path, batch: int) -> dict[str, Any]:
    """FLOPs of ``path`` at ``batch``: total, per op type, unresolved nodes, top nodes.

    When ONNX shape inference cannot resolve a counted node (shapes computed at run time, e.g.
    the reflect-pad amounts of the map blur), the count is redone on ONNX Runtime's
    constant-folded (basic-level) copy of the graph, which keeps the same Conv/MatMul work.
    """
    import tempfile

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    by_type, nodes_by_type, unresolved, per_node = _count(model, batch)
    source = "onnx.shape_inference on the exported graph"
    first_unresolved = list(unresolved)
    if unresolved:
        with tempfile.TemporaryDirectory() as tmp:
            folded = _folded_copy(Path(path), Path(tmp) / "folded.onnx")
        f_by_type, _, f_unresolved, f_per_node = _count(folded, batch)
        if len(f_unresolved) < len(unresolved):
            by_type, unresolved, per_node = f_by_type, f_unresolved, f_per_node
            source = "onnx.shape_inference on ONNX Runtime's constant-folded (basic) graph"
    per_node.sort(reverse=True)
    total = sum(by_type.values())
    return {
        "file": str(path),
        "batch": int(batch),
        "flops": int(total),
        "gflops": round(total / 1e9, 4),
        "flops_per_image": int(total // max(batch, 1)),
        "by_op_type": {k: int(v) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
        "unresolved_nodes": unresolved,
        "unresolved_before_folding": first_unresolved,
        "shape_source": source,
        "node_counts": dict(sorted(nodes_by_type.items(), key=lambda kv: -kv[1])),
        "top_nodes": [{"op": t, "name": n, "gflops": round(f / 1e9, 4)} for f, t, n in per_node[:8]],
        "counted_ops": list(COUNTED) + sorted(FUSED),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args(argv)
    print(json.dumps(count_flops(args.model, args.batch), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

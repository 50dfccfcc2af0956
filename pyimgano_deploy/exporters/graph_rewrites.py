"""Exact rewrites of exported ONNX graphs that make them cheaper to run.

``fold_conv_output_slices``: TensorFlow-"SAME" strided convolutions (EfficientNet-Lite) are
traced as ``Conv`` with a symmetric padding followed by ``Slice`` ops that drop the first
output rows/columns (torch has no asymmetric conv padding). ONNX ``Conv`` does: the slice is
folded into asymmetric ``pads`` so the convolution computes exactly the kept outputs. The
``Slice`` copies disappear, and the ``BatchNormalization`` that followed them sits directly
after the ``Conv`` again, where ONNX Runtime and TensorRT fold it into the weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return out


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (a ``Loop`` body, ``If`` branches)."""
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Names that nodes inside ``graph``'s subgraphs (a ``Loop`` body, an ``If`` branch) read,
    at any depth: values of the outer scope they capture must keep their names."""
    names: set[str] = set()
    for sub in (g for node in graph.node for g in _subgraphs(node)):
        names.update(i for n in sub.node for i in n.input)
        names |= subgraph_reads(sub)
    return names


def _spatial_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    shapes: dict[str, list[int | None]] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _new_pads(conv: onnx.NodeProto, in_hw: list[int], slice_spec: dict[int, tuple[int, int]], weight_shape: tuple[int, ...]) -> list[int] | None:
    """Asymmetric pads computing exactly ``outputs[start:end]`` per spatial axis, or None."""
    kernel = list(_attr(conv, "kernel_shape", list(weight_shape[2:])))
    strides = list(_attr(conv, "strides", [1, 1]))
    dilations = list(_attr(conv, "dilations", [1, 1]))
    pads = list(_attr(conv, "pads", [0, 0, 0, 0]))
    if len(kernel) != 2 or any(d != 1 for d in dilations):
        return None
    for i, (start, end) in slice_spec.items():
        n, k, s = in_hw[i], kernel[i], strides[i]
        produced = (n + pads[i] + pads[i + 2] - k) // s + 1
        start, end = max(0, min(start, produced)), max(0, min(end, produced))
        keep = end - start
        begin = pads[i] - start * s
        if keep < 1 or begin < 0:
            return None
        after = (keep - 1) * s + k - n - begin
        if after < 0 or (n + begin + after - k) // s + 1 != keep:
            return None
        pads[i], pads[i + 2] = begin, after
    return pads


def _slice_spec(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> dict[int, tuple[int, int]] | None:
    """{spatial axis index (0 = H, 1 = W): (start, end)} of a constant, step-1 spatial Slice."""
    if len(node.input) < 4 or any(i not in consts for i in node.input[1:]):
        return None
    starts, ends, axes = (consts[i].astype(np.int64).ravel() for i in node.input[1:4])
    steps = consts[node.input[4]].ravel() if len(node.input) > 4 else np.ones_like(starts)
    spec: dict[int, tuple[int, int]] = {}
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = int(ax) + 4 if ax < 0 else int(ax)
        if sp != 1 or ax not in (2, 3) or st < 0 or en < 0:
            return None
        spec[ax - 2] = (int(st), int(min(en, np.iinfo(np.int32).max)))
    return spec


def fold_conv_output_slices(model: onnx.ModelProto) -> int:
    """Fold spatial ``Slice`` ops that directly follow a ``Conv`` into its ``pads`` (in place).

    Only constant, step-1 slices on H/W whose Conv output has no other consumer are folded,
    and only when the asymmetric pads reproduce exactly the kept outputs. Returns the number
    of Slice nodes removed."""
    graph = model.graph
    consts = _constants(graph)
    shapes = _spatial_shapes(model)
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    captured = subgraph_reads(graph)
    removed = 0
    for conv in [n for n in graph.node if n.op_type == "Conv"]:
        in_shape = shapes.get(conv.input[0])
        if not in_shape or len(in_shape) != 4 or None in in_shape[2:] or conv.input[1] not in weights:
            continue
        while True:
            users = [n for n in graph.node if conv.output[0] in n.input]
            if len(users) != 1 or users[0].op_type != "Slice" or users[0].input[0] != conv.output[0] or conv.output[0] in captured:
                break
            spec = _slice_spec(users[0], consts)
            pads = None if spec is None else _new_pads(conv, in_shape[2:], spec, weights[conv.input[1]])  # type: ignore[arg-type]
            if pads is None:
                break
            sl = users[0]
            for a in conv.attribute:
                if a.name == "pads":
                    conv.attribute.remove(a)
                    break
            conv.attribute.append(onnx.helper.make_attribute("pads", pads))
            conv.output[0] = sl.output[0]
            graph.node.remove(sl)
            removed += 1
    _drop_unused_constants(graph)
    return removed


def _drop_unused_constants(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output} | subgraph_reads(graph)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)


def scope_unnamed_nodes(model: onnx.ModelProto) -> int:
    """Give every node outside a module scope the scope of its neighbours; returns how many.

    The exporter leaves a few fused nodes without the ``/module/...`` name prefix (an
    ``addmm`` becomes ``Gemm_431``). fp32 pinning goes by scope, so such a node would escape
    it: it takes the scope of the node that produces its first scoped input, else of the
    first scoped node that consumes its output. The nodes of a subgraph (a ``Loop`` body) are
    named under their container (``/scorer/distance/Loop_3/MatMulInteger_5``), so profiles and
    pinning see them in the module they run for. Names stay unique.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    taken = {node.name for node in graph.node}

    def scope_of(node: onnx.NodeProto) -> str | None:
        return node.name.rsplit("/", 1)[0] + "/" if node.name.startswith("/") and node.name.count("/") >= 2 else None

    renamed = 0
    for node in graph.node:
        if node.name.startswith("/"):
            continue
        scope = None
        for name in node.input:
            if name in producer and (scope := scope_of(producer[name])):
                break
        if scope is None:
            for out in node.output:
                for user in consumers.get(out, []):
                    if (scope := scope_of(user)):
                        break
                if scope:
                    break
        if scope is None:
            continue
        new = scope + (node.name or node.op_type)
        while new in taken:
            new += "_"
        taken.add(new)
        node.name = new
        renamed += 1
    for node in graph.node:
        if node.name.startswith("/"):
            renamed += _name_subgraph_nodes(node, node.name + "/")
    return renamed


def _name_subgraph_nodes(container: onnx.NodeProto, prefix: str) -> int:
    """Prefix every node inside ``container``'s subgraphs, at any depth, with ``prefix``."""
    renamed = 0
    for node in (n for sub in _subgraphs(container) for n in sub.node):
        if not node.name.startswith(prefix):
            node.name = prefix + (node.name or node.op_type)
            renamed += 1
        renamed += _name_subgraph_nodes(node, node.name + "/")
    return renamed


def scope_constants(model: onnx.ModelProto) -> int:
    """Name each anonymous initializer (``onnx::MatMul_123``, from folded constants) after the
    module scope of the nodes that use it, when they all share one; returns how many.

    TensorRT turns an initializer into a constant layer named after it; with the scope in the
    name (``finisher.onnx::MatMul_123``) the fp32 pinning covers the constant as well as the
    op that reads it. Inputs of the graph and named module state are left alone.
    """
    graph = model.graph
    users: dict[str, set[str]] = {}
    for node in graph.node:
        scope = node.name.rsplit("/", 1)[0] if node.name.startswith("/") and node.name.count("/") >= 2 else ""
        for name in node.input:
            users.setdefault(name, set()).add(scope)
    for name in subgraph_reads(graph):
        users.setdefault(name, set()).add("")  # read by a subgraph too: left alone
    renames: dict[str, str] = {}
    taken = {i.name for i in graph.initializer}
    for init in graph.initializer:
        scopes = users.get(init.name, set())
        if not init.name.startswith("onnx::") or len(scopes) != 1 or "" in scopes:
            continue
        new = next(iter(scopes)).strip("/").replace("/", ".") + "." + init.name
        if new not in taken:
            renames[init.name] = new
            taken.add(new)
    for init in graph.initializer:
        if init.name in renames:
            init.name = renames[init.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    return len(renames)


#!/usr/bin/env python
"""Memory-bandwidth reference and a roofline bound for an exported graph.

A plain fp32 GEMM's FLOP/s is the compute ceiling of this CPU; the memory bandwidth is the
other one. A graph whose scoring head streams a large constant on every call (PaDiM reads
all per-position inverse covariances, ``positions × d² × 4`` bytes) cannot run faster than
``bytes / bandwidth`` however fast its arithmetic is. This module measures the bandwidth in
the same process as the GEMM reference and turns both ceilings into bounds on the share of
GEMM FLOP/s a graph can reach:

- ``ideal``: every counted FLOP at the GEMM rate plus the streamed constants at full
  bandwidth (activations assumed cache-resident) — no engine can beat it;
- ``with_measured_conv``: the convolutions at the time ONNX Runtime's profile measured for
  them, plus the rest as in ``ideal`` — the best any head rewrite could do with this
  engine's convolution kernels.

    python benchmarks/roofline.py bundle/model.onnx --batch 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

#: Element sizes of ONNX TensorProto data types (the ones an exported graph holds).
_DTYPE_BYTES = {1: 4, 2: 1, 3: 1, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}
#: Ops whose constant operands are read in full on every call.
_STREAMING_OPS = ("MatMul", "Gemm", "Einsum")


def memory_bandwidth(threads: int, *, n_bytes: int = 256 << 20, min_time_s: float = 1.0) -> dict[str, Any]:
    """Read bandwidth (GB/s, 1e9 bytes) over an ``n_bytes`` fp32 array: ONNX Runtime ReduceSum
    with ``threads`` intra-op threads and numpy's one-thread sum; ``best`` is the larger."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = n_bytes // 4
    data = np.ones(n, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["X"], ["Y"], keepdims=0)], "read",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n])], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [])],
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])

    def best_gbs(fn: Any) -> float:
        return n * 4 / min(C.repeat_times(fn, warmup=1, repeats=3, min_time_s=min_time_s)) / 1e9

    ort_gbs = best_gbs(lambda: sess.run(None, {"X": data}))
    np_gbs = best_gbs(data.sum)
    return {"n_bytes": int(n * 4), "ort_reducesum_gbs": round(ort_gbs, 2), "numpy_sum_gbs": round(np_gbs, 2),
            "best_gbs": round(max(ort_gbs, np_gbs), 2), "threads": int(threads)}


def streamed_constant_bytes(path: str | Path) -> dict[str, int]:
    """Bytes of the initializers that MatMul/Gemm/Einsum nodes take as operands, per op type
    (the constants every call reads in full: a memory bank, inverse covariances, the map
    finisher's matrices)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    sizes: dict[str, int] = {}
    for init in model.graph.initializer:
        count = 1
        for dim in init.dims:
            count *= int(dim)
        sizes[init.name] = count * _DTYPE_BYTES.get(init.data_type, 4)
    out: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in _STREAMING_OPS:
            total = sum(sizes.get(name, 0) for name in set(node.input))
            if total:
                out[node.op_type] = out.get(node.op_type, 0) + total
    return out


def roofline(flops_by_op: dict[str, int], streamed: dict[str, int], gemm_gflops: float, bandwidth_gbs: float,
             measured_ms: dict[str, float] | None = None, *, batch: int | None = None) -> dict[str, Any]:
    """Bounds on one call of a graph (see the module docstring). ``flops_by_op``: counted
    FLOPs per op type at the benchmark batch; ``streamed``: :func:`streamed_constant_bytes`;
    ``measured_ms``: kernel ms per op type from an ONNX Runtime profile of that batch;
    ``batch``: images per call, to state the floors as images/s too."""
    flops = sum(flops_by_op.values())
    bytes_streamed = sum(streamed.values())
    stream_ms = bytes_streamed / (bandwidth_gbs * 1e9) * 1e3
    compute_ms = flops / (gemm_gflops * 1e9) * 1e3
    # Per op type, the slower of its arithmetic at the GEMM rate and its constants at full bandwidth.
    ideal_ms = sum(max(f / (gemm_gflops * 1e9), streamed.get(op, 0) / (bandwidth_gbs * 1e9)) * 1e3 for op, f in flops_by_op.items())
    out: dict[str, Any] = {
        "streamed_constant_bytes": streamed,
        "stream_floor_ms": round(stream_ms, 3),
        "compute_floor_ms": round(compute_ms, 3),
        "ideal_floor_ms": round(ideal_ms, 3),
        "ideal_max_fraction_of_gemm": round(flops / (ideal_ms / 1e3) / (gemm_gflops * 1e9), 3) if ideal_ms else None,
    }
    conv_ms = (measured_ms or {}).get("Conv")
    if conv_ms and "Conv" in flops_by_op:
        rest_ms = ideal_ms - flops_by_op["Conv"] / (gemm_gflops * 1e9) * 1e3
        bound_ms = conv_ms + rest_ms
        out["with_measured_conv_floor_ms"] = round(bound_ms, 3)
        out["with_measured_conv_max_fraction_of_gemm"] = round(flops / (bound_ms / 1e3) / (gemm_gflops * 1e9), 3)
        if batch:
            out["with_measured_conv_max_images_per_s"] = round(batch / (bound_ms / 1e3), 1)
    if batch and ideal_ms:
        out["ideal_max_images_per_s"] = round(batch / (ideal_ms / 1e3), 1)
    heads = {}
    for op, n_bytes in streamed.items():
        ms = (measured_ms or {}).get(op)
        if ms and n_bytes >= 8 << 20:  # constants that cannot stay in cache between calls
            gbs = n_bytes / (ms / 1e3) / 1e9
            heads[op] = {"ms": ms, "bytes": n_bytes, "gbs": round(gbs, 2), "fraction_of_bandwidth": round(gbs / bandwidth_gbs, 3)}
    if heads:
        out["streaming_ops"] = heads
    return out


def main(argv: list[str] | None = None) -> None:
    from onnx_flops import count_flops

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gemm-gflops", type=float, required=True, help="GEMM ceiling to compare with (bench_runtime.py measures it)")
    args = p.parse_args(argv)
    bw = memory_bandwidth(args.threads)
    flops = count_flops(args.model, args.batch)
    doc = {"bandwidth": bw, "flops": flops["by_op_type"],
           "roofline": roofline(flops["by_op_type"], streamed_constant_bytes(args.model), args.gemm_gflops, bw["best_gbs"])}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

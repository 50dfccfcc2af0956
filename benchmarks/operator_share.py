"""Operator share: where an engine spends its time, and how close each stage runs to its own limit.

One ONNX Runtime profile of ``model`` at ``batch`` (after the runtime's own graph optimisations,
so fused kernels appear as they run) gives each kernel's time and its tensor shapes. Kernels are
grouped into stages by node name and op type; each stage's work is counted from those shapes
and set against the limit that bounds it:

- ``backbone`` (``/extractor/…``): convolution FLOPs against the fp32 GEMM rate;
- ``nn distances``: the bank product, FLOPs against the fp32 GEMM rate or int8 ops against the
  int8 GEMM rate (``DynamicQuantizeMatMul``, the int8 head; VNNI where the CPU has it);
- ``nn reduce`` (ReduceMin / TopK over the distances) and ``nn re-rank`` (gathers and the exact
  distances of the candidates): bytes read against the memory bandwidth;
- ``map and score`` (everything else: embedding, map finisher, score): bytes against the bandwidth;
- ``nn loop overhead``: what a ``Loop`` (the int8 head's chunks of queries) costs beyond the
  kernels of its body, which the exporter names under it and which count in their own stages.

    from operator_share import operator_share
    operator_share("bundle/model.int8.onnx", images, threads=2, limits={"fp32_gflops": …, "int8_gops": …, "bandwidth_gbs": …})
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

INT8_PRODUCTS = ("DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger")
GATHERS = ("Gather", "GatherElements", "GatherND", "Expand")
PRODUCTS = ("Gemm", "MatMul", "FusedMatMul", "FusedGemm")
REDUCTIONS = ("ReduceMin", "TopK")
_ELEMENT_BYTES = {"float": 4, "int64": 8, "int32": 4, "int8": 1, "uint8": 1, "float16": 2, "bool": 1}


def _shapes(entries: list[dict[str, list[int]]]) -> list[tuple[str, list[int]]]:
    return [(dtype, list(dims)) for e in entries for dtype, dims in e.items()]


def _bytes(entries: list[tuple[str, list[int]]]) -> int:
    return sum(math.prod(dims) * _ELEMENT_BYTES.get(dtype, 4) for dtype, dims in entries)


def _stage(name: str, op: str, inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]]) -> tuple[str, str, float]:
    """(stage, limit key, work) of one kernel: work in FLOPs/ops for products, bytes otherwise."""
    out = outputs[0][1] if outputs else []
    if name.startswith("/extractor/"):
        if op == "Conv" and len(inputs) >= 2 and len(inputs[1][1]) == 4:
            return "backbone", "fp32_gflops", 2.0 * math.prod(out) * math.prod(inputs[1][1][1:])
        if op == "QLinearConv":  # int8 weights are pre-packed and not in the profile: work counted by the caller
            return "backbone", "int8_gops", 0.0
        return "backbone", "fp32_gflops", 0.0
    if "/distance/" in name:
        if op in INT8_PRODUCTS and inputs:
            return "nn distances", "int8_gops", 2.0 * math.prod(out) * inputs[0][1][-1]
        if op in PRODUCTS and inputs and math.prod(out) >= 1 << 20:  # the bank product, not the small re-rank
            return "nn distances", "fp32_gflops", 2.0 * math.prod(out) * inputs[0][1][-1]
        if op in REDUCTIONS:
            return "nn reduce", "bandwidth_gbs", float(_bytes(inputs))
        if op in GATHERS:  # reads what it gathers (not its whole data input) and writes it
            return "nn re-rank", "bandwidth_gbs", float(2 * _bytes(outputs) + _bytes(inputs[1:]))
        return "nn re-rank", "bandwidth_gbs", float(_bytes(inputs) + _bytes(outputs))
    return "map and score", "bandwidth_gbs", float(_bytes(inputs) + _bytes(outputs))


def operator_share(model: str | Path, images: Any, *, threads: int, limits: dict[str, float], runs: int = 5) -> dict[str, Any]:
    """Per stage: ms per image, share of kernel time, work per image, achieved rate, the limit
    and the fraction of it reached. ``images`` is one uint8 batch; ``limits`` holds
    ``fp32_gflops``, ``int8_gops`` and ``bandwidth_gbs``."""
    import onnxruntime as ort

    from pyimgano_deploy.bundles.io_contract import INPUT_NAME

    batch = int(len(images))
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        sess.run(None, {INPUT_NAME: images})  # warm-up outside the profile
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "share")
        sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        sess.run(None, {INPUT_NAME: images})
        for _ in range(runs):
            sess.run(None, {INPUT_NAME: images})
        events = json.loads(Path(sess.end_profiling()).read_text())
    # Only the last `runs` calls: the first profiled call still allocates.
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernels = kernels[len(kernels) // (runs + 1):]
    loops = {e["name"][: -len("_kernel_time")] for e in kernels if e["args"].get("op_name") == "Loop"}
    loop_us = sum(e["dur"] for e in kernels if e["args"].get("op_name") == "Loop")
    inner_us = sum(e["dur"] for e in kernels if any(e["name"].startswith(loop + "/") for loop in loops))
    per_stage: dict[str, dict[str, Any]] = defaultdict(lambda: {"us": 0.0, "work": 0.0, "limit": None, "ops": defaultdict(float)})
    if loops:  # a Loop's time includes its body's kernels, which count in their own stages
        per_stage["nn loop overhead"].update(us=max(loop_us - inner_us, 0.0), limit="bandwidth_gbs")
        per_stage["nn loop overhead"]["ops"]["Loop"] = max(loop_us - inner_us, 0.0)
    for e in kernels:
        args = e["args"]
        if args.get("op_name") == "Loop":
            continue
        stage, limit, work = _stage(e["name"][: -len("_kernel_time")], args.get("op_name", ""),
                                    _shapes(args.get("input_type_shape", [])), _shapes(args.get("output_type_shape", [])))
        s = per_stage[stage]
        s["us"] += e["dur"]
        s["work"] += work
        s["ops"][args.get("op_name", "")] += e["dur"]
        # A stage's limit is its arithmetic's (int8 as soon as one int8 kernel is in it), else the bandwidth.
        rank = {"bandwidth_gbs": 0, "fp32_gflops": 1, "int8_gops": 2}
        if s["limit"] is None or rank[limit] > rank[s["limit"]]:
            s["limit"] = limit
    total_us = sum(s["us"] for s in per_stage.values())
    rows = []
    for stage, s in sorted(per_stage.items(), key=lambda kv: -kv[1]["us"]):
        seconds = s["us"] / 1e6 / runs
        unit = "GB" if s["limit"] == "bandwidth_gbs" else ("GOP" if s["limit"] == "int8_gops" else "GFLOP")
        work = s["work"] / runs / 1e9
        rate = work / seconds if seconds else 0.0
        rows.append({
            "stage": stage, "ms_per_image": round(seconds * 1e3 / batch, 3), "share": round(s["us"] / total_us, 3),
            f"work_per_image_{unit.lower()}": round(work / batch, 4), "rate": round(rate, 1),
            "rate_unit": {"GB": "GB/s", "GOP": "GOP/s", "GFLOP": "GFLOP/s"}[unit],
            "limit": s["limit"], "limit_value": limits[s["limit"]], "fraction_of_limit": round(rate / limits[s["limit"]], 3),
            "top_ops": {k: round(v / total_us, 3) for k, v in sorted(s["ops"].items(), key=lambda kv: -kv[1])[:3]},
        })
    return {"file": str(model), "batch": batch, "threads": int(threads), "kernel_ms_per_image": round(total_us / 1e3 / runs / batch, 3),
            "limits": limits, "stages": rows}

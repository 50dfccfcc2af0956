#!/usr/bin/env python
"""Runtime benchmark: eager torch vs ONNX Runtime, same images, same threads, one process → JSON.

Default: PatchCore and PaDiM, pretrained EfficientNet-Lite0 at 224 px fitted on
../shared/data/hazelnut_toy (train/good minus 6 held out for calibration), exported to
bundles (fp32). ``--quick``: random-init, generated 64 px images, few repeats.

Measured (``n`` = ``--threads``, default ``os.cpu_count()``; torch.set_num_threads(n),
ORT intra_op_num_threads=n, OpenBLAS n):
- images/s of ``Detector.predict_batch`` (eager) and ``Runtime.run_batch`` (ORT) at each
  batch size, timed in alternating blocks so machine load hits both alike; their ratio;
  also ORT in throughput mode (``load_bundle(streams="auto")``: the runtime times a few
  schedules — concurrent calls of one session sharing the threads, images per call — and
  keeps the fastest), reported separately as ``ort_throughput``;
- minor page faults per call of each engine: under glibc's default malloc, eager torch maps
  and unmaps its large activations on every call, and those faults (system time) decide
  most of eager's run-to-run spread; ``--malloc steady`` (mallopt) keeps freed memory so
  eager runs without them — run both to see the range of the eager baseline;
- latency p50/p99 at batch 1;
- the graph's FLOPs (benchmarks/onnx_flops.py) → achieved GFLOP/s, against a plain fp32
  GEMM (numpy and an ORT MatMul, ``--gemm-n``²) measured in the same run;
- an ORT profile (SessionOptions.enable_profiling) at the largest batch: time per op type;
- the memory read bandwidth, measured beside the GEMM, and roofline bounds on the share of
  GEMM FLOP/s each graph can reach (benchmarks/roofline.py);
- fresh subprocesses: runtime import time, cold start (load_bundle + first result), and
  peak RSS of ``pyimgano-deploy infer`` over folders of increasing size (os.wait4 rusage of
  that child, plus /proc/<pid>/status VmRSS polling).

    python benchmarks/bench_runtime.py
    python benchmarks/bench_runtime.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _rundir as R  # noqa: E402
from roofline import memory_bandwidth, roofline, streamed_constant_bytes  # noqa: E402

IMPORT_SNIPPET = "import time; t=time.perf_counter(); import pyimgano_deploy.runtimes as r; r.load_bundle; print(time.perf_counter()-t)"
COLD_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
import pyimgano_deploy.runtimes as r
t1 = time.perf_counter()
rt = r.load_bundle(sys.argv[1], intra_op_threads=int(sys.argv[3]))
t2 = time.perf_counter()
res = rt.infer([sys.argv[2]])
t3 = time.perf_counter()
assert res[0].ok, res[0].error
print(json.dumps({"import_s": t1 - t0, "load_bundle_s": t2 - t1, "first_result_s": t3 - t2, "total_s": t3 - t0,
                  "torch_imported": "torch" in sys.modules, "score": res[0].score}))
"""
# `pyimgano-deploy infer` itself (same entry point as the console script), reporting its own
# VmHWM at exit. The kernel's ru_maxrss of a child is NOT usable here: exec() folds the
# parent's (this benchmark's, ~0.5 GB) high-water mark into the child's maxrss.
INFER_WRAPPER = """
import atexit, sys
def _report():
    for line in open('/proc/self/status'):
        if line.startswith(('VmHWM:', 'VmRSS:')):
            sys.stderr.write('BENCH_' + line)
atexit.register(_report)
from pyimgano_deploy.cli import main
sys.argv = ['pyimgano-deploy'] + sys.argv[1:]
main()
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(R.MODELS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--data", choices=("hazelnut", "synthetic"), default="hazelnut")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--patchcore-coreset-ratio", type=float, default=None,
                   help="PatchCore coreset ratio (default: the detector's 0.1; 0.95 on hazelnut gives the ~16k-patch bank the issue quotes)")
    p.add_argument("--threads", type=int, default=None, help="torch, ORT intra-op and BLAS threads (default: os.cpu_count())")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--streams", default="auto",
                   help="also time ONNX Runtime in throughput mode at batch > 1 (load_bundle(streams=...)): "
                        "'auto' = the schedule the runtime times and picks on this machine, N = N concurrent calls, 1 = skip")
    p.add_argument("--malloc", choices=("default", "steady"), default="default",
                   help="glibc allocator for the whole run: 'default', or 'steady' (mallopt: large blocks stay in the heap, "
                        "so eager torch stops page-faulting its activations on every call; see _common.steady_malloc)")
    p.add_argument("--min-time-s", type=float, default=4.0, help="minimum timed seconds per engine and batch size")
    p.add_argument("--rounds", type=int, default=3, help="alternating eager/ORT blocks per batch size")
    p.add_argument("--latency-samples", type=int, default=60, help="batch-1 calls per engine for p50/p99")
    p.add_argument("--gemm-n", type=int, default=2048)
    p.add_argument("--folder-sizes", default="100,500", help="images per folder for the infer CLI memory run")
    p.add_argument("--subprocess-repeats", type=int, default=3)
    p.add_argument("--no-profile", action="store_true", help="skip the ORT profile")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke mode: random-init synthetic 64 px, few repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.data, args.random_init = 64, "synthetic", True
        args.min_time_s, args.rounds, args.gemm_n = 0.0, 1, 256
        args.folder_sizes, args.subprocess_repeats = "4,8", 1
        args.latency_samples = 3
        if args.threads is None:
            args.threads = 1  # smoke mode: avoid oversubscription stalls on a shared machine
        if args.streams == "auto":
            args.streams = "2"  # one thread here, so "auto" would have a single candidate
    args.batch_list = [int(b) for b in args.batch_sizes.split(",")]
    args.folder_list = [int(b) for b in args.folder_sizes.split(",")]
    return args


# --------------------------------------------------------------------------- in-process
def image_pool(images: R.ImageSets, preprocess: Any, n: int) -> Any:
    import numpy as np

    from pyimgano_deploy.inputs import read_image

    paths = (images.test + images.calib + images.fit)[:n]
    return np.ascontiguousarray(preprocess.batch([read_image(p) for p in paths]))


def take(pool: Any, b: int) -> Any:
    import numpy as np

    idx = np.arange(b) % len(pool)
    return np.ascontiguousarray(pool[idx])


def alternate(fns: dict[str, Any], *, rounds: int, min_time_s: float, warmup: int = 2) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Time each callable in alternating blocks (``rounds`` each, ``min_time_s/rounds`` per
    block) → (seconds per call, minor page faults per call) by name."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    faults: dict[str, int] = {k: 0 for k in fns}
    per_block = min_time_s / max(rounds, 1)
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(0.05)  # let the other engine's spinning threads go idle
            before = C.minor_faults()
            times[name] += C.repeat_times(fn, warmup=0, repeats=2, min_time_s=per_block)
            faults[name] += C.minor_faults() - before
    return times, {k: faults[k] / max(len(times[k]), 1) for k in fns}


def gemm_reference(n: int, threads: int, min_time_s: float) -> dict[str, Any]:
    """fp32 GEMM FLOP/s: numpy (OpenBLAS) and ONNX Runtime MatMul on n×n @ n×n."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    flops = 2 * n**3
    t_np = C.repeat_times(lambda: a @ b, warmup=1, repeats=3, min_time_s=min_time_s / 2)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["Y"])], "gemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n]), helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    t_ort = C.repeat_times(lambda: sess.run(None, {"A": a, "B": b}), warmup=1, repeats=3, min_time_s=min_time_s / 2)
    np_gf = flops / min(t_np) / 1e9
    ort_gf = flops / min(t_ort) / 1e9
    return {
        "n": n,
        "numpy_gflops": round(np_gf, 2),
        "ort_matmul_gflops": round(ort_gf, 2),
        "numpy_gflops_median": round(flops / sorted(t_np)[len(t_np) // 2] / 1e9, 2),
        "ort_matmul_gflops_median": round(flops / sorted(t_ort)[len(t_ort) // 2] / 1e9, 2),
        "peak_gflops": round(max(np_gf, ort_gf), 2),
        "note": "best-of-runs GEMM rate (the fairest ceiling); achieved model FLOP/s use the median",
        "onnx_version": onnx.__version__,
    }


def ort_profile(model_path: Path, batch: Any, threads: int, runs: int, work: Path) -> dict[str, Any]:
    """Per-op-type share of kernel time from an ORT profile of ``runs`` calls on ``batch``."""
    import onnxruntime as ort

    from pyimgano_deploy.runtimes.onnx_session import make_session_options

    opts = make_session_options(threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"ort_profile_{model_path.parent.name}")
    optimized = work / f"optimized_{model_path.parent.name}.onnx"
    opts.optimized_model_filepath = str(optimized)
    sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    node_counts: dict[str, int] = {}
    if optimized.is_file():
        import onnx

        for node in onnx.load(str(optimized), load_external_data=False).graph.node:
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            node_counts[key] = node_counts.get(key, 0) + 1
    for _ in range(runs + 1):
        sess.run(None, {"images": batch})
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    by_op: dict[str, float] = {}
    by_node: dict[str, tuple[str, float]] = {}
    total_run_us = 0.0
    for ev in events:
        if ev.get("cat") == "Session" and ev.get("name") == "model_run":
            total_run_us += float(ev.get("dur", 0))
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        op = ev.get("args", {}).get("op_name", "?")
        dur = float(ev.get("dur", 0))
        by_op[op] = by_op.get(op, 0.0) + dur
        node = str(ev["name"])[: -len("_kernel_time")]
        prev = by_node.get(node, (op, 0.0))
        by_node[node] = (op, prev[1] + dur)
    kernel_total = sum(by_op.values()) or 1.0
    top_ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    top_nodes = sorted(by_node.items(), key=lambda kv: -kv[1][1])[:10]
    n_runs = runs + 1
    return {
        "batch": int(len(batch)),
        "runs": n_runs,
        "model_run_ms_mean": round(total_run_us / n_runs / 1e3, 3),
        "kernel_ms_per_run": round(kernel_total / n_runs / 1e3, 3),
        "by_op_type": [{"op": op, "ms_per_run": round(us / n_runs / 1e3, 3), "share": round(us / kernel_total, 4)} for op, us in top_ops[:12]],
        "top_nodes": [{"node": n, "op": op, "ms_per_run": round(us / n_runs / 1e3, 3)} for n, (op, us) in top_nodes],
        "optimized_graph_nodes": dict(sorted(node_counts.items(), key=lambda kv: -kv[1])),
    }


def op_type_rates(profile: dict[str, Any], flops_by_op: dict[str, int], gemm: dict[str, Any]) -> dict[str, Any]:
    """FLOP/s of each FLOP-carrying op type in the profile (its FLOPs / its kernel time) and
    the share of the plain GEMM rate: shows which part of the graph holds the total back."""
    times = {o["op"]: o["ms_per_run"] for o in profile["by_op_type"]}
    rates: dict[str, Any] = {}
    for op, flops in flops_by_op.items():
        ms = times.get(op)
        if ms:
            gf = flops / (ms / 1e3) / 1e9
            rates[op] = {"gflops": round(gf, 1), "fraction_of_gemm": round(gf / gemm["peak_gflops"], 3), "ms_per_run": ms}
    return rates


def eager_profile(det: Any, batch: Any, runs: int) -> dict[str, Any]:
    """Self CPU time per aten op of ``runs`` eager calls (torch.profiler), top 10."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    det.predict_batch(batch)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            det.predict_batch(batch)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return {
        "batch": int(len(batch)),
        "runs": runs,
        "self_cpu_ms_per_run": round(total / runs / 1e3, 3),
        "by_op": [{"op": e.key, "ms_per_run": round(e.self_cpu_time_total / runs / 1e3, 3), "share": round(e.self_cpu_time_total / total, 4),
                   "calls_per_run": e.count // runs} for e in rows[:10]],
    }


def engine_bench(model: str, det: Any, bundle: Path, images: R.ImageSets, args: argparse.Namespace, threads: int,
                 ceilings: dict[str, Any], work: Path) -> dict[str, Any]:
    """Eager vs ONNX Runtime (one call per batch, and throughput mode) at each batch size;
    ``ceilings``: ``{"gemm": gemm_reference(...), "bandwidth": memory_bandwidth(...)}``."""
    import numpy as np
    import torch

    from onnx_flops import count_flops
    from pyimgano_deploy.runtimes import load_bundle

    gemm = ceilings["gemm"]
    pool = image_pool(images, det.preprocess, 16)
    out: dict[str, Any] = {"batches": {}, "fit_summary": {k: v for k, v in det.fit_summary.items() if k in ("n_images", "n_patches", "bank_size", "feature_dim", "grid")}}
    for b in args.batch_list:
        batch = take(pool, b)
        rt = load_bundle(bundle, intra_op_threads=threads, batch_size=b)
        es, em = det.predict_batch(batch)
        xs, xm = rt.run_batch(batch)
        fns = {"eager": lambda: det.predict_batch(batch), "ort": lambda: rt.run_batch(batch)}
        rt_tp = None
        if b > 1 and args.streams != "1":
            rt_tp = load_bundle(bundle, intra_op_threads=threads, batch_size=b, streams=args.streams)
            fns["ort_throughput"] = lambda: rt_tp.run_batch(batch)
        C.log(f"{model} batch {b}: timing {' vs '.join(fns)} ({args.rounds} rounds, ≥{args.min_time_s:.0f}s each)")
        with torch.inference_mode():
            times, faults = alternate(fns, rounds=args.rounds, min_time_s=args.min_time_s)
        flops = count_flops(bundle / "model.onnx", b)
        entry: dict[str, Any] = {"flops_per_batch": flops["flops"], "flops_by_op_type": flops["by_op_type"],
                                 "flops_unresolved_nodes": flops["unresolved_nodes"]}
        for name in times:
            med = C.percentile(times[name], 50)
            entry[name] = {
                "images_per_s": round(b / med, 2),
                "images_per_s_best": round(b / min(times[name]), 2),
                "batch_ms": C.summary_ms(times[name]),
                "achieved_gflops": round(flops["flops"] / med / 1e9, 2),
                "fraction_of_gemm": round(flops["flops"] / med / 1e9 / gemm["peak_gflops"], 3),
                "minor_page_faults_per_call": round(faults[name]),
            }
        entry["ort_over_eager"] = round(entry["ort"]["images_per_s"] / entry["eager"]["images_per_s"], 3)
        entry["ort_over_eager_best"] = round(entry["ort"]["images_per_s_best"] / entry["eager"]["images_per_s_best"], 3)
        if rt_tp is not None:
            ts_, tm_ = rt_tp.run_batch(batch)
            entry["ort_throughput"].update({"schedule": rt_tp.engine_info["schedule"],
                                            "max_abs_score_diff_vs_one_call": float(np.abs(ts_ - xs).max()),
                                            "max_abs_map_diff_vs_one_call": float(np.abs(tm_ - xm).max())})
            entry["ort_throughput_over_eager"] = round(entry["ort_throughput"]["images_per_s"] / entry["eager"]["images_per_s"], 3)
            rt_tp.close()
        entry["max_abs_score_diff"] = float(np.abs(es - xs).max())
        entry["max_abs_map_diff"] = float(np.abs(em - xm).max())
        if b == 1:
            C.log(f"{model}: batch-1 latency, {args.latency_samples} calls each")
            lat: dict[str, list[float]] = {"eager": [], "ort": []}
            with torch.inference_mode():
                for name, fn in (("eager", lambda: det.predict_batch(batch)), ("ort", lambda: rt.run_batch(batch))):
                    time.sleep(0.05)
                    lat[name] = C.repeat_times(fn, warmup=2, repeats=args.latency_samples)
            entry["latency"] = {k: C.summary_ms(v) for k, v in lat.items()}
        out["batches"][str(b)] = entry
        C.log(f"{model} batch {b}: eager {entry['eager']['images_per_s']} img/s, ORT {entry['ort']['images_per_s']} img/s "
              f"(×{entry['ort_over_eager']}), ORT {entry['ort']['achieved_gflops']} GFLOP/s = "
              f"{entry['ort']['fraction_of_gemm']:.0%} of GEMM")
        rt.close()
    b = max(args.batch_list)
    if not args.no_profile:
        out["ort_profile"] = ort_profile(bundle / "model.onnx", take(pool, b), threads, 3 if args.quick else 10, work)
        out["ort_profile"]["gflops_by_op_type"] = op_type_rates(out["ort_profile"], out["batches"][str(b)]["flops_by_op_type"], gemm)
        out["eager_profile"] = eager_profile(det, take(pool, b), 2 if args.quick else 5)
    measured = {o["op"]: o["ms_per_run"] for o in out.get("ort_profile", {}).get("by_op_type", [])}
    out["roofline"] = {"batch": b, **roofline(out["batches"][str(b)]["flops_by_op_type"], streamed_constant_bytes(bundle / "model.onnx"),
                                               gemm["peak_gflops"], ceilings["bandwidth"]["best_gbs"], measured or None, batch=b)}
    return out


# --------------------------------------------------------------------------- subprocesses
def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(C.REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    return env


def import_time(threads: int, repeats: int) -> dict[str, Any]:
    vals = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", IMPORT_SNIPPET], capture_output=True, text=True, env=_env(threads), check=True)
        wall = time.perf_counter() - t
        vals.append((float(out.stdout.strip().splitlines()[-1]), wall))
    inner = [v[0] for v in vals]
    return {"import_s_min": round(min(inner), 4), "import_s_median": round(C.percentile(inner, 50), 4),
            "process_wall_s_median": round(C.percentile([v[1] for v in vals], 50), 4), "runs": len(vals)}


def cold_start(bundle: Path, image: str, threads: int, repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD_SNIPPET, str(bundle), image, str(threads)],
                             capture_output=True, text=True, env=_env(threads), check=True)
        wall = time.perf_counter() - t
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        rec["process_wall_s"] = wall
        runs.append(rec)
    med = lambda k: round(C.percentile([r[k] for r in runs], 50), 4)  # noqa: E731
    return {
        "process_wall_s_median": med("process_wall_s"),
        "in_process_total_s_median": med("total_s"),
        "import_s_median": med("import_s"),
        "load_bundle_s_median": med("load_bundle_s"),
        "first_result_s_median": med("first_result_s"),
        "torch_imported": any(r["torch_imported"] for r in runs),
        "runs": len(runs),
    }


def _proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def make_folder(root: Path, n: int, sources: list[str]) -> Path:
    """A folder of ``n`` images: symlinks cycling over ``sources`` (no data copied)."""
    folder = root / f"folder_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = Path(sources[i % len(sources)])
        link = folder / f"{i:05d}{src.suffix}"
        if not link.exists():
            link.symlink_to(src.resolve())
    return folder


def folder_run(bundle: Path, folder: Path, n: int, threads: int, batch: int, work: Path) -> dict[str, Any]:
    """``pyimgano-deploy infer`` on ``folder`` in a child: its own VmHWM at exit, RSS polled over time."""
    jsonl = work / f"infer_{folder.name}.jsonl"
    if jsonl.exists():
        jsonl.unlink()
    cmd = [sys.executable, "-c", INFER_WRAPPER, "infer", "--bundle", str(bundle), "--input", str(folder),
           "--save-jsonl", str(jsonl), "--threads", str(threads), "--batch-size", str(batch), "--json"]
    out_path, err_path = work / f"{folder.name}.stdout", work / f"{folder.name}.stderr"
    samples: list[tuple[float, float]] = []
    status, usage = 0, None
    with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=_env(threads))
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            rss = _proc_rss_mb(proc.pid)
            if rss is not None:
                samples.append((time.perf_counter() - t, rss))
            time.sleep(0.05)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"infer failed ({proc.returncode}): {stderr[-2000:]}")
    n_records = sum(1 for _ in open(jsonl))
    hwm = [float(line.split()[1]) / 1024.0 for line in stderr.splitlines() if line.startswith("BENCH_VmHWM:")]
    quart = {}
    if samples:
        for q in (25, 50, 75):  # RSS at that share of the run's wall time (flat = no growth)
            cut = wall * q / 100.0
            upto = [r for (ts, r) in samples if ts <= cut]
            quart[f"rss_at_{q}pct_mb"] = round(upto[-1], 1) if upto else None
    summary = json.loads(stdout) if stdout.strip() else {}
    return {
        "n_images": n,
        "n_records": n_records,
        "wall_s": round(wall, 3),
        "images_per_s_wall": round(n / wall, 2),
        "peak_rss_mb": round(hwm[-1], 1) if hwm else None,
        "peak_rss_source": "VmHWM of the infer process at exit (/proc/self/status, atexit)",
        "wait4_ru_maxrss_mb": round(usage.ru_maxrss / 1024.0, 1) if usage else None,
        "wait4_note": "includes the parent's RSS at fork (exec keeps the old mm's high-water mark): not the child's own peak",
        "polled_max_rss_mb": round(max((r for _, r in samples), default=0.0), 1),
        "rss_samples": len(samples),
        **quart,
        "cli_images_per_s": summary.get("images_per_s"),
        "cli_errors": summary.get("errors"),
    }


def _targets_b8(b8: dict[str, Any], engine: str) -> dict[str, Any]:
    """images/s, ratio to eager, share of GEMM and the issue's two targets for ``engine`` at batch 8."""
    ratio_key = "ort_over_eager" if engine == "ort" else f"{engine}_over_eager"
    ratio = b8.get(ratio_key)
    fraction = b8.get(engine, {}).get("fraction_of_gemm")
    return {"images_per_s": b8.get(engine, {}).get("images_per_s"), "over_eager": ratio, "fraction_of_gemm": fraction,
            "meets_3x": (ratio or 0) >= 3.0, "meets_60pct_gemm": (fraction or 0) >= 0.6}


def _bound_over_eager(r: dict[str, Any], b8: dict[str, Any]) -> float | None:
    """The ratio to eager that ONNX Runtime would reach at the roofline bound with its own
    measured convolutions (the best a perfect head could do with this engine)."""
    bound, eager = r.get("roofline", {}).get("with_measured_conv_max_images_per_s"), b8.get("eager", {}).get("images_per_s")
    return round(bound / eager, 2) if bound and eager else None


def model_headline(r: dict[str, Any]) -> dict[str, Any]:
    """The figures the closing note quotes for one model: batch 8 (one call and throughput mode), batch-1 latency."""
    b8 = r["batches"].get("8", {})
    one, tp = _targets_b8(b8, "ort"), _targets_b8(b8, "ort_throughput")
    latency = r["batches"].get("1", {}).get("latency", {}).get("ort", {})
    return {
        "bank_size": r["fit_summary"].get("bank_size"),
        "ort_over_eager_b8": one["over_eager"],
        "ort_images_per_s_b8": one["images_per_s"],
        "eager_images_per_s_b8": b8.get("eager", {}).get("images_per_s"),
        "eager_minor_page_faults_per_call_b8": b8.get("eager", {}).get("minor_page_faults_per_call"),
        "ort_fraction_of_gemm_b8": one["fraction_of_gemm"],
        "ort_p50_ms_b1": latency.get("p50_ms"),
        "ort_p99_ms_b1": latency.get("p99_ms"),
        "meets_3x": one["meets_3x"],
        "meets_60pct_gemm": one["meets_60pct_gemm"],
        "roofline_ideal_max_fraction_of_gemm": r.get("roofline", {}).get("ideal_max_fraction_of_gemm"),
        "roofline_max_fraction_of_gemm_with_ort_conv": r.get("roofline", {}).get("with_measured_conv_max_fraction_of_gemm"),
        "roofline_max_over_eager_with_ort_conv": _bound_over_eager(r, b8),
        "throughput_mode_b8": {
            "schedule": {k: v for k, v in (b8.get("ort_throughput", {}).get("schedule") or {}).items() if k != "tuned"},
            "ort_images_per_s": tp["images_per_s"],
            "ort_over_eager": tp["over_eager"],
            "ort_fraction_of_gemm": tp["fraction_of_gemm"],
            "meets_3x": tp["meets_3x"],
            "meets_60pct_gemm": tp["meets_60pct_gemm"],
        },
    }


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(args.threads)
    malloc = C.steady_malloc() if args.malloc == "steady" else {"mode": "default"}
    doc = C.header("bench_runtime", args, threads)
    C.pin_torch_threads(threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_runtime_") as tmp:
        work = args.out_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.data == "hazelnut":
            images = R.hazelnut_sets(6)
        else:
            images = R.synthetic_sets(work / "data", size=args.size, n_fit=6, n_calib=3, n_test=2, seed=args.seed)
        C.log(f"GEMM reference {args.gemm_n}² fp32, {threads} threads")
        gemm = gemm_reference(args.gemm_n, threads, 0.5 if args.quick else 4.0)
        C.log(f"GEMM: numpy {gemm['numpy_gflops']} GFLOP/s, ORT {gemm['ort_matmul_gflops']} GFLOP/s")
        bandwidth = memory_bandwidth(threads, n_bytes=(32 if args.quick else 256) << 20, min_time_s=0.2 if args.quick else 1.0)
        C.log(f"memory read bandwidth: {bandwidth['best_gbs']} GB/s")
        bundles: dict[str, Path] = {}
        for model in models:
            extra = {"coreset_ratio": args.patchcore_coreset_ratio} if model == "vision_patchcore" and args.patchcore_coreset_ratio else {}
            run_dir, det, _ = R.make_run_dir(work, model, images, size=args.size, pretrained=not args.random_init, seed=args.seed, **extra)
            bundles[model] = work / f"bundle_{model}"
            R.export_bundle(run_dir, bundles[model], precision="fp32", golden=max(2, len(images.calib)))
            results[model] = engine_bench(model, det, bundles[model], images, args, threads, {"gemm": gemm, "bandwidth": bandwidth}, work)
            del det
        C.log("subprocesses: import time, cold start, infer memory")
        imp = import_time(threads, args.subprocess_repeats)
        first_image = (images.test + images.calib)[0]
        sources = images.test + images.calib + images.fit
        for model in models:
            results[model]["cold_start"] = cold_start(bundles[model], first_image, threads, args.subprocess_repeats)
        mem_model = models[0]
        folder_runs = []
        for n in args.folder_list:
            folder = make_folder(work / "folders", n, sources)
            C.log(f"infer CLI ({mem_model}) on {n} images")
            folder_runs.append(folder_run(bundles[mem_model], folder, n, threads, 8, work))
        peaks = [r["peak_rss_mb"] for r in folder_runs]
        memory = {
            "model": mem_model,
            "runs": folder_runs,
            "peak_rss_growth_mb": round(peaks[-1] - peaks[0], 1),
            "peak_rss_ratio_largest_to_smallest": round(peaks[-1] / peaks[0], 3),
            "flat": abs(peaks[-1] - peaks[0]) <= max(20.0, 0.05 * peaks[0]),
            "flat_rule": "largest-folder peak within max(20 MiB, 5 %) of the smallest-folder peak",
        }
    headline = {m: model_headline(r) for m, r in results.items()}
    return {
        **doc,
        "image_size": args.size,
        "pretrained": not args.random_init,
        "threads": threads,
        "gemm": gemm,
        "memory_bandwidth": bandwidth,
        "malloc": malloc,
        "headline": headline,
        "models": results,
        "runtime_import": imp,
        "infer_memory": memory,
        "loadavg_end": C.loadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    main()

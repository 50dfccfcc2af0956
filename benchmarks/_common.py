"""Helpers shared by the benchmark scripts (stdlib only at import time).

Every script: parse flags, call :func:`pin_threads` *before* numpy/torch are imported (so
OpenBLAS/OpenMP read the thread count from the environment), print progress with
:func:`log` on stderr and exactly one JSON document with :func:`emit` on stdout.

Memory: ``tracemalloc`` does not see torch/BLAS allocations, so we read the kernel's view.
``peak_rss_mb()`` is ``VmHWM`` from ``/proc/self/status`` (resettable per phase with
``reset_peak_rss()``, which writes ``5`` to ``/proc/self/clear_refs``), falling back to
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (whole-process lifetime peak) elsewhere.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
HAZELNUT_ROOT = REPO_ROOT.parent / "shared" / "data" / "hazelnut_toy"
SCHEMA_VERSION = "1.0"
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def emit(doc: dict[str, Any]) -> None:
    """Print the one JSON document of a run on stdout."""
    print(json.dumps(doc, indent=2, sort_keys=False, default=_json_default))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def pin_threads(n: int | None) -> int:
    """Fix the thread count of BLAS/OpenMP (env, before numpy import) and return it."""
    n = int(n or os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    if "numpy" in sys.modules:
        log("warning: numpy already imported; BLAS thread count may not follow --threads")
    for key in _THREAD_ENV:
        os.environ[key] = str(n)
    return n


def pin_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


def rss_source() -> str:
    return "/proc/self/status VmHWM (reset via /proc/self/clear_refs)" if _can_reset() else "resource.getrusage(RUSAGE_SELF).ru_maxrss"


def _can_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return Path("/proc/self/status").is_file()
    except OSError:
        return False


def _status_kb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux ≥ 4.0); False if impossible."""
    return _can_reset()


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else round(kb / 1024.0, 1)


def peak_rss_mb() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (or process start) in MiB."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return round(kb / 1024.0, 1)


def lifetime_peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def repeat_times(fn: Callable[[], Any], *, warmup: int, repeats: int, min_time_s: float = 0.0) -> list[float]:
    """Wall times of ``repeats`` calls (at least ``min_time_s`` in total) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_time_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_ms(times_s: list[float]) -> dict[str, float]:
    ms = [t * 1e3 for t in times_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(threads: int) -> dict[str, Any]:
    """Machine and library versions (importlib.metadata: imports nothing heavy)."""
    from importlib import metadata

    from pyimgano_deploy.bundles.environment import cpu_features

    versions = {}
    for pkg in ("numpy", "torch", "onnx", "onnxruntime", "opencv-python", "opencv-python-headless"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "versions": versions,
        "rss_source": rss_source(),
    }


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages: other processes on the machine skew every timing."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def header(name: str, args: Any, threads: int) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "benchmark": name,
        "quick": bool(getattr(args, "quick", False)),
        "config": {k: v for k, v in vars(args).items()},
        "environment": environment(threads),
        "loadavg_start": loadavg(),
    }


#: glibc mallopt parameters (malloc.h), and the largest trim threshold: never trim.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_NEVER = 2**31 - 1


def steady_malloc(threshold: int = 1 << 30) -> dict[str, Any]:
    """Make glibc malloc keep freed memory: blocks up to ``threshold`` bytes come from the
    heap (not a fresh ``mmap``) and the heap is never trimmed back to the OS.

    By default glibc maps every large block anew and unmaps it on free, so each eager torch
    call page-faults (and the kernel zeroes) its activations again: about 60,000 minor faults
    and 100 ms of system time per batch of 8 at 224 px here. Process-wide; call it before the
    timed work. Raises SystemExit where the C library has no ``mallopt`` (not glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        raise SystemExit("--malloc steady needs glibc's mallopt; this C library has none (use --malloc default)")
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, int(threshold))
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER)
    if not (ok_mmap and ok_trim):
        raise SystemExit(f"mallopt refused M_MMAP_THRESHOLD={threshold} or M_TRIM_THRESHOLD (glibc {platform.libc_ver()[1]})")
    return {"mode": "steady", "mmap_threshold_bytes": int(threshold), "trim_threshold_bytes": _TRIM_NEVER, "libc": name}


def minor_faults() -> int:
    """Minor page faults of this process so far (all threads)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

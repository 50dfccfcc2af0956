"""Capture the software and hardware environment at export time (stdlib only).

Package versions come from ``importlib.metadata`` — nothing is imported, so capturing the
environment never pulls torch, onnx or onnxruntime into the process. GPU details come from
``nvidia-smi`` when it is on PATH (with a timeout); otherwise they are ``None``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

NVIDIA_SMI_TIMEOUT_S = 10.0

# key in the captured dict → distribution names that provide it, first found wins
PACKAGE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "pyimgano-deploy": ("pyimgano-deploy",),
    "numpy": ("numpy",),
    "opencv": (
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-contrib-python",
    ),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "onnx": ("onnx",),
    "torch": ("torch",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs"),
}


def _distribution_version(names: tuple[str, ...]) -> tuple[str | None, str | None]:
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def package_versions() -> tuple[dict[str, str | None], dict[str, str]]:
    """(versions keyed as in ``PACKAGE_CANDIDATES``, the distribution found for each key)."""
    versions: dict[str, str | None] = {}
    distributions: dict[str, str] = {}
    for key, names in PACKAGE_CANDIDATES.items():
        dist, version = _distribution_version(names)
        versions[key] = version
        if dist is not None:
            distributions[key] = dist
    return versions, distributions


def cpu_model() -> str | None:
    """The CPU model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


#: instruction-set flags that decide which int8 and fp32 kernels ONNX Runtime picks on x86
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_features() -> dict[str, Any]:
    """``{"family", "model", "isa"}`` of the first CPU in ``/proc/cpuinfo`` (``isa``: which of
    :data:`ISA_FLAGS` it has), or ``{}`` where there is no ``/proc/cpuinfo``. The model name
    alone ("AMD EPYC") does not tell a VNNI CPU from an AVX2-only one, and int8 results differ
    between them when a kernel saturates."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return {}
    flags = set(fields.get("flags", "").split())
    return {"family": fields.get("cpu family"), "model": fields.get("model"),
            "isa": [flag for flag in ISA_FLAGS if flag in flags]}


def _run_nvidia_smi(exe: str, args: list[str]) -> str:
    proc = subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        timeout=NVIDIA_SMI_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"nvidia-smi exited with {proc.returncode}: {detail[-1] if detail else ''}")
    return proc.stdout


def parse_gpu_query(text: str) -> list[dict[str, str]]:
    """Parse ``nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader``."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            raise ValueError(f"unexpected nvidia-smi line {line!r} (expected 'name, compute_cap, driver')")
        gpus.append({"name": parts[0], "compute_capability": parts[1], "driver_version": parts[2]})
    return gpus


def gpu_info() -> dict[str, Any]:
    """``{"gpus": [...] | None, "cuda": {...} | None, "gpu_error": str | None}``."""
    info: dict[str, Any] = {"gpus": None, "cuda": None, "gpu_error": None}
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return info
    try:
        gpus = parse_gpu_query(
            _run_nvidia_smi(exe, ["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"])
        )
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError) as exc:
        info["gpu_error"] = f"{type(exc).__name__}: {exc}"
        return info
    info["gpus"] = gpus
    cuda_version = None
    try:
        match = re.search(r"CUDA Version:\s*([0-9.]+)", _run_nvidia_smi(exe, []))
        cuda_version = match.group(1) if match else None
    except (OSError, subprocess.SubprocessError, RuntimeError):
        cuda_version = None
    info["cuda"] = {
        "driver_version": gpus[0]["driver_version"] if gpus else None,
        "cuda_version": cuda_version,
    }
    return info


def capture_environment() -> dict[str, Any]:
    """A JSON-serialisable description of where this process runs.

    Keys: ``python``, ``python_implementation``, ``platform``, ``system``, ``machine``,
    ``cpu_model``, ``cpu_features`` (:func:`cpu_features`), ``cpu_count``, ``packages`` (version or ``None`` for pyimgano-deploy, numpy,
    opencv, onnxruntime, onnx, torch, tensorrt), ``package_distributions`` (which distribution
    supplied each found package), ``gpus`` (list of ``{name, compute_capability,
    driver_version}`` or ``None``), ``cuda`` (``{driver_version, cuda_version}`` or ``None``),
    ``gpu_error`` (why nvidia-smi failed, or ``None``).
    """
    versions, distributions = package_versions()
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable_bits": 64 if sys.maxsize > 2**32 else 32,
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "package_distributions": distributions,
    }
    env.update(gpu_info())
    return env

"""Build a TensorRT engine from a bundle's ONNX model (TensorRT 10 Python API).

``tensorrt`` and ``pycuda`` are imported lazily inside functions only, so this module imports
on any machine (and without torch or onnx). The pure helpers — engine file naming, the fp32
layer selection, batch validation — are testable without TensorRT.

The engine is written to ``<engine_dir>/engines/sm{major}{minor}-trt{version}.plan``;
``EngineInfo.file`` is that path relative to ``engine_dir`` (the bundle root), ready for the
manifest's ``engines`` list (see :meth:`EngineInfo.to_manifest_entry`).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyimgano_deploy.bundles.io_contract import INPUT_NAME
from pyimgano_deploy.bundles.precision_scopes import LEGACY_FP32_SCOPES, check_scopes, select_in_scopes

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'pyimgano-deploy[tensorrt]'"
#: TensorRT layer types never given a precision constraint (shape tensors, casts).
_NEVER_PIN = frozenset({"SHAPE", "CAST", "ASSERTION", "CONDITION"})
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")
_ENGINE_NAME_RE = re.compile(r"^sm(\d+)(\d)-trt([0-9A-Za-z._+-]+)\.plan$")


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or an NVIDIA GPU) is missing on this machine. CLI exit code 5."""

    exit_code = 5


class TensorRTBuildError(RuntimeError):
    """The ONNX parser or the builder failed; the message lists TensorRT's errors."""

    exit_code = 1


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]

    @property
    def compute_capability_str(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass
class EngineInfo:
    """What was built. ``file`` is relative to ``engine_dir`` (posix)."""

    file: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    precision: str  # "fp32" | "fp16"
    batch: dict[str, int]  # {min, opt, max}
    fp32_layers: list[str] = field(default_factory=list)
    build_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "precision": self.precision,
            "batch": dict(self.batch),
            "fp32_layers": list(self.fp32_layers),
            "build_seconds": self.build_seconds,
        }

    def to_manifest_entry(self, sha256: str | None = None) -> dict[str, Any]:
        """The manifest ``engines[]`` entry (INTERFACES.md) for this engine."""
        entry: dict[str, Any] = {
            "file": self.file,
            "format": "tensorrt",
            "precision": self.precision,
            "tensorrt_version": self.tensorrt_version,
            "gpu": {"name": self.gpu_name, "compute_capability": self.compute_capability},
            "batch": {
                "min": int(self.batch["min"]),
                "opt": int(self.batch["opt"]),
                "max": int(self.batch["max"]),
                "dynamic": int(self.batch["min"]) != int(self.batch["max"]),
            },
        }
        if sha256 is not None:
            entry["sha256"] = sha256
        return entry


# ------------------------------------------------------------------------------ pure helpers


def engine_file_name(compute_capability: tuple[int, int] | str, tensorrt_version: str) -> str:
    """``engines/sm{major}{minor}-trt{version}.plan``, e.g. ``engines/sm86-trt10.3.0.plan``."""
    major, minor = parse_compute_capability(compute_capability)
    if minor > 9:  # CUDA minors are one digit; keeps "sm{major}{minor}" unambiguous (sm120 = 12.0)
        raise ValueError(f"compute_capability: minor version must be 0..9, got {compute_capability!r}")
    version = str(tensorrt_version).strip()
    if not _VERSION_RE.match(version):
        raise ValueError(f"tensorrt_version: expected a version such as '10.3.0', got {tensorrt_version!r}")
    return f"engines/sm{major}{minor}-trt{version}.plan"


def parse_engine_file_name(file: str) -> tuple[tuple[int, int], str]:
    """Inverse of :func:`engine_file_name` (accepts the bare name or ``engines/<name>``)."""
    match = _ENGINE_NAME_RE.match(Path(file).name)
    if match is None:
        raise ValueError(f"engine file: expected 'sm<major><minor>-trt<version>.plan', got {file!r}")
    return (int(match.group(1)), int(match.group(2))), match.group(3)


def parse_compute_capability(value: tuple[int, int] | Sequence[int] | str) -> tuple[int, int]:
    """``"8.6"`` / ``(8, 6)`` → ``(8, 6)``; ValueError naming the value otherwise."""
    if isinstance(value, str):
        parts = value.strip().split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"compute_capability: expected 'major.minor' such as '8.6', got {value!r}")
        return int(parts[0]), int(parts[1])
    items = tuple(value)
    if len(items) != 2 or not all(isinstance(v, int) and v >= 0 for v in items):
        raise ValueError(f"compute_capability: expected (major, minor) non-negative ints, got {value!r}")
    return items[0], items[1]


def validate_batch_range(min_batch: int, opt_batch: int, max_batch: int) -> dict[str, int]:
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise ValueError(
            f"batch range: expected 1 <= min_batch <= opt_batch <= max_batch, "
            f"got min={min_batch}, opt={opt_batch}, max={max_batch}"
        )
    return {"min": int(min_batch), "opt": int(opt_batch), "max": int(max_batch)}


def select_fp32_layers(layers: Iterable[tuple[str, str | None]], fp32_scopes: Sequence[str]) -> list[str]:
    """Names of the layers to pin to fp32 in an fp16 engine: those inside the inference
    module's declared ``fp32_scopes`` (see :mod:`~pyimgano_deploy.exporters.precision_scopes`).

    ``layers`` is ``(layer_name, layer_type)`` pairs (``layer_type`` a ``trt.LayerType`` name or
    None); shape and cast layers are left to :func:`_pin_fp32_layers`. Order follows ``layers``.
    """
    return select_in_scopes((name for name, _type in layers), check_scopes(fp32_scopes))


# ------------------------------------------------------------------------- availability / GPU


def _import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except (ImportError, OSError) as exc:  # OSError: libnvinfer present but not loadable
        raise TensorRTUnavailableError(
            f"TensorRT is not installed or cannot be loaded ({exc}). Building an engine needs an "
            f"NVIDIA GPU with its driver and TensorRT: run `{INSTALL_HINT}` on that machine. "
            "Bundles still run everywhere with ONNX Runtime."
        ) from exc


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of GPU ``device`` via pycuda, else ``nvidia-smi``."""
    try:
        cuda = importlib.import_module("pycuda.driver")
    except ImportError:
        cuda = None
    if cuda is not None:
        try:
            cuda.init()
            dev = cuda.Device(device)
            return GpuInfo(name=str(dev.name()), compute_capability=tuple(dev.compute_capability()))  # type: ignore[arg-type]
        except (RuntimeError, getattr(cuda, "Error", RuntimeError)) as exc:
            log.debug("pycuda could not query the GPU: %s", exc)
    return _gpu_info_nvidia_smi(device)


def _gpu_info_nvidia_smi(device: int) -> GpuInfo:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise TensorRTUnavailableError(
            "no NVIDIA GPU found (pycuda cannot see one and `nvidia-smi` is not on PATH). Build the "
            f"engine on the target machine with an NVIDIA GPU, driver and `{INSTALL_HINT}`."
        )
    cmd = [exe, f"--id={device}", "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise TensorRTUnavailableError(f"`nvidia-smi` failed ({exc}); is the NVIDIA driver working?") from exc
    line = out.strip().splitlines()[0] if out.strip() else ""
    name, _, cap = line.rpartition(",")
    try:
        return GpuInfo(name=name.strip(), compute_capability=parse_compute_capability(cap.strip()))
    except ValueError as exc:
        raise TensorRTUnavailableError(f"could not read the GPU compute capability from nvidia-smi: {line!r}") from exc


def tensorrt_available() -> tuple[bool, str]:
    """``(True, "TensorRT x.y on <gpu> (sm_xy)")`` or ``(False, reason with install hint)``."""
    try:
        trt = _import_tensorrt()
        gpu = gpu_info()
    except TensorRTUnavailableError as exc:
        return False, str(exc)
    return True, f"TensorRT {trt.__version__} on {gpu.name} (compute capability {gpu.compute_capability_str})"


def require_tensorrt() -> tuple[Any, GpuInfo]:
    """The ``tensorrt`` module and the GPU, or :class:`TensorRTUnavailableError`."""
    trt = _import_tensorrt()
    return trt, gpu_info()


# ------------------------------------------------------------------------------------ build


def _trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data (model.onnx.data) relative to the model file.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTBuildError(
            f"TensorRT's ONNX parser rejected {onnx_path} ({len(errors)} error(s)):\n  " + "\n  ".join(errors)
            + "\nRun pyimgano_deploy.exporters.tensorrt_compat.check_tensorrt_compatibility on it for details."
        )
    return parser


def _input_hw(network: Any, input_name: str, hw: tuple[int, int] | None) -> tuple[int, list[int]]:
    """Index of the input and its static dims [-1, H, W, C] filled from ``hw`` if needed."""
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if input_name not in names:
        raise TensorRTBuildError(f"input {input_name!r} not found in the network; inputs are {names}")
    idx = names.index(input_name)
    dims = list(network.get_input(idx).shape)
    if len(dims) != 4:
        raise TensorRTBuildError(f"input {input_name!r}: expected rank 4 NHWC, got shape {dims}")
    if hw is not None:
        if dims[1] > 0 and dims[2] > 0 and (dims[1], dims[2]) != tuple(hw):
            raise TensorRTBuildError(f"input {input_name!r}: model is {dims[1]}x{dims[2]}, hw={hw} given")
        dims[1], dims[2] = int(hw[0]), int(hw[1])
    if any(d <= 0 for d in dims[1:]):
        raise TensorRTBuildError(f"input {input_name!r} has dynamic non-batch dims {dims}; pass hw=(H, W)")
    return idx, dims


def _pin_fp32_layers(trt: Any, network: Any, fp32_scopes: Sequence[str]) -> list[str]:
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    chosen = set(select_fp32_layers([(ly.name, getattr(ly.type, "name", None)) for ly in layers], fp32_scopes))
    float_types = {trt.float32, trt.float16}
    pinned: list[str] = []
    for layer in layers:
        if layer.name not in chosen:
            continue
        out_types = [layer.get_output(j).dtype for j in range(layer.num_outputs)]
        if getattr(layer.type, "name", None) in _NEVER_PIN or not any(t in float_types for t in out_types):
            # shape arithmetic / casts inside the distance subgraph: a float32 constraint there
            # would make OBEY_PRECISION_CONSTRAINTS fail the build
            log.debug("not pinning %s (type %s, outputs %s)", layer.name, layer.type, out_types)
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in float_types:  # TopK indices etc. stay int
                layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
        log.info("loaded TensorRT timing cache %s (%d bytes)", path, len(data))
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _write_atomic(path: Path, data: bytes | memoryview) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def build_engine(
    onnx_path: str | os.PathLike[str],
    engine_dir: str | os.PathLike[str],
    *,
    fp16: bool = False,
    fp32_scopes: Sequence[str] = LEGACY_FP32_SCOPES,
    workspace_gb: float = 4.0,
    min_batch: int = 1,
    opt_batch: int = 8,
    max_batch: int = 32,
    timing_cache_path: str | os.PathLike[str] | None = None,
    input_name: str = INPUT_NAME,
    hw: tuple[int, int] | None = None,
) -> EngineInfo:
    """Parse ``onnx_path`` and build a serialized engine under ``engine_dir/engines/``.

    fp16 sets ``BuilderFlag.FP16`` plus ``OBEY_PRECISION_CONSTRAINTS`` and pins every layer in
    ``fp32_scopes`` (the manifest's ``model.fp32_scopes``; see :func:`select_fp32_layers`) to fp32. The timing cache at ``timing_cache_path``
    is loaded when present and saved back after the build. Raises
    :class:`TensorRTUnavailableError` without TensorRT / GPU, :class:`TensorRTBuildError` when
    parsing or building fails.
    """
    batch = validate_batch_range(min_batch, opt_batch, max_batch)
    if workspace_gb <= 0:
        raise ValueError(f"workspace_gb: expected > 0, got {workspace_gb}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    trt, gpu = require_tensorrt()
    version = str(trt.__version__)
    rel_file = engine_file_name(gpu.compute_capability, version)

    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if _trt_major(trt) < 10:  # explicit batch is the only mode (and the flag deprecated) in 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    _parser = _parse_onnx(trt, network, logger, onnx_path)  # keep alive until the build ends

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    _, dims = _input_hw(network, input_name, hw)
    profile = builder.create_optimization_profile()
    h, w, c = dims[1], dims[2], dims[3]
    profile.set_shape(input_name, (batch["min"], h, w, c), (batch["opt"], h, w, c), (batch["max"], h, w, c))
    config.add_optimization_profile(profile)

    pinned: list[str] = []
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32_layers(trt, network, fp32_scopes)
        if not pinned:
            raise TensorRTBuildError(f"fp16 engine: no layer of {onnx_path} lies in the fp32 scopes {list(fp32_scopes)}; "
                                     "refusing to build an engine whose distances would run in fp16")
    _load_timing_cache(config, cache_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above); "
            f"try a larger --workspace-gb (now {workspace_gb}) or a smaller --max-batch (now {max_batch})"
        )
    out_path = Path(engine_dir) / rel_file
    _write_atomic(out_path, memoryview(serialized))
    if cache_path is not None:
        _write_atomic(cache_path, memoryview(config.get_timing_cache().serialize()))
    return EngineInfo(
        file=rel_file,
        tensorrt_version=version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability_str,
        precision="fp16" if fp16 else "fp32",
        batch=batch,
        fp32_layers=pinned,
        build_seconds=round(time.perf_counter() - start, 3),
    )


__all__ = [
    "INSTALL_HINT",
    "EngineInfo",
    "GpuInfo",
    "TensorRTBuildError",
    "TensorRTUnavailableError",
    "build_engine",
    "engine_file_name",
    "gpu_info",
    "parse_compute_capability",
    "parse_engine_file_name",
    "require_tensorrt",
    "select_fp32_layers",
    "tensorrt_available",
    "validate_batch_range",
]

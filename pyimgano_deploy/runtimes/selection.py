"""Pick the engine a bundle runs with on this machine, and say why.

Order for ``engine="auto"``: a TensorRT plan built for this GPU's compute capability and this
TensorRT version; otherwise ONNX Runtime with the TensorRT, CUDA and CPU execution providers
that are available, in that order. ``precision="auto"`` means fp32 on CPU and the fp16 file on
a GPU when the bundle has one; it never picks int8, which runs only when asked by name. Every decision and every refused engine is recorded in
``EngineChoice.reasons`` (logged by the loader and kept in ``Runtime.engine_info``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pyimgano_deploy.bundles.manifest import PRECISIONS as ENGINE_PRECISIONS
from pyimgano_deploy.runtimes.errors import EngineLoadError

DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "onnx", "tensorrt")
#: "auto" and every engine precision a manifest may declare (int8 only when asked by name)
PRECISIONS = ("auto", *ENGINE_PRECISIONS)
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class TensorRTProbe:
    """What this machine offers for TensorRT: versions, or ``reason`` when it offers nothing."""

    trt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.trt_version is not None and self.compute_capability is not None


@dataclass
class EngineChoice:
    """The engine record picked from the manifest and how to open it."""

    entry: dict[str, Any]
    kind: str  # "onnxruntime" | "tensorrt"
    device: str  # "cpu" | "cuda"
    precision: str
    providers: list[Any] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.kind,
            "file": self.entry.get("file"),
            "format": self.entry.get("format"),
            "precision": self.precision,
            "device": self.device,
            "providers": [p[0] if isinstance(p, (tuple, list)) else p for p in self.providers],
            "reasons": list(self.reasons),
        }


def _norm_cc(value: object) -> str | None:
    """Compute capability as "major.minor" from "8.6", 8.6, [8, 6], "sm_86" or "86"."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    text = str(value).strip().lower().removeprefix("sm_").removeprefix("sm")
    if "." in text:
        major, minor = text.split(".", 1)
        return f"{int(major)}.{int(minor)}"
    if text.isdigit() and len(text) >= 2:
        return f"{int(text[:-1])}.{int(text[-1])}"
    return text or None


def _version_key(value: object) -> tuple[str, ...]:
    """First three components of a version string ("10.3.0.26" → ("10", "3", "0"))."""
    parts = str(value).strip().split(".")
    return tuple((parts + ["0", "0", "0"])[:3])


def tensorrt_mismatch(entry: Mapping[str, Any], probe: TensorRTProbe) -> str | None:
    """Why a TensorRT plan cannot run here, or ``None`` when it matches GPU and TensorRT version."""
    name = entry.get("file", "?")
    if not probe.usable:
        return f"{name}: TensorRT unavailable here ({probe.reason or 'not installed'})"
    gpu = entry.get("gpu") or {}
    want_cc = _norm_cc(gpu.get("compute_capability"))
    want_trt = entry.get("tensorrt_version")
    if want_cc != _norm_cc(probe.compute_capability):
        return (
            f"{name}: built for compute capability {want_cc} ({gpu.get('name', '?')}), "
            f"this GPU is {probe.compute_capability} ({probe.gpu_name})"
        )
    if want_trt is None or _version_key(want_trt) != _version_key(probe.trt_version):
        return f"{name}: built with TensorRT {want_trt}, this machine has TensorRT {probe.trt_version}"
    return None


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    value = str(value).lower()
    if value == "gpu":
        value = "cuda"
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def _ordered_providers(available: Sequence[str], device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    return [p for p in PROVIDER_ORDER if p in available or p == "CPUExecutionProvider"]


def select_engine(
    engines: Sequence[Mapping[str, Any]],
    *,
    device: str = "auto",
    engine: str = "auto",
    precision: str = "auto",
    providers: Sequence[Any] | None = None,
    available_providers: Sequence[str] = ("CPUExecutionProvider",),
    probe_tensorrt: Callable[[], TensorRTProbe] | None = None,
) -> EngineChoice:
    """Choose an engine record of the manifest (see the module docstring for the rules).

    ``probe_tensorrt`` is called only when a TensorRT plan could be used. Raises
    :class:`EngineLoadError` when the explicit request cannot be met, and ``ValueError`` for
    an unknown ``device`` / ``engine`` / ``precision``.
    """
    device = _check_choice("device", device, DEVICES)
    engine = _check_choice("engine", engine, ENGINES)
    precision = _check_choice("precision", precision, PRECISIONS)
    reasons: list[str] = []
    gpu_eps = [p for p in GPU_PROVIDERS if p in available_providers]
    plans = [dict(e) for e in engines if e.get("format") == "tensorrt"]
    onnx_files = [dict(e) for e in engines if e.get("format") == "onnx"]

    if engine == "tensorrt" and device == "cpu":
        raise EngineLoadError("engine='tensorrt' needs a GPU, but device='cpu' was requested")
    probe: TensorRTProbe | None = None
    if engine in ("auto", "tensorrt") and device != "cpu":
        if plans and probe_tensorrt is not None:
            probe = probe_tensorrt()
        elif not plans:
            reasons.append("bundle has no TensorRT engine")
        if probe is not None:
            wanted = [p for p in plans if (precision == "auto" and p.get("precision") != "int8") or p.get("precision") == precision]
            # fp16 plans first (auto precision on a GPU prefers fp16), then fp32.
            wanted.sort(key=lambda p: 0 if p.get("precision") == "fp16" else 1)
            if not wanted:
                reasons.append(f"bundle has no TensorRT engine with precision {precision}")
            for plan in wanted:
                why = tensorrt_mismatch(plan, probe)
                if why is None:
                    reasons.append(
                        f"TensorRT engine {plan.get('file')} matches this GPU "
                        f"({probe.gpu_name}, compute capability {probe.compute_capability}) "
                        f"and TensorRT {probe.trt_version}"
                    )
                    return EngineChoice(plan, "tensorrt", "cuda", str(plan.get("precision", "fp32")), [], reasons)
                reasons.append(why)
        if engine == "tensorrt":
            raise EngineLoadError("no usable TensorRT engine in the bundle: " + "; ".join(reasons))
        if plans:
            reasons.append("falling back to ONNX Runtime")

    if not onnx_files:
        raise EngineLoadError("bundle has no ONNX engine to fall back to: " + "; ".join(reasons or ["no engines"]))
    if device == "cuda" and not gpu_eps and providers is None:
        raise EngineLoadError(
            f"device='cuda' requested but ONNX Runtime offers no GPU provider here "
            f"(available: {list(available_providers)}; install onnxruntime-gpu)"
        )
    on_gpu = device != "cpu" and bool(gpu_eps)
    if providers is not None:
        chosen_providers = list(providers)
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in chosen_providers]
        on_gpu = any(n in GPU_PROVIDERS for n in names)
        reasons.append(f"execution providers given by the caller: {names}")
    else:
        chosen_providers = _ordered_providers(available_providers, "cuda" if on_gpu else "cpu")
        reasons.append(
            f"ONNX Runtime providers {chosen_providers} (available here: {list(available_providers)})"
        )
    by_precision = {str(e.get("precision", "fp32")): e for e in onnx_files}
    if precision == "auto":
        if on_gpu and "fp16" in by_precision:
            use = "fp16"
            reasons.append("precision auto: fp16 ONNX file on GPU")
        else:
            candidates = [p for p in ("fp32", "fp16") if p in by_precision]
            if not candidates:
                raise EngineLoadError(f"precision auto never picks int8, and the bundle's ONNX engines are {sorted(by_precision)}: "
                                      "ask for precision='int8' by name")
            use = candidates[0]
            reasons.append(f"precision auto: {use} ({'GPU without fp16 file' if on_gpu else 'CPU'})")
    else:
        use = precision
        if use not in by_precision:
            raise EngineLoadError(
                f"precision {use} requested but the bundle's ONNX engines are {sorted(by_precision)}"
            )
        reasons.append(f"precision {use} requested")
    return EngineChoice(
        by_precision[use], "onnxruntime", "cuda" if on_gpu else "cpu", use, chosen_providers, reasons
    )

"""torch → ONNX for a detector's inference module (ARCHITECTURE §4).

The module is traced whole: ``images`` uint8 ``[batch, H, W, 3]`` → ``score`` float32
``[batch]``, ``anomaly_map`` float32 ``[batch, H, W]``, dynamic batch axis, opset ≥ 17.
fp16 exports a copy whose modules outside the declared fp32 scopes run in half precision
(converting a finished fp32 graph to fp16 breaks the uint8 input cast, so we export a
half-precision module instead).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from pyimgano_deploy.bundles.io_contract import INPUT_NAME, OUTPUT_NAMES
from pyimgano_deploy.exporters.graph_rewrites import fold_conv_output_slices, scope_constants, scope_unnamed_nodes

TWO_GB = 2**31
EXTERNAL_DATA_SUFFIX = ".data"


class ExportError(RuntimeError):
    """The module could not be exported or the exported file failed its checks."""


def trace_to_onnx(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: str | Path, *, opset: int,
                  input_names: list[str], output_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]] | None = None) -> None:
    """Trace ``module`` on ``args`` (no grad) to the ONNX file ``path`` with the TorchScript
    exporter, constants folded. A ``TracerWarning`` (a value the trace would freeze) is an error."""
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but gives static, deterministic
        # graphs for our modules; its deprecation notice is not actionable for users.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")
        warnings.filterwarnings("error", category=torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)


@dataclass(frozen=True)
class OnnxExportInfo:
    """What one export produced: file names relative to the bundle, sizes and settings."""

    file: str
    external_data_file: str | None
    precision: str
    opset: int
    bytes: int

    def engine_entry(self, max_batch: int) -> dict:
        return {
            "file": self.file,
            "format": "onnx",
            "precision": self.precision,
            "opset": self.opset,
            "external_data": self.external_data_file is not None,
            "batch": {"min": 1, "opt": min(8, max_batch), "max": max_batch, "dynamic": True},
        }


def _initializer_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for init in model.graph.initializer:
        total += int(np.prod(init.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


def _declare_output_shapes(model: onnx.ModelProto, height: int, width: int) -> None:
    """Write the contract's output shapes into the graph (the tracer leaves H, W unnamed),
    so runtimes and TensorRT see ``score [batch]`` and ``anomaly_map [batch, H, W]``."""
    wanted = {OUTPUT_NAMES[0]: ["batch"], OUTPUT_NAMES[1]: ["batch", height, width]}
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        del dims[:]
        for d in wanted[out.name]:
            dim = dims.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = int(d)


def export_module(
    module: torch.nn.Module,
    example: np.ndarray,
    path: str | Path,
    *,
    precision: str = "fp32",
    opset: int = 17,
    external_data_threshold: int = TWO_GB - 2**24,
) -> OnnxExportInfo:
    """Export ``module`` to ``path``; ``example`` is a real uint8 ``[B, H, W, 3]`` batch (B ≥ 2
    so the batch axis is seen as variable). Models whose weights exceed
    ``external_data_threshold`` bytes are written with ONNX external data in
    ``<file>.data``. The file is checked with ``onnx.checker`` on its path."""
    if opset < 17:
        raise ExportError(f"opset must be >= 17 (LayerNorm/Resize semantics TensorRT relies on), got {opset}")
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    if example.dtype != np.uint8 or example.ndim != 4 or example.shape[0] < 2:
        raise ExportError(f"example batch must be uint8 [B>=2, H, W, 3], got {example.shape} {example.dtype}")
    path = Path(path)
    m = copy.deepcopy(module).to("cpu").eval()
    if precision == "fp16":
        m.half_outside_fp32_scopes()
    x = torch.from_numpy(np.ascontiguousarray(example))
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAMES[0]: {0: "batch"}, OUTPUT_NAMES[1]: {0: "batch"}}
    trace_to_onnx(m, (x,), path, opset=opset, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic)
    model = onnx.load(str(path))
    _declare_output_shapes(model, example.shape[1], example.shape[2])
    fold_conv_output_slices(model)
    scope_unnamed_nodes(model)
    scope_constants(model)
    onnx.save_model(model, str(path))
    external = None
    if _initializer_bytes(model) > external_data_threshold:
        external = path.name + EXTERNAL_DATA_SUFFIX
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=external, size_threshold=1024)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {path.name}: {exc}") from exc
    size = path.stat().st_size + ((path.parent / external).stat().st_size if external else 0)
    return OnnxExportInfo(file=path.name, external_data_file=external, precision=precision, opset=opset, bytes=size)


def onnx_outputs(path: str | Path, batch: np.ndarray, *, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported model with ONNX Runtime (CPU) → ``(score [N], anomaly_map [N, H, W])``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    scores, maps = [], []
    for s in range(0, len(batch), batch_size):
        sc, mp = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: batch[s : s + batch_size]})
        scores.append(sc)
        maps.append(mp)
    return np.concatenate(scores), np.concatenate(maps)

"""int8 engine: ONNX Runtime static quantisation (QDQ) of an exported fp32 graph.

The fp32 ``model.onnx`` is first pre-processed (``quant_pre_process``: constant folding and
BatchNorm fused into its convolution, names kept), then every ``Conv`` / ``ConvTranspose``
outside the bundle's fp32 scopes gets per-channel int8 weights and uint8 activations. The weights
use 7 bits (``reduce_range``): x86 CPUs without VNNI multiply uint8 by int8 in a saturating int16,
which full-range weights overflow, so an engine gated on a VNNI machine would score differently
on an AVX2-only one. Activation ranges are calibrated on the run's **calibration split** (never
on fit images). The scoring head — distances, Mahalanobis products, the map finisher, the score —
stays fp32: it lives in the fp32 scopes, where int8 rounding would land in the expansions
``‖q‖² − 2·q·b + ‖b‖²`` that cancel to small numbers. The export then applies the parity gate
(:mod:`pyimgano_deploy.bundles.parity`, precision ``int8``) like every other engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from pyimgano_deploy.bundles.io_contract import INPUT_NAME
from pyimgano_deploy.bundles.precision_scopes import in_scopes

#: op types whose weights and inputs are quantised (the backbone's arithmetic)
QUANTIZED_OPS = ("Conv", "ConvTranspose")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")


def quantize_int8(fp32_model: Path, out: Path, calibration: np.ndarray, fp32_scopes: Sequence[str], *,
                  method: str = "minmax", batch: int = 4) -> dict[str, Any]:
    """Write the int8 QDQ model of ``fp32_model`` to ``out``; ``calibration`` is the preprocessed
    uint8 ``[N, H, W, 3]`` calibration batch. Returns the manifest's ``calibration`` record."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"int8 calibration method must be one of {list(CALIBRATION_METHODS)}, got {method!r}")
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration images must be uint8 [N, H, W, 3] with N >= 1, got {calibration.dtype} {calibration.shape}")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(calibration[i : i + batch] for i in range(0, len(calibration), batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._batches, None)
            return None if x is None else {INPUT_NAME: x}

    pre = out.with_name(out.stem + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_model), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre), load_external_data=False).graph
        excluded = [n.name for n in graph.node if in_scopes(n.name, fp32_scopes)]
        quantized = [n.name for n in graph.node if n.op_type in QUANTIZED_OPS and n.name not in excluded]
        if not quantized:
            raise ValueError(f"{fp32_model.name}: no {'/'.join(QUANTIZED_OPS)} node outside the fp32 scopes {list(fp32_scopes)}: nothing to quantise")
        methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}
        quantize_static(str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        op_types_to_quantize=list(QUANTIZED_OPS), calibrate_method=methods[method], reduce_range=True)
    finally:
        pre.unlink(missing_ok=True)
    return {"split": "calibration", "n_images": int(len(calibration)), "method": method, "format": "QDQ",
            "weights": "int8 per channel, 7-bit range", "activations": "uint8 per tensor", "quantized_nodes": len(quantized),
            "fp32_nodes_kept": len(excluded), "ops": list(QUANTIZED_OPS)}

"""model.int8.onnx: which part of the detector runs in int8, and building it.

Two scopes, chosen by :func:`resolve_int8_scope`:

* ``nn_head`` (memory-bank detectors: PatchCore, SoftPatch, AnomalyDINO): the backbone stays
  fp32 and the nearest-neighbour head finds its candidates with int8 distances to the whole
  bank (in its leading principal directions), then re-ranks them exactly in fp32
  (:mod:`pyimgano_deploy.models.detectors.int8_candidates`). Queries are quantised per chunk
  of rows by the graph itself, so no calibration images are needed; the gate still runs on the golden
  images of the calibration split. The head is where these detectors spend their time, and a
  static int8 backbone moves every nearest-neighbour distance (bsd_ballscrew PatchCore:
  |Δscore| 11.3 against a bound of 1.1) without speeding up EfficientNet-Lite's depthwise
  convolutions.
* ``backbone`` (every other detector): ONNX Runtime static QDQ quantisation of the backbone's
  convolutions, ranges calibrated on the calibration split (:mod:`.int8_quantize`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pyimgano_deploy.exporters.onnx_export import OnnxExportInfo

INT8_SCOPES = ("auto", "backbone", "nn_head")
INT8_FILE = "model.int8.onnx"
#: nn_head scope: candidate rows per query re-ranked in fp32 (bsd_ballscrew PatchCore: 8 in 96
#: principal directions miss about as many neighbours as 4 in all 152, with 37 % less int8 work)
INT8_CANDIDATES = 8


def has_nn_head(module: Any) -> bool:
    """Whether ``module`` holds a full nearest-neighbour head (a memory-bank detector)."""
    from pyimgano_deploy.models.detectors.layers import NearestNeighbourDistance

    return any(isinstance(m, NearestNeighbourDistance) for m in module.modules())


def resolve_int8_scope(scope: str, module: Any) -> str:
    """``auto`` → ``nn_head`` for memory-bank detectors, ``backbone`` otherwise; ``nn_head`` is
    refused (``NoNearestNeighbourHeadError``) for a detector without a nearest-neighbour head. ``scope`` is one of
    :data:`INT8_SCOPES` (``ExportOptions`` checks it)."""
    if scope == "auto":
        return "nn_head" if has_nn_head(module) else "backbone"
    if scope == "nn_head" and not has_nn_head(module):
        from pyimgano_deploy.models.detectors.reranked_distance import NoNearestNeighbourHeadError

        raise NoNearestNeighbourHeadError(f"int8 scope 'nn_head': {type(module).__name__} has no nearest-neighbour head (only memory-bank "
                         "detectors: PatchCore, SoftPatch, AnomalyDINO); use --int8-scope backbone")
    return scope


def build_int8_engine(module: Any, golden: Any, work: Path, *, scope: str, candidates: int, projection_dim: int | None,
                      opset: int, calibration: Callable[[], Any], method: str,
                      log: Callable[[str], None]) -> tuple["OnnxExportInfo", dict[str, Any]]:
    """Write ``work/model.int8.onnx`` for the resolved ``scope``; returns its export info and the
    engine's ``calibration`` record. ``calibration()`` yields the calibration-split batch (only the
    backbone scope needs it); ``work/model.onnx`` must already be the fp32 export of ``module``.
    ``candidates`` / ``projection_dim`` (``None``: the variance rule) shape the nn_head scope's head."""
    from pyimgano_deploy.exporters.onnx_export import OnnxExportInfo, export_module

    if scope == "nn_head":
        from pyimgano_deploy.models.detectors.int8_candidates import Int8RerankedNearestNeighbourDistance
        from pyimgano_deploy.models.detectors.reranked_distance import reranked_copy

        int8_module = reranked_copy(module, candidates=candidates, projection_dim=projection_dim, source="int8")
        head = next(m for m in int8_module.modules() if isinstance(m, Int8RerankedNearestNeighbourDistance))
        log(f"exporting {INT8_FILE} (nearest-neighbour candidates from int8 distances in {head.projection_dim} "
            f"principal directions, {head.n_candidates} re-ranked in fp32) ...")
        info = export_module(int8_module, golden, work / INT8_FILE, precision="fp32", opset=opset)
        record = {"scope": "nn_head", "method": "dynamic", "split": "calibration (golden images, for the gate)",
                  "queries": "uint8 per chunk of rows (DynamicQuantizeLinear)", "bank": "int8, one scale per row",
                  **head.record(), "exact_distance": "fp32, full dimension, candidates only", "backbone": "fp32"}
        return OnnxExportInfo(INT8_FILE, info.external_data_file, "int8", opset, info.bytes), record
    from pyimgano_deploy.exporters.int8_quantize import quantize_int8

    images = calibration()
    log(f"quantising {INT8_FILE} (QDQ, {method} ranges from {len(images)} calibration-split inputs) ...")
    record = quantize_int8(work / "model.onnx", work / INT8_FILE, images, module.fp32_scopes, method=method)
    return OnnxExportInfo(INT8_FILE, None, "int8", opset, (work / INT8_FILE).stat().st_size), {"scope": "backbone", **record}

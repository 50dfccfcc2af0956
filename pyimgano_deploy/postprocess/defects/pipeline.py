"""The defects pipeline: anomaly map → binary mask → ordered regions (numpy + OpenCV only)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from os import PathLike
from typing import Any, Sequence

import numpy as np

from ..maps import as_float_map
from ..thresholds import ThresholdCalibration, calibrate_quantile
from . import steps
from .config import DefectsConfig
from .merge import merge_nearby
from .regions import Region, component_solidity, measure_components, passes_filters, to_region
from .rle import mask_to_rle

CODE_PATH = "pyimgano_deploy.postprocess.defects.pipeline.calibrate_pixel_threshold"


@dataclass
class DefectsResult:
    """Output of ``extract_defects``.

    mask: ``uint8 [H, W]`` in {0, 1}, map space; exactly the pixels of ``regions``.
    regions: in the deterministic order, ``regions[k].id == k``.
    pixel_threshold: the (high) threshold used; hysteresis_low: the low one or ``None``.
    image_size: ``(H, W)`` the boxes were scaled to (``None`` = map space).
    """

    mask: np.ndarray
    regions: list[Region]
    pixel_threshold: float
    hysteresis_low: float | None = None
    image_size: tuple[int, int] | None = None

    @property
    def map_size(self) -> tuple[int, int]:
        return (int(self.mask.shape[0]), int(self.mask.shape[1]))

    def to_record(self, *, mask_path: str | PathLike[str] | None = None, include_rle: bool = False) -> dict[str, Any]:
        """JSON-serialisable ``{"mask": path or None, ["rle": ...,] "pixel_threshold", "regions"}``."""
        record: dict[str, Any] = {"mask": None if mask_path is None else str(mask_path)}
        if include_rle:

            record["rle"] = mask_to_rle(self.mask)
        record["pixel_threshold"] = float(self.pixel_threshold)
        record["regions"] = [r.to_dict() for r in self.regions]
        return record


def resolve_pixel_threshold(config: DefectsConfig, pixel_threshold: float | ThresholdCalibration | None) -> float:
    """The high pixel threshold for ``config`` (ValueError saying how to provide a missing one)."""
    if config.pixel_threshold_source == "fixed":
        return float(config.pixel_threshold_value)  # type: ignore[arg-type]
    if isinstance(pixel_threshold, ThresholdCalibration):
        pixel_threshold = pixel_threshold.value
    if pixel_threshold is None:
        if config.pixel_threshold_source == "normal_quantile":
            how = ("calibrate one on normal maps with calibrate_pixel_threshold(normal_maps, "
                   f"quantile={config.pixel_threshold_quantile:g}, ...) (or calibrate_for_config) "
                   "and pass its .value as pixel_threshold=")
        else:
            how = ("pass pixel_threshold= (the bundle's thresholds.pixel.value; a bundle without a pixel "
                   "threshold needs one calibrated with calibrate_pixel_threshold)")
        raise ValueError(
            f"defects need a pixel threshold (pixel_threshold_source={config.pixel_threshold_source!r}) "
            f"and none was given: {how}, or set pixel_threshold_source='fixed' with pixel_threshold_value=<float>")
    value = float(pixel_threshold)
    if not np.isfinite(value):
        raise ValueError(f"pixel_threshold must be finite, got {pixel_threshold!r}")
    return value


def resolve_hysteresis_low(config: DefectsConfig, high: float) -> float | None:
    """The low hysteresis threshold (``None`` when hysteresis is off); must not exceed ``high``."""
    if config.hysteresis_low is not None:
        low = float(config.hysteresis_low)
    elif config.hysteresis_low_ratio is not None:
        low = float(config.hysteresis_low_ratio) * high
    else:
        return None
    if low > high:
        raise ValueError(f"hysteresis low threshold {low:g} is above the pixel threshold {high:g}; set "
                         "'hysteresis_low' <= the pixel threshold (a ratio needs a positive threshold)")
    return low


def _check_image_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    ok = (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in image_size))
    if not ok:
        raise ValueError(f"image_size must be (H, W) with positive integers, got {image_size!r}")
    return (int(image_size[0]), int(image_size[1]))


def extract_defects(
    anomaly_map: np.ndarray,
    config: DefectsConfig,
    *,
    pixel_threshold: float | ThresholdCalibration | None,
    image_size: tuple[int, int] | None = None,
) -> DefectsResult:
    """Run the defects pipeline on one ``[H, W]`` anomaly map (see ``DefectsConfig`` for the steps).

    ``pixel_threshold`` is the high threshold for sources ``"bundle"`` and ``"normal_quantile"``
    (ignored for ``"fixed"``). ``image_size = (H, W)`` scales ``bbox_xyxy_image``.
    The map itself is never modified.
    """
    if not isinstance(config, DefectsConfig):
        raise ValueError(f"config must be a DefectsConfig, got {type(config).__name__}")
    amap = as_float_map(anomaly_map)
    size = _check_image_size(image_size)
    high = resolve_pixel_threshold(config, pixel_threshold)
    low = resolve_hysteresis_low(config, high)
    shape = (int(amap.shape[0]), int(amap.shape[1]))

    valid = steps.valid_mask(shape, config.roi_xyxy_norm, config.border_ignore_px)
    smoothed = steps.smooth_map(amap, config.smoothing, ksize=config.smoothing_ksize, sigma=config.smoothing_sigma)
    mask = steps.binarize(smoothed, high, low, valid)
    mask = steps.morphology(mask, open_ksize=config.open_ksize, close_ksize=config.close_ksize,
                            shape=config.morph_shape) & valid
    if config.fill_holes:
        mask = steps.fill_holes(mask) & valid

    labels, n = steps.label_components(mask)
    comps = [c for c in measure_components(labels, n, amap) if passes_filters(labels, c, config, high)]
    kept = np.zeros(n + 1, dtype=bool)
    kept[[c.label for c in comps]] = True
    labels = np.where(kept[labels], labels, 0).astype(np.int32)  # pre-merge labels, filtered
    mask = (labels > 0).astype(np.uint8)
    if config.merge_gap_px is not None and len(comps) > 1:
        mask = merge_nearby(mask, labels, comps, config.merge_gap_px) & valid.astype(np.uint8)
    if config.core_ratio is not None:
        mask = steps.region_cores(mask, smoothed, high, config.core_ratio)

    return _finalise(mask, labels, amap, config, high, low, size)


def _finalise(mask: np.ndarray, pre_labels: np.ndarray, amap: np.ndarray, config: DefectsConfig,
              high: float, low: float | None, image_size: tuple[int, int] | None) -> DefectsResult:
    """Relabel the final mask, record merged_from, order, assign ids, apply max_regions."""
    labels, n = steps.label_components(mask)
    comps = measure_components(labels, n, amap)
    # merged_from: which pre-merge components (0-based) fall in each final component.
    both = (labels > 0) & (pre_labels > 0)
    pairs = np.unique(np.stack([labels[both], pre_labels[both] - 1], axis=1), axis=0) if both.any() else np.zeros((0, 2), int)
    members: dict[int, list[int]] = {}
    for fin, pre in pairs.tolist():
        members.setdefault(fin, []).append(pre)
    comps.sort(key=lambda c: c.sort_key())
    dropped = comps[config.max_regions:] if config.max_regions is not None else []
    comps = comps[: config.max_regions] if config.max_regions is not None else comps
    if dropped:
        drop = np.zeros(n + 1, dtype=bool)
        drop[[c.label for c in dropped]] = True
        mask = np.where(drop[labels], 0, mask).astype(np.uint8)
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    regions = [
        to_region(rid, c, component_solidity(labels, c), sorted(members.get(c.label, [])), shape, image_size)
        for rid, c in enumerate(comps)
    ]
    return DefectsResult(mask=np.ascontiguousarray(mask, dtype=np.uint8), regions=regions,
                         pixel_threshold=high, hysteresis_low=low, image_size=image_size)


def calibrate_pixel_threshold(
    normal_maps: Sequence[np.ndarray] | np.ndarray,
    *,
    quantile: float,
    roi_xyxy_norm: tuple[float, float, float, float] | None = None,
    source_split: str,
    code_path: str = CODE_PATH,
) -> ThresholdCalibration:
    """Pixel threshold = the ``quantile`` of all pixels of normal maps (only inside the ROI when
    ``roi_xyxy_norm`` is given), with provenance (``n_images`` maps, ``n_values`` pixels)."""
    maps = list(normal_maps) if not isinstance(normal_maps, np.ndarray) or normal_maps.ndim == 3 else [normal_maps]
    if not maps:
        raise ValueError(f"cannot calibrate a pixel threshold: no normal maps from '{source_split}'")
    if roi_xyxy_norm is not None:
        roi_xyxy_norm = DefectsConfig(roi_xyxy_norm=roi_xyxy_norm).roi_xyxy_norm  # validates
    pixels = []
    for i, m in enumerate(maps):
        arr = as_float_map(m, name=f"normal map #{i}")
        x0, y0, x1, y1 = steps.roi_to_pixels(roi_xyxy_norm, arr.shape)
        pixels.append(arr[y0:y1, x0:x1].ravel())
    cal = calibrate_quantile(np.concatenate(pixels), quantile=quantile, source_split=source_split,
                             n_images=len(maps), code_path=code_path)
    where = "" if roi_xyxy_norm is None else f" inside ROI {list(roi_xyxy_norm)}"
    return replace(cal, method=f"quantile q={quantile:g} of normal pixels{where} of {source_split} maps")


def pixel_threshold_for_config(
    config: DefectsConfig,
    *,
    stored: ThresholdCalibration | float | None,
    normal_maps: Sequence[np.ndarray] | np.ndarray | None,
    source_split: str,
) -> tuple[float, dict[str, Any]]:
    """The one resolver of the pixel threshold defects use, for the CLI, the workbench and the
    runtime alike: ``(value, provenance {source, value, calibration})``.

    ``fixed``: the config's value; ``bundle``: ``stored`` (the bundle's or run's calibrated
    pixel threshold); ``normal_quantile``: the config's quantile of ``normal_maps`` (the
    bundle's golden maps, or the run's calibration maps), computed here. ``ValueError`` saying
    what is missing otherwise.
    """
    source = config.pixel_threshold_source
    if source == "fixed":
        value = float(config.pixel_threshold_value)  # type: ignore[arg-type]
        return value, {"source": "fixed", "value": value, "calibration": None}
    if source == "bundle":
        if stored is None:
            raise ValueError("the bundle has no pixel threshold (thresholds.pixel is null); use pixel_threshold_source "
                             "'fixed' with a value, or 'normal_quantile'")
        cal = stored if isinstance(stored, ThresholdCalibration) else None
        value = resolve_pixel_threshold(config, stored)
        return value, {"source": "bundle", "value": value, "calibration": None if cal is None else cal.to_dict()}
    if normal_maps is None:
        raise ValueError("pixel_threshold_source 'normal_quantile' needs normal maps to take the quantile of")
    cal = calibrate_for_config(normal_maps, config, source_split=source_split)
    return float(cal.value), {"source": "normal_quantile", "value": float(cal.value), "calibration": cal.to_dict()}


def calibrate_for_config(
    normal_maps: Sequence[np.ndarray] | np.ndarray,
    config: DefectsConfig,
    *,
    source_split: str,
    code_path: str = CODE_PATH,
) -> ThresholdCalibration:
    """``calibrate_pixel_threshold`` with the quantile and (if ``quantile_in_roi``) ROI of ``config``."""
    return calibrate_pixel_threshold(normal_maps, quantile=config.pixel_threshold_quantile,
                                     roi_xyxy_norm=config.calibration_roi, source_split=source_split,
                                     code_path=code_path)

"""Torch-free post-processing: anomaly-map ops, thresholds, defects (mask → regions)."""

from .defects import (
    DEFECTS_PRESETS,
    DefectsConfig,
    DefectsResult,
    Region,
    calibrate_for_config,
    calibrate_pixel_threshold,
    extract_defects,
    get_preset,
    mask_to_rle,
    render_overlay,
    rle_to_mask,
    save_mask_png,
    save_overlay,
)
from .maps import blur_map, colorize_map, normalize_map, resize_map
from .thresholds import ThresholdCalibration, apply_threshold, calibrate_quantile, summarize_values

__all__ = [
    "DEFECTS_PRESETS",
    "DefectsConfig",
    "DefectsResult",
    "Region",
    "ThresholdCalibration",
    "apply_threshold",
    "blur_map",
    "calibrate_for_config",
    "calibrate_pixel_threshold",
    "calibrate_quantile",
    "colorize_map",
    "extract_defects",
    "get_preset",
    "mask_to_rle",
    "normalize_map",
    "render_overlay",
    "resize_map",
    "rle_to_mask",
    "save_mask_png",
    "save_overlay",
    "summarize_values",
]

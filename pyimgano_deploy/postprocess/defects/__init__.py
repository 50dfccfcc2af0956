"""Defects pipeline: anomaly map → binary mask → ordered regions, plus mask/overlay files
(``outputs``) and run-length encoding (``rle``)."""

from .config import DEFECTS_PRESETS, FP40, DefectsConfig, get_preset
from .outputs import render_overlay, save_mask_png, save_overlay
from .rle import mask_to_rle, rle_to_mask
from .pipeline import (
    DefectsResult,
    calibrate_for_config,
    calibrate_pixel_threshold,
    extract_defects,
    pixel_threshold_for_config,
    resolve_hysteresis_low,
    resolve_pixel_threshold,
)
from .regions import Region

__all__ = [
    "DEFECTS_PRESETS",
    "FP40",
    "DefectsConfig",
    "DefectsResult",
    "Region",
    "calibrate_for_config",
    "calibrate_pixel_threshold",
    "extract_defects",
    "get_preset",
    "mask_to_rle",
    "pixel_threshold_for_config",
    "render_overlay",
    "resolve_hysteresis_low",
    "resolve_pixel_threshold",
    "rle_to_mask",
    "save_mask_png",
    "save_overlay",
]

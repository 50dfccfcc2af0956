"""Defects output files: mask PNGs and overlays on the image (numpy + OpenCV only)."""

from __future__ import annotations

import math
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from ..maps import colorize_map, normalize_map, resize_map
from .pipeline import DefectsResult
from .rle import as_mask

BOX_COLOR_RGB = (255, 255, 255)
TEXT_COLOR_RGB = (255, 255, 255)


def _write_image(img: np.ndarray, path: str | PathLike[str]) -> Path:
    """Encode with OpenCV by the file's extension and write bytes (works for non-ASCII paths)."""
    p = Path(path)
    ext = p.suffix.lower() or ".png"
    if not p.suffix:
        p = p.with_suffix(".png")
    ok, buf = cv2.imencode(ext, img)
    if not ok:
        raise ValueError(f"cannot encode an image as {ext!r} for {p}")
    p.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(p))
    return p


def save_mask_png(mask: np.ndarray, path: str | PathLike[str]) -> Path:
    """Write a binary mask as a single-channel 8-bit PNG, 0 → 0 and non-zero → 255.

    Parent folders are created; the path may hold non-ASCII characters. Returns the path written
    (``.png`` appended when the path has no extension)."""
    return _write_image(as_mask(mask) * np.uint8(255), path)


def _image_box(bbox: tuple[int, int, int, int], sx: float, sy: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Map-space end-exclusive box → image-space inclusive corners for cv2.rectangle."""
    h, w = size
    x0 = min(max(int(math.floor(bbox[0] * sx)), 0), w - 1)
    y0 = min(max(int(math.floor(bbox[1] * sy)), 0), h - 1)
    x1 = min(max(int(math.ceil(bbox[2] * sx)) - 1, x0), w - 1)
    y1 = min(max(int(math.ceil(bbox[3] * sy)) - 1, y0), h - 1)
    return x0, y0, x1, y1


def render_overlay(
    image_rgb_u8: np.ndarray,
    anomaly_map: np.ndarray,
    result: DefectsResult | None,
    *,
    alpha: float = 0.5,
    value_range: tuple[float, float] | None = None,
    box_color: tuple[int, int, int] = BOX_COLOR_RGB,
) -> np.ndarray:
    """Heat map blended on the image, with region boxes and ids, in image space (uint8 RGB).

    The map is resized to the image; colours span ``value_range = (lo, hi)`` when given
    (e.g. ``(0, 2 * pixel_threshold)`` for a scale comparable across images), else the map's own
    min..max. ``alpha`` is the heat map's weight in [0, 1]. Boxes come from ``bbox_xyxy`` scaled
    by image size / map size; ``result=None`` draws the heat map only."""
    img = np.asarray(image_rgb_u8)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image_rgb_u8 must be uint8 [H, W, 3], got shape {img.shape} dtype {img.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = img.shape[:2]
    heat_map = resize_map(anomaly_map, (h, w))
    if value_range is None:
        m01 = normalize_map(heat_map, "minmax")
    else:
        lo, hi = float(value_range[0]), float(value_range[1])
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range!r}")
        m01 = np.clip((heat_map - lo) / (hi - lo), 0.0, 1.0)
    heat = colorize_map(m01)
    out = cv2.addWeighted(heat, float(alpha), np.ascontiguousarray(img), 1.0 - float(alpha), 0.0)
    if result is None or not result.regions:
        return out
    mh, mw = result.map_size
    sx, sy = w / mw, h / mh
    thickness = max(1, int(round(min(h, w) / 256)))
    font_scale = max(0.3, min(h, w) / 512)
    for region in result.regions:
        x0, y0, x1, y1 = _image_box(region.bbox_xyxy, sx, sy, (h, w))
        cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(c) for c in box_color), thickness, cv2.LINE_8)
        org = (x0 + 1, max(y0 - 2, 8))
        cv2.putText(out, str(region.id), org, cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    TEXT_COLOR_RGB, 1, cv2.LINE_AA)
    return out


def save_overlay(
    image_rgb_u8: np.ndarray,
    anomaly_map: np.ndarray,
    result: DefectsResult | None,
    path: str | PathLike[str],
    *,
    alpha: float = 0.5,
    value_range: tuple[float, float] | None = None,
) -> Path:
    """``render_overlay`` written to ``path`` (format from the extension, PNG by default)."""
    rgb = render_overlay(image_rgb_u8, anomaly_map, result, alpha=alpha, value_range=value_range)
    return _write_image(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), path)

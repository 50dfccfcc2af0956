"""Mask-level steps of the defects pipeline (numpy + OpenCV only).

Masks are ``uint8 [H, W]`` arrays in {0, 1}. Every function returns a new array.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_MEDIAN_CV2_FLOAT_KSIZES = (3, 5)  # cv2.medianBlur accepts float32 only for these
_MEDIAN_CHUNK_ELEMENTS = 1 << 22


def roi_to_pixels(roi_xyxy_norm: tuple[float, float, float, float] | None, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Normalised ``(x0, y0, x1, y1)`` → pixel ``(x0, y0, x1, y1)``, end-exclusive.

    A pixel is inside when it overlaps the ROI at all (floor of the start, ceil of the end);
    the result always holds at least one pixel.
    """
    h, w = shape
    if roi_xyxy_norm is None:
        return 0, 0, w, h
    fx0, fy0, fx1, fy1 = roi_xyxy_norm
    x0 = min(max(int(math.floor(fx0 * w + 1e-9)), 0), w - 1)
    y0 = min(max(int(math.floor(fy0 * h + 1e-9)), 0), h - 1)
    x1 = max(min(int(math.ceil(fx1 * w - 1e-9)), w), x0 + 1)
    y1 = max(min(int(math.ceil(fy1 * h - 1e-9)), h), y0 + 1)
    return x0, y0, x1, y1


def roi_mask(roi_xyxy_norm: tuple[float, float, float, float] | None, shape: tuple[int, int]) -> np.ndarray:
    """``bool [H, W]``: True inside the ROI."""
    x0, y0, x1, y1 = roi_to_pixels(roi_xyxy_norm, shape)
    out = np.zeros(shape, dtype=bool)
    out[y0:y1, x0:x1] = True
    return out


def valid_mask(shape: tuple[int, int], roi_xyxy_norm: tuple[float, float, float, float] | None, border_ignore_px: int) -> np.ndarray:
    """``bool [H, W]``: where a defect may appear (inside the ROI and away from the border)."""
    valid = roi_mask(roi_xyxy_norm, shape)
    b = int(border_ignore_px)
    if b > 0:
        valid[:b, :] = False
        valid[-b:, :] = False
        valid[:, :b] = False
        valid[:, -b:] = False
    return valid


def _median_numpy(m: np.ndarray, ksize: int) -> np.ndarray:
    """Median filter with replicated borders for any odd ``ksize``, in row chunks."""
    r = ksize // 2
    padded = np.pad(m, r, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (ksize, ksize))
    out = np.empty_like(m)
    rows = max(1, _MEDIAN_CHUNK_ELEMENTS // max(1, m.shape[1] * ksize * ksize))
    for start in range(0, m.shape[0], rows):
        block = windows[start:start + rows].reshape(-1, m.shape[1], ksize * ksize)
        out[start:start + rows] = np.median(block, axis=-1)
    return out


def smooth_map(m: np.ndarray, method: str, *, ksize: int = 3, sigma: float = 1.0) -> np.ndarray:
    """Smooth a float32 map: ``"none"`` (copy), ``"median"`` (ksize, replicated border),
    ``"gaussian"`` (sigma, reflect-101 border), ``"box"`` (ksize mean, reflect-101 border)."""
    src = np.ascontiguousarray(m, dtype=np.float32)
    if method == "none":
        return src.copy()
    if method == "median":
        if ksize in _MEDIAN_CV2_FLOAT_KSIZES:
            return cv2.medianBlur(src, ksize)
        return _median_numpy(src, ksize)
    if method == "gaussian":
        return cv2.GaussianBlur(src, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))
    if method == "box":
        return cv2.blur(src, (ksize, ksize))
    raise ValueError(f"smoothing must be one of ['none', 'median', 'gaussian', 'box'], got {method!r}")


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected labels (int32, 0 = background, 1..n in raster order of first pixel) and n."""
    n, labels = cv2.connectedComponents(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if n > 2:
        # OpenCV's numbering follows its union-find roots; renumber by first pixel so labels
        # do not depend on the OpenCV version.
        ids, first = np.unique(labels.ravel(), return_index=True)
        fg, fg_first = ids[ids > 0], first[ids > 0]
        order = np.zeros(int(ids.max()) + 1, dtype=np.int32)  # background stays 0
        order[fg[np.argsort(fg_first)]] = np.arange(1, len(fg) + 1, dtype=np.int32)
        labels = order[labels]
    return labels, int(n) - 1


def region_cores(mask: np.ndarray, level_map: np.ndarray, high: float, ratio: float) -> np.ndarray:
    """Each 8-connected region of ``mask`` reduced to its core: the pixels at or above
    ``high + ratio × (peak − high)`` (``peak``: the region's maximum of ``level_map``; at most
    ``peak``) that are 8-connected to its first peak pixel in raster order. One region in, one
    region out; ``uint8 [H, W]`` in {0, 1}."""
    # OpenCV's own numbering is enough here: the result does not depend on it.
    n, labels = cv2.connectedComponents(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if n == 1:
        return np.zeros(mask.shape, dtype=np.uint8)
    fg = np.flatnonzero(labels.ravel())  # raster order; the work is over region pixels only
    lab, vals = labels.ravel()[fg], level_map.ravel()[fg]
    peaks = np.full(n, -np.inf)
    np.maximum.at(peaks, lab, vals)
    peak = peaks[lab]
    # A region can peak below ``high`` (opening, closing or hysteresis shaped it): its core is its peak.
    level = np.minimum(peak, high + ratio * (peak - high))
    core = np.zeros(mask.size, dtype=np.uint8)
    core[fg[vals >= level]] = 1
    _, core_labels = cv2.connectedComponents(core.reshape(mask.shape), connectivity=8, ltype=cv2.CV_32S)
    at_peak = np.flatnonzero(vals == peak)
    _, first = np.unique(lab[at_peak], return_index=True)  # each region's first peak pixel
    keep = np.zeros(int(core_labels.max()) + 1, dtype=bool)
    keep[core_labels.ravel()[fg[at_peak[first]]]] = True
    keep[0] = False
    return keep[core_labels].astype(np.uint8)


def binarize(smoothed: np.ndarray, high: float, low: float | None, valid: np.ndarray) -> np.ndarray:
    """``value >= high`` inside ``valid``; with ``low``, hysteresis: pixels ``>= low`` are kept
    only in 8-connected groups (within ``valid``) that hold at least one ``>= high`` pixel."""
    seeds = (smoothed >= high) & valid
    if low is None:
        return seeds.astype(np.uint8)
    weak = (smoothed >= low) & valid
    labels, n = label_components(weak)
    if n == 0:
        return np.zeros(smoothed.shape, dtype=np.uint8)
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    return keep[labels].astype(np.uint8)


def morph_kernel(ksize: int, shape: str) -> np.ndarray:
    kind = cv2.MORPH_ELLIPSE if shape == "ellipse" else cv2.MORPH_RECT
    return cv2.getStructuringElement(kind, (ksize, ksize))


def morphology(mask: np.ndarray, *, open_ksize: int, close_ksize: int, shape: str = "rect") -> np.ndarray:
    """Opening with ``open_ksize`` then closing with ``close_ksize`` (0 or 1 = skip)."""
    out = np.ascontiguousarray(mask, dtype=np.uint8).copy()
    for op, k in ((cv2.MORPH_OPEN, open_ksize), (cv2.MORPH_CLOSE, close_ksize)):
        if k > 1:
            # Pad with background so the map edge behaves as if the map continued with zeros.
            padded = cv2.copyMakeBorder(out, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
            padded = cv2.morphologyEx(padded, op, morph_kernel(k, shape))
            out = np.ascontiguousarray(padded[k:-k, k:-k])
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Set background pixels not 4-connected to the map's outside (holes in 8-connected regions)."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    h, w = m.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = m > 0
    flood = np.zeros((h + 4, w + 4), dtype=np.uint8)
    cv2.floodFill(padded, flood, (0, 0), 2, flags=4)
    return (padded[1:-1, 1:-1] != 2).astype(np.uint8)

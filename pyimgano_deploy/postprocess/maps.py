"""Anomaly-map operations for display and post-processing (numpy + OpenCV only).

Every function here works on a copy: the caller's array — and so the model's scores — is never
modified. Maps are ``[H, W]`` float arrays; results are float32 unless stated otherwise.
"""

from __future__ import annotations

import cv2
import numpy as np

NORMALIZE_METHODS = ("minmax", "percentile")


def as_float_map(m: np.ndarray, *, name: str = "anomaly_map") -> np.ndarray:
    """``m`` as a C-contiguous float32 ``[H, W]`` copy; ValueError on wrong shape or NaN/inf."""
    arr = np.asarray(m)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [H, W] array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} contains NaN or inf values")
    return out


def normalize_map(
    m: np.ndarray, method: str = "minmax", low: float = 1.0, high: float = 99.0
) -> np.ndarray:
    """Rescale a map to [0, 1] (float32).

    ``method="minmax"`` maps min → 0 and max → 1; ``method="percentile"`` maps the ``low``-th
    percentile → 0 and the ``high``-th → 1 and clips outside (robust to a few hot pixels).
    A constant map (no range) gives zeros.
    """
    arr = as_float_map(m)
    if method == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
    elif method == "percentile":
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentile bounds must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
        lo, hi = (float(v) for v in np.percentile(arr, [low, high]))
    else:
        raise ValueError(f"normalize_map method must be one of {list(NORMALIZE_METHODS)}, got {method!r}")
    if not hi > lo:
        return np.zeros_like(arr)
    out = (arr - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def blur_map(m: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` px (kernel size chosen by OpenCV,
    reflect-101 border). ``sigma <= 0`` returns an unblurred copy."""
    arr = as_float_map(m)
    if sigma <= 0:
        return arr
    return cv2.GaussianBlur(arr, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to ``size = (h, w)`` with bilinear interpolation (``cv2.INTER_LINEAR``), float32."""
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"resize_map size must be (h, w) with positive ints, got {size!r}")
    h, w = int(size[0]), int(size[1])
    arr = as_float_map(m)
    if arr.shape == (h, w):
        return arr
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32, copy=False)


def colorize_map(m01: np.ndarray) -> np.ndarray:
    """A [0, 1] map (clipped) → ``uint8 [H, W, 3]`` RGB with the JET colour map."""
    arr = np.clip(as_float_map(m01, name="m01"), 0.0, 1.0)
    u8 = np.round(arr * 255.0).astype(np.uint8)
    bgr = cv2.applyColorMap(u8, cv2.COLORMAP_JET)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

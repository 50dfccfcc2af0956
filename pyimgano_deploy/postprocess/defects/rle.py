"""Run-length encoding of binary defect masks (COCO's uncompressed layout)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def as_mask(mask: np.ndarray) -> np.ndarray:
    """``mask`` as ``uint8 [H, W]`` in {0, 1} (any non-zero is 1); ValueError for another rank."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"mask must be a 2-D [H, W] array, got shape {arr.shape}")
    return (arr != 0).astype(np.uint8)


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed run-length encoding like COCO's: ``{"size": [h, w], "counts": [...]}``.

    Pixels are read in column-major (Fortran) order — down the first column, then the next — and
    ``counts`` alternates run lengths of 0s and 1s, starting with 0s (so it starts with 0 when the
    first pixel is set). ``sum(counts) == h * w``."""
    m = as_mask(mask)
    h, w = m.shape
    flat = m.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Inverse of ``mask_to_rle``: ``uint8 [h, w]`` in {0, 1}."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = np.asarray([int(c) for c in rle["counts"]], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"RLE must be {{'size': [h, w], 'counts': [int, ...]}}, got {rle!r:.200}") from exc
    if h < 0 or w < 0 or np.any(counts < 0):
        raise ValueError(f"RLE size and counts must be non-negative, got size {[h, w]}")
    if int(counts.sum()) != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())} but size {[h, w]} holds {h * w} pixels")
    values = (np.arange(counts.size) % 2).astype(np.uint8)
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape((h, w), order="F"))


__all__ = ["as_mask", "mask_to_rle", "rle_to_mask"]

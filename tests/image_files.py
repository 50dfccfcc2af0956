"""Small test inputs shared by several test modules: flat PNG files and defects-map helpers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pyimgano_deploy.postprocess import DefectsConfig, extract_defects

THR = 0.5  # the fixed pixel threshold of the defects helpers below


def flat_png(path: Path, value: int = 128) -> Path:
    """An 8x8 RGB PNG of one grey ``value`` at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.full((8, 8, 3), value, np.uint8))
    assert ok
    buf.tofile(str(path))
    return path


def cfg(**kw: object) -> DefectsConfig:
    """A defects config with the fixed threshold ``THR`` and ``kw`` changed."""
    return DefectsConfig(pixel_threshold_source="fixed", pixel_threshold_value=THR, **kw)


def run(m: np.ndarray, **kw: object):
    """``extract_defects`` of map ``m`` with :func:`cfg` (``kw``)."""
    return extract_defects(m, cfg(**kw), pixel_threshold=None)


def blank(h: int = 64, w: int = 64) -> np.ndarray:
    return np.zeros((h, w), np.float32)

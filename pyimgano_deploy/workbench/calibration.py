"""The held-out calibration split and the threshold calibration of a fitted detector.

Images used to fit a memory bank are never used to calibrate its threshold (ARCHITECTURE §3):
``split_calibration`` draws a seeded subset of the training normals for calibration and
fitting never sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np

from pyimgano_deploy.postprocess.thresholds import ThresholdCalibration, calibrate_quantile

T = TypeVar("T")

CALIBRATION_SPLIT = "calibration"
IMAGE_CODE_PATH = "pyimgano_deploy.workbench.calibration.calibrate_thresholds"
PIXEL_CODE_PATH = "pyimgano_deploy.workbench.calibration.calibrate_thresholds(pixel)"
MAX_PIXEL_VALUES = 1 << 24  # pixel quantile on at most ~16.8 M values (strided subsample beyond)


class CalibrationSplitError(ValueError):
    """The training split is too small to hold out calibration images."""


def calibration_count(n: int, fraction: float) -> int:
    """How many of ``n`` training normals go to calibration: ``round(fraction · n)`` clamped to
    ``[1, n − 1]`` (at least one image on each side)."""
    if n < 2:
        raise CalibrationSplitError(
            f"the training split has {n} image(s); at least 2 are needed (1 to fit, 1 to calibrate the threshold)"
        )
    if not 0.0 < fraction < 1.0:
        raise CalibrationSplitError(f"calibration fraction must be in (0, 1), got {fraction}")
    return int(min(n - 1, max(1, round(fraction * n))))


def split_calibration(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Seeded split of ``items`` into ``(fit, calibration)``, disjoint, each in the original order."""
    n = len(items)
    n_cal = calibration_count(n, fraction)
    rng = np.random.default_rng(seed)
    cal_idx = set(rng.permutation(n)[:n_cal].tolist())
    fit = [items[i] for i in range(n) if i not in cal_idx]
    cal = [items[i] for i in range(n) if i in cal_idx]
    return fit, cal


@dataclass
class Thresholds:
    image: ThresholdCalibration
    pixel: ThresholdCalibration | None

    def to_dict(self) -> dict[str, dict | None]:
        return {"image": self.image.to_dict(), "pixel": None if self.pixel is None else self.pixel.to_dict()}


def _pixel_sample(maps: Sequence[np.ndarray]) -> np.ndarray:
    """All pixels of ``maps``; a regular strided subsample when there are more than MAX_PIXEL_VALUES."""
    total = sum(int(np.asarray(m).size) for m in maps)
    step = 1
    while total // (step * step) > MAX_PIXEL_VALUES:
        step += 1
    return np.concatenate([np.asarray(m, dtype=np.float32)[::step, ::step].ravel() for m in maps])


def calibrate_thresholds(
    scores: Sequence[float] | np.ndarray,
    maps: Sequence[np.ndarray] | None,
    *,
    quantile: float,
    pixel_quantile: float | None,
    source_split: str = CALIBRATION_SPLIT,
) -> Thresholds:
    """Image threshold = ``quantile`` of the calibration scores; pixel threshold =
    ``pixel_quantile`` of all calibration-map pixels (skipped when ``pixel_quantile`` or
    ``maps`` is None). Both carry provenance naming this function."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    image = calibrate_quantile(s, quantile=quantile, source_split=source_split, n_images=int(s.size), code_path=IMAGE_CODE_PATH)
    pixel = None
    if pixel_quantile is not None and maps is not None and len(maps) > 0:
        pixel = calibrate_quantile(
            _pixel_sample(maps), quantile=pixel_quantile, source_split=source_split, n_images=len(maps), code_path=PIXEL_CODE_PATH
        )
    return Thresholds(image=image, pixel=pixel)

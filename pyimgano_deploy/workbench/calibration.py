"""The held-out calibration split (the thresholds themselves: ``postprocess.thresholds``).

Images used to fit a memory bank are never used to calibrate its threshold (ARCHITECTURE §3):
``split_calibration`` draws a seeded subset of the training normals for calibration and
fitting never sees it.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from pyimgano_deploy.postprocess.thresholds import Thresholds, calibrate_thresholds

T = TypeVar("T")

CALIBRATION_SPLIT = "calibration"


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


__all__ = ["CALIBRATION_SPLIT", "CalibrationSplitError", "Thresholds", "calibrate_thresholds", "calibration_count", "split_calibration"]

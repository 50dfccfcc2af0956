"""``report.html`` of a run: metrics, thresholds, plots and the worst cases with map overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pyimgano_deploy.inputs import read_image
from pyimgano_deploy.workbench.report_html import select_worst_cases, write_report_html
from pyimgano_deploy.workbench.scoring import ScoredSplit

MAX_SIDE = 256  # images in the gallery are downsized to this (keeps the HTML small)
WORST_K = 4


def _thumbnail(path: str, u16_max: int | None) -> np.ndarray:
    image = read_image(path, u16_max=u16_max)
    h, w = image.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return image


def write_run_report(
    path: Path,
    *,
    title: str,
    metrics: dict[str, Any],
    thresholds: dict[str, Any],
    test: ScoredSplit,
    threshold: float,
    preprocess: Any = None,
    training: list[dict[str, Any]] | None = None,
    u16_max: int | None = None,
) -> Path:
    """Write ``report.html`` for the test split (worst cases from ``select_worst_cases``).

    ``preprocess``: the detector's (plain runs); with a centre crop the thumbnail is cut to the
    area the map covers. The map is resized onto the thumbnail. ``u16_max``: the set's, for
    16-bit files.
    """
    names = [s.path for s in test.samples]
    y = [s.label for s in test.samples]
    cases = []
    for i in select_worst_cases(names, y, test.scores, threshold, k=WORST_K):
        image = _center_fraction(_thumbnail(names[i], u16_max), preprocess)
        cases.append({"name": names[i], "score": float(test.scores[i]),
                      "y_true": int(y[i]), "image_rgb_u8": image, "anomaly_map": test.maps[i]})
    return write_report_html(path, title=title, metrics=metrics, thresholds=thresholds, y_true=y, scores=test.scores,
                             threshold=threshold, worst_cases=cases, training=training)


def _center_fraction(image: np.ndarray, preprocess: Any) -> np.ndarray:
    """The part of ``image`` that a centre-cropped model input covers."""
    if preprocess is None or preprocess.center_crop is None:
        return image
    (sh, sw), (ch, cw) = preprocess.size, preprocess.center_crop
    h, w = image.shape[:2]
    top, left = round(h * ((sh - ch) // 2) / sh), round(w * ((sw - cw) // 2) / sw)
    return np.ascontiguousarray(image[top : top + max(1, round(h * ch / sh)), left : left + max(1, round(w * cw / sw))])

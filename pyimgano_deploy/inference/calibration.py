"""Calibrate image (and pixel) thresholds of an eager detector on normal images."""

from __future__ import annotations

import numpy as np

from pyimgano_deploy.postprocess.thresholds import ThresholdCalibration, calibrate_quantile


def calibrate_threshold(
    detector: object,
    normal_images: object,
    *,
    input_format: str | None = None,
    quantile: float = 0.99,
    source_split: str = "calibration",
    pixel_quantile: float | None = None,
) -> ThresholdCalibration:
    """Image threshold = ``quantile`` of the detector's scores on ``normal_images``.

    The images must not be the ones the detector was fitted on (a memory bank scores its
    own patches ~0). Sets ``detector.threshold`` (and ``detector.pixel_threshold`` when
    ``pixel_quantile`` is given: that quantile of all calibration map pixels) and returns
    the image calibration with its provenance.
    """
    scores, maps = detector.score_and_maps(normal_images, input_format=input_format)  # type: ignore[attr-defined]
    calib = calibrate_quantile(
        scores,
        quantile=quantile,
        source_split=source_split,
        n_images=len(scores),
        code_path="pyimgano_deploy.inference.calibration.calibrate_threshold",
    )
    detector.threshold = calib  # type: ignore[attr-defined]
    if pixel_quantile is not None:
        detector.pixel_threshold = calibrate_quantile(  # type: ignore[attr-defined]
            np.asarray(maps).ravel(),
            quantile=pixel_quantile,
            source_split=source_split,
            n_images=len(scores),
            code_path="pyimgano_deploy.inference.calibration.calibrate_threshold(pixel)",
        )
    return calib

"""Calibrate image (and pixel) thresholds of an eager detector on normal images."""

from __future__ import annotations

from pyimgano_deploy.postprocess.thresholds import ThresholdCalibration, calibrate_thresholds


def calibrate_threshold(
    detector: object,
    normal_images: object,
    *,
    input_format: str | None = None,
    quantile: float = 0.99,
    source_split: str = "calibration",
    pixel_quantile: float | None = None,
    u16_max: int | None = None,
) -> ThresholdCalibration:
    """Image threshold = ``quantile`` of the detector's scores on ``normal_images``.

    The images must not be the ones the detector was fitted on (a memory bank scores its
    own patches ~0). Sets ``detector.threshold`` (and ``detector.pixel_threshold`` when
    ``pixel_quantile`` is given: that quantile of the calibration map pixels, subsampled past
    16.8 M values exactly as ``train`` does — one implementation,
    ``postprocess.thresholds.calibrate_thresholds``) and returns the image calibration.
    A detector that ``needs_calibration`` (an ensemble's member scales) is calibrated on the
    same images first, as ``train`` does. ``u16_max``: the full-scale value of 16-bit images.
    """
    if getattr(detector, "needs_calibration", False):
        detector.calibrate(normal_images, input_format=input_format, source_split=source_split, u16_max=u16_max)  # type: ignore[attr-defined]
    scores, maps = detector.score_and_maps(normal_images, input_format=input_format, u16_max=u16_max)  # type: ignore[attr-defined]
    found = calibrate_thresholds(scores, maps, quantile=quantile, pixel_quantile=pixel_quantile, source_split=source_split)
    detector.threshold = found.image  # type: ignore[attr-defined]
    if found.pixel is not None:
        detector.pixel_threshold = found.pixel  # type: ignore[attr-defined]
    return found.image

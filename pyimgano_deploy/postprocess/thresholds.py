"""Threshold calibration with provenance (numpy only).

A threshold is never a bare number: it carries how it was computed, from which split and how
many images, and a summary of the values it came from, so an auditor can reproduce it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

SUMMARY_QUANTILES = (0.5, 0.9, 0.95, 0.99)


def summarize_values(values: np.ndarray) -> dict[str, float]:
    """min, max, mean, std and the quantiles in ``SUMMARY_QUANTILES`` of a 1-D float array."""
    v = np.asarray(values, dtype=np.float64).ravel()
    summary = {
        "min": float(v.min()),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "std": float(v.std()),
    }
    for q in SUMMARY_QUANTILES:
        summary[f"q{int(round(q * 100))}"] = float(np.quantile(v, q))
    return summary


@dataclass(frozen=True)
class ThresholdCalibration:
    """A calibrated threshold and its provenance (ARCHITECTURE §3)."""

    value: float
    method: str
    quantile: float | None
    source_split: str
    n_images: int
    n_values: int
    score_summary: dict[str, float] = field(default_factory=dict)
    code_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ThresholdCalibration":
        required = ("value", "method", "source_split", "n_images")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"threshold record is missing {missing}; got keys {sorted(data)}")
        value = float(data["value"])
        if not np.isfinite(value):
            raise ValueError(f"threshold value must be finite, got {data['value']!r}")
        quantile = data.get("quantile")
        return cls(
            value=value,
            method=str(data["method"]),
            quantile=None if quantile is None else float(quantile),
            source_split=str(data["source_split"]),
            n_images=int(data["n_images"]),
            n_values=int(data.get("n_values", data["n_images"])),
            score_summary={str(k): float(v) for k, v in dict(data.get("score_summary", {})).items()},
            code_path=str(data.get("code_path", "")),
        )


def calibrate_quantile(
    values: np.ndarray,
    *,
    quantile: float,
    source_split: str,
    n_images: int,
    code_path: str,
) -> ThresholdCalibration:
    """Threshold = the ``quantile`` of ``values`` (linear interpolation, numpy's default).

    ``values`` are image scores (one per image) or map pixels; they must be finite.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError(f"cannot calibrate a threshold on an empty '{source_split}' split")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"calibration values from '{source_split}' contain NaN or inf")
    return ThresholdCalibration(
        value=float(np.quantile(v, quantile)),
        method=f"quantile q={quantile:g} of {source_split} values",
        quantile=float(quantile),
        source_split=source_split,
        n_images=int(n_images),
        n_values=int(v.size),
        score_summary=summarize_values(v),
        code_path=code_path,
    )


#: image-threshold strategies of :func:`calibrate_image_threshold` (normal calibration scores only)
STRATEGIES = ("quantile", "max_margin", "target_fpr")
#: the strategy that needs labelled validation images (:func:`calibrate_f1_threshold`)
F1_STRATEGY = "f1_validation"
ALL_STRATEGIES = STRATEGIES + (F1_STRATEGY,)
#: splits a run's image threshold may come from: held-out normals, or labelled validation images (never fit images)
#: the split name of labelled validation images (the F1-optimal strategy's)
VALIDATION_SPLIT = "validation"
THRESHOLD_SOURCE_SPLITS = ("calibration", VALIDATION_SPLIT)
#: pixel-threshold strategies: the quantile of all calibration-map pixels, or of each calibration
#: image's map maximum (then about 1 − q of normal images have any pixel above it: false-positive control)
#: pixel-threshold strategies: a quantile of all calibration-map pixels, or of each map's maximum
PIXEL_ALL, PIXEL_IMAGE_MAX = "pixels", "image_max"
PIXEL_STRATEGIES = (PIXEL_ALL, PIXEL_IMAGE_MAX)


def calibrate_image_threshold(
    values: np.ndarray,
    *,
    strategy: str = "quantile",
    quantile: float = 0.99,
    margin: float = 0.1,
    target_fpr: float = 0.01,
    source_split: str,
    n_images: int,
    code_path: str,
) -> ThresholdCalibration:
    """The image threshold of the normal ``values`` (one score per image) by ``strategy``:

    * ``quantile``: the ``quantile`` of the values (:func:`calibrate_quantile`);
    * ``max_margin``: ``max + margin × (max − median)``: above every calibration image, by a
      margin in the scores' own spread (for lines where a false alarm costs more than a miss);
    * ``target_fpr``: the smallest threshold with at most ``floor(target_fpr × n)`` calibration
      images at or above it (``score >= threshold`` is anomalous), so the calibration FPR is at
      most ``target_fpr``. With fewer than ``1 / target_fpr`` images that is zero false alarms.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"threshold strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if strategy == "quantile":
        return calibrate_quantile(values, quantile=quantile, source_split=source_split, n_images=n_images, code_path=code_path)
    base = calibrate_quantile(values, quantile=1.0, source_split=source_split, n_images=n_images, code_path=code_path)
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if strategy == "max_margin":
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        value = float(v[-1] + margin * (v[-1] - np.median(v)))
        method = f"max + {margin:g} × (max − median) of {source_split} values"
    else:
        if not 0.0 < target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
        allowed = int(np.floor(target_fpr * v.size))
        value = float(np.nextafter(v[v.size - 1 - allowed], np.inf))
        method = (f"target FPR {target_fpr:g} on {source_split} values: at most {allowed} of {v.size} at or above"
                  + (f" (fewer than {int(np.ceil(1 / target_fpr))} images: no false alarm allowed)" if allowed == 0 else ""))
    return ThresholdCalibration(value=value, method=method, quantile=None, source_split=source_split, n_images=base.n_images,
                                n_values=base.n_values, score_summary=base.score_summary, code_path=code_path)


def calibrate_f1_threshold(
    scores: np.ndarray, labels: np.ndarray, *, source_split: str, code_path: str
) -> ThresholdCalibration:
    """The image threshold that maximises F1 on labelled ``scores`` (label 1 = anomalous).

    Over every cut between distinct scores, F1 = 2·TP / (2·TP + FP + FN) of ``score >= t``; ties
    in F1 go to the highest threshold (fewest false alarms). The threshold is the midpoint
    between the lowest flagged score and the highest unflagged one, so it does not sit on a
    validation image. Needs at least one image of each label.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.size != y.size:
        raise ValueError(f"{source_split}: {s.size} scores for {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{source_split} scores contain NaN or inf")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{source_split} labels must be 0 (normal) or 1 (anomalous), got {sorted(set(y.tolist()))}")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"{source_split}: an F1-optimal threshold needs normal and anomalous images, "
                         f"got {y.size - n_pos} normal and {n_pos} anomalous")
    order = np.argsort(-s, kind="stable")
    ranked, ranked_y = s[order], y[order]
    tp = np.cumsum(ranked_y)
    fp = np.cumsum(1 - ranked_y)
    cut = np.r_[ranked[:-1] != ranked[1:], True]  # flagging the first i+1 images is a threshold only here
    f1 = np.where(cut, 2.0 * tp / (tp + fp + n_pos), -1.0)
    best = int(np.argmax(f1))  # first maximum: the highest such threshold
    value = float(ranked[best])
    if best + 1 < ranked.size:
        mid = 0.5 * (ranked[best] + ranked[best + 1])
        value = float(mid) if ranked[best + 1] < mid <= ranked[best] else value
    precision, recall = tp[best] / (tp[best] + fp[best]), tp[best] / n_pos
    method = (f"F1-optimal on {source_split} ({y.size - n_pos} normal, {n_pos} anomalous): F1 {f1[best]:.4f}, "
              f"precision {precision:.4f}, recall {recall:.4f} at this threshold")
    return ThresholdCalibration(value=value, method=method, quantile=None, source_split=source_split, n_images=int(s.size),
                                n_values=int(s.size), score_summary=summarize_values(s), code_path=code_path)


def apply_threshold(score: float, threshold: float | None) -> int | None:
    """1 when ``score >= threshold`` (anomalous), 0 otherwise, ``None`` without a threshold."""
    if threshold is None:
        return None
    return int(score >= threshold)


IMAGE_CODE_PATH = "pyimgano_deploy.postprocess.thresholds.calibrate_thresholds"
PIXEL_CODE_PATH = "pyimgano_deploy.postprocess.thresholds.calibrate_thresholds(pixel)"
MAX_PIXEL_VALUES = 1 << 24  # pixel quantile on at most ~16.8 M values (a strided subsample beyond: PixelSample)


@dataclass
class Thresholds:
    image: ThresholdCalibration
    pixel: ThresholdCalibration | None

    def to_dict(self) -> dict[str, dict | None]:
        return {"image": self.image.to_dict(), "pixel": None if self.pixel is None else self.pixel.to_dict()}


#: how the method of an ``image_max`` pixel threshold ends (:func:`pixel_strategy_of` reads it back)
IMAGE_MAX_METHOD_END = "maps' per-image maxima"


def pixel_strategy_of(calibration: ThresholdCalibration) -> str:
    """The :data:`PIXEL_STRATEGIES` entry a pixel threshold of :func:`calibrate_thresholds` was
    calibrated with, read from the method text that function wrote."""
    return PIXEL_IMAGE_MAX if calibration.method.endswith(IMAGE_MAX_METHOD_END) else PIXEL_ALL


class PixelSample:
    """A regular strided subsample of map pixels, at most ``max_values`` values in all
    (:data:`MAX_PIXEL_VALUES` by default), built one
    map at a time so that memory stays bounded however many maps come (a recalibration on the
    line may score thousands). Each map ``[H, W]`` is kept as ``m[::step, ::step]`` (float32);
    ``step`` starts at 1 and doubles whenever the kept values pass the cap, and what is kept is
    strided again, since ``m[::s, ::s][::2, ::2]`` is ``m[::2s, ::2s]``. So the sample depends only
    on the maps and their order, never on when they came; while there are at most
    ``max_values`` pixels it is all of them, and a map never keeps fewer than its first pixel."""

    def __init__(self, max_values: int | None = None) -> None:
        cap = MAX_PIXEL_VALUES if max_values is None else int(max_values)
        if cap < 1:
            raise ValueError(f"max_values must be at least 1, got {cap}")
        self.max_values = cap
        self.step = 1
        self.maps: list[np.ndarray] = []
        self._kept = 0

    def add(self, anomaly_map: np.ndarray) -> None:
        """Keep ``anomaly_map`` (2-D) at the current step, coarsening every kept map if the cap is passed."""
        m = np.asarray(anomaly_map, dtype=np.float32)
        if m.ndim != 2:
            raise ValueError(f"a pixel sample takes 2-D maps [H, W], got shape {m.shape}")
        kept = np.ascontiguousarray(m[::self.step, ::self.step])
        self.maps.append(kept)
        self._kept += kept.size
        while self._kept > self.max_values and any(k.size > 1 for k in self.maps):
            self.step *= 2
            self.maps = [np.ascontiguousarray(k[::2, ::2]) for k in self.maps]
            self._kept = sum(k.size for k in self.maps)

    def values(self) -> np.ndarray:
        """The kept pixels of every map, in order, as one float32 vector."""
        return np.concatenate([k.ravel() for k in self.maps]) if self.maps else np.empty(0, dtype=np.float32)

    @classmethod
    def of(cls, maps: Sequence[np.ndarray], max_values: int | None = None) -> "PixelSample":
        """The sample of ``maps`` in order (``max_values``: :data:`MAX_PIXEL_VALUES` when None)."""
        sample = cls(max_values)
        for m in maps:
            sample.add(m)
        return sample


def calibrate_thresholds(
    scores: Sequence[float] | np.ndarray,
    maps: Sequence[np.ndarray] | None,
    *,
    quantile: float,
    pixel_quantile: float | None,
    source_split: str = "calibration",
    strategy: str = "quantile",
    margin: float = 0.1,
    target_fpr: float = 0.01,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    validation_split: str = VALIDATION_SPLIT,
    pixel_strategy: str = PIXEL_ALL,
) -> Thresholds:
    """Image threshold of the calibration scores by ``strategy`` (:func:`calibrate_image_threshold`),
    or, for ``f1_validation``, F1-optimal on ``validation`` = (scores, labels) of labelled
    images (:func:`calibrate_f1_threshold`); pixel threshold = ``pixel_quantile`` of all
    calibration-map pixels, or with ``pixel_strategy="image_max"`` of each calibration map's
    maximum (skipped when ``pixel_quantile`` or ``maps`` is None). Both carry provenance naming
    this function."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if strategy == F1_STRATEGY:
        if validation is None:
            raise ValueError(f"threshold strategy {F1_STRATEGY!r} needs labelled validation scores")
        image = calibrate_f1_threshold(validation[0], validation[1], source_split=validation_split, code_path=IMAGE_CODE_PATH)
    else:
        image = calibrate_image_threshold(s, strategy=strategy, quantile=quantile, margin=margin, target_fpr=target_fpr,
                                          source_split=source_split, n_images=int(s.size), code_path=IMAGE_CODE_PATH)
    if pixel_strategy not in PIXEL_STRATEGIES:
        raise ValueError(f"pixel threshold strategy must be one of {list(PIXEL_STRATEGIES)}, got {pixel_strategy!r}")
    pixel = None
    if pixel_quantile is not None and maps is not None and len(maps) > 0:
        if pixel_strategy == PIXEL_IMAGE_MAX:
            maxima = np.array([float(np.max(m)) for m in maps])
            pixel = calibrate_quantile(maxima, quantile=pixel_quantile, source_split=source_split, n_images=len(maps),
                                       code_path=PIXEL_CODE_PATH)
            pixel = replace(pixel, method=f"quantile q={pixel_quantile:g} of the {source_split} {IMAGE_MAX_METHOD_END}")
        else:
            pixel = calibrate_quantile(PixelSample.of(maps).values(), quantile=pixel_quantile, source_split=source_split,
                                       n_images=len(maps), code_path=PIXEL_CODE_PATH)
    return Thresholds(image=image, pixel=pixel)

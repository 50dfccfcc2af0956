"""Threshold calibration with provenance (numpy only).

A threshold is never a bare number: it carries how it was computed, from which split and how
many images, and a summary of the values it came from, so an auditor can reproduce it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

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


def apply_threshold(score: float, threshold: float | None) -> int | None:
    """1 when ``score >= threshold`` (anomalous), 0 otherwise, ``None`` without a threshold."""
    if threshold is None:
        return None
    return int(score >= threshold)

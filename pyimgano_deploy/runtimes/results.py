"""Per-image inference results shared by the eager API and the torch-free runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyimgano_deploy.inputs.loading import InferenceError  # the per-item error record, defined once
from pyimgano_deploy.inputs.source_info import SourceInfo

#: what ``include_maps`` may ask for besides True (= "original") and False: the map at the
#: original image size, or at the model's scale (the one defects are found on)
MAP_RESOLUTIONS = ("original", "model")


def map_resolution(include_maps: bool | str | None) -> str | None:
    """``include_maps`` → ``None`` (no maps), ``"original"`` or ``"model"``; ValueError otherwise."""
    if include_maps is None or include_maps is False:
        return None
    if include_maps is True:
        return "original"
    if include_maps in MAP_RESOLUTIONS:
        return str(include_maps)
    raise ValueError(f"include_maps must be True, False or one of {list(MAP_RESOLUTIONS)}, got {include_maps!r}")


@dataclass
class InferenceResult:
    """Outcome for one input image.

    ``score`` is the raw anomaly score (higher is more anomalous); ``label`` is 1/0 when a
    threshold is known (``score >= threshold``) and ``None`` otherwise. ``anomaly_map`` is a
    float32 ``[H, W]`` array when maps were requested. A failed input has ``error`` set and
    ``score``/``label`` left as ``None`` — never a made-up value. ``source`` says what the input
    was (a file's sha256, encoding and stored pixels; an array's declared format) whenever it
    was read, failed or not; ``None`` when it could not be read at all.
    """

    score: float | None
    label: int | None
    threshold: float | None
    anomaly_map: np.ndarray | None = None
    defects: dict[str, Any] | None = None
    error: InferenceError | None = field(default=None)
    source: SourceInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failure(cls, error: InferenceError, threshold: float | None = None, source: SourceInfo | None = None) -> "InferenceResult":
        return cls(score=None, label=None, threshold=threshold, anomaly_map=None, error=error, source=source)

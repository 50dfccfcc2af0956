"""numpy-first inference on an eager detector: per-item results, never a made-up score."""

from __future__ import annotations

from typing import Callable

import numpy as np

from pyimgano_deploy.inputs import as_image_list
from pyimgano_deploy.inputs.loading import Reading, load_item
from pyimgano_deploy.inputs.source_info import SourceInfo
from pyimgano_deploy.postprocess.thresholds import apply_threshold
from pyimgano_deploy.runtimes.results import InferenceError, InferenceResult

MapPostprocess = Callable[[np.ndarray], np.ndarray]


def infer(
    detector: object,
    images: object,
    *,
    input_format: str | None = None,
    include_maps: bool = False,
    batch_size: int | None = None,
    postprocess: MapPostprocess | None = None,
    u16_max: int | None = None,
) -> list[InferenceResult]:
    """Score every input; a bad input becomes that item's ``error`` and the rest go on.

    ``score`` always (raw), ``label`` when the detector has a threshold, ``anomaly_map``
    (``float32 [H, W]``, model resolution) when ``include_maps``. ``postprocess`` is applied
    to a copy of each returned map (e.g. ``postprocess.maps.normalize_map``) and never
    changes scores. An element that is neither a path nor an array (``None``, say) is that
    item's error; the others are scored. ``u16_max`` is the full-scale value of 16-bit inputs
    (without it they are errors: a bit depth is never guessed).
    """
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None (the detector's own), got {batch_size!r}")
    items = as_image_list(images, input_format=input_format)
    threshold_cal = getattr(detector, "threshold", None)
    threshold = None if threshold_cal is None else float(threshold_cal.value)
    bs = batch_size or int(getattr(detector, "batch_size", 8))
    results: list[InferenceResult | None] = [None] * len(items)
    pending: list[tuple[int, np.ndarray]] = []
    sources: dict[int, SourceInfo | None] = {}

    def flush() -> None:
        if not pending:
            return
        batch = np.stack([p for _, p in pending])
        scores, maps = detector.predict_batch(batch)  # type: ignore[attr-defined]
        for (i, _), s, m in zip(pending, scores, maps):
            if not np.isfinite(s):
                results[i] = InferenceResult.failure(
                    InferenceError("NonFiniteScore", f"the model returned {s} for this input", "inference"), threshold, sources.pop(i)
                )
                continue
            amap = None
            if include_maps:
                amap = postprocess(m.copy()) if postprocess is not None else m.copy()
            results[i] = InferenceResult(score=float(s), label=apply_threshold(float(s), threshold), threshold=threshold,
                                         anomaly_map=amap, source=sources.pop(i))
        pending.clear()

    reading = Reading(input_format=input_format, u16_max=u16_max)
    for i, item in enumerate(items):
        loaded = load_item(item, i, detector.preprocess, reading)  # type: ignore[attr-defined]
        if loaded.error is not None:
            results[i] = InferenceResult.failure(loaded.error, threshold, loaded.source)
        else:
            pending.append((i, loaded.value))  # type: ignore[arg-type]
            sources[i] = loaded.source
        if len(pending) >= bs:
            flush()
    flush()
    return [r for r in results if r is not None]

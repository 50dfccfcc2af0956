"""Building one item's ``InferenceResult`` from engine outputs: the one place for plain and
tiled bundles alike.

The rules: a non-finite score or map is an ``inference`` error (never a made-up score); the
map returned with ``include_maps`` (or ``"original"``) is at the original image size (plain:
the model map resized back, a centre-cropped border filled with the map's minimum; tiled: the
blended full-resolution map); with ``include_maps="model"`` it is the model-scale map (plain:
the engine's map, of the centre crop when there is one; tiled: the blended map at model scale),
what defects are extracted on; defects are extracted on the model-scale map with the pixel threshold
their config asks for (resolved once per config by the library's one resolver); a failure
there is a ``postprocess`` error; the label is ``score >= threshold``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import cv2
import numpy as np

from pyimgano_deploy.bundles.golden import GOLDEN_SPLIT
from pyimgano_deploy.inputs import Preprocess
from pyimgano_deploy.inputs.loading import InferenceError
from pyimgano_deploy.inputs.source_info import SourceInfo
from pyimgano_deploy.postprocess.maps import resize_map
from pyimgano_deploy.postprocess.thresholds import apply_threshold
from pyimgano_deploy.runtimes.results import MAP_RESOLUTIONS, InferenceResult, map_resolution


def map_to_original(preprocess: Preprocess, amap: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
    """A model-resolution map → float32 ``[H, W]`` at the original image size (bilinear).

    With a centre crop, the map is placed where the crop was taken in the resized image and
    the border that was cropped away (never scored) is filled with the map's minimum.
    """
    if preprocess.center_crop is not None:
        top, left, ch, cw = preprocess.crop_box()
        inner = resize_map(amap, (ch, cw))
        canvas = np.full(preprocess.size, float(inner.min()), dtype=np.float32)
        canvas[top : top + ch, left : left + cw] = inner
        amap = canvas
    return resize_map(amap, (int(orig_hw[0]), int(orig_hw[1])))


class ResultBuilder:
    """Turns one scored item into its result, for a bundle's threshold and preprocessing."""

    def __init__(self, bundle: Any, preprocess: Preprocess) -> None:
        self.bundle = bundle
        self.preprocess = preprocess
        calib = bundle.image_threshold
        self.threshold: float | None = None if calib is None else float(calib.value)
        self._pixel_thresholds: dict[Any, tuple[float, dict[str, Any]]] = {}  # defects config -> threshold

    def failure(self, error: InferenceError, source: SourceInfo | None = None) -> InferenceResult:
        return InferenceResult.failure(error, self.threshold, source)

    def finish(
        self,
        name: str,
        score: float,
        orig_hw: tuple[int, int],
        *,
        model_map: Callable[[], np.ndarray],
        full_map: np.ndarray | None,
        include_maps: bool | str,
        defects: Any,
    ) -> tuple[InferenceResult, Any]:
        """The result of one item and its ``DefectsResult`` (``None`` without defects).

        ``model_map()`` gives the model-scale map (called only when defects or model-scale maps
        are asked, or original-size maps without a ``full_map``); ``full_map`` is the
        original-size map when the caller already has one (tiled bundles). ``include_maps``: see
        :func:`map_resolution`.
        """
        maps = map_resolution(include_maps)
        value = float(score)
        if not math.isfinite(value):
            return self.failure(InferenceError("NonFiniteScore", f"engine returned score={value} for {name}", "inference")), None
        out_map, found = None, None
        if maps is not None or defects is not None:
            try:
                amap = model_map() if (defects is not None or full_map is None or maps == "model") else None
                if amap is not None and not np.all(np.isfinite(amap)):
                    return self.failure(InferenceError("NonFiniteAnomalyMap", f"engine returned NaN/inf map values for {name}",
                                                       "inference")), None
                if maps == "model":
                    out_map = amap
                elif maps == "original":
                    out_map = full_map if full_map is not None else map_to_original(self.preprocess, amap, orig_hw)  # type: ignore[arg-type]
                if defects is not None:
                    found = self.extract_defects(amap, orig_hw, defects)  # type: ignore[arg-type]
            except (ValueError, cv2.error) as exc:
                return self.failure(InferenceError(type(exc).__name__, str(exc), "postprocess")), None
        result = InferenceResult(score=value, label=apply_threshold(value, self.threshold), threshold=self.threshold,
                                 anomaly_map=out_map, defects=None if found is None else found.to_record())
        return result, found

    def extract_defects(self, amap: np.ndarray, orig_hw: tuple[int, int], config: Any) -> Any:
        """``DefectsResult`` of one model-scale map (boxes also scaled to ``orig_hw``)."""
        from pyimgano_deploy.postprocess.defects import extract_defects  # noqa: PLC0415 - only when asked

        return extract_defects(amap, config, pixel_threshold=self.defects_threshold(config)[0], image_size=orig_hw)

    def defects_threshold(self, config: Any) -> tuple[float, dict[str, Any]]:
        """``(value, provenance)`` of the pixel threshold ``config`` asks for, resolved once per
        config (``normal_quantile``: of the bundle's golden maps)."""
        from pyimgano_deploy.postprocess.defects import pixel_threshold_for_config  # noqa: PLC0415

        found = self._pixel_thresholds.get(config)
        if found is None:
            maps = self.bundle.load_golden()["anomaly_map"] if config.pixel_threshold_source == "normal_quantile" else None
            found = self._pixel_thresholds[config] = pixel_threshold_for_config(
                config, stored=self.bundle.pixel_threshold, normal_maps=maps, source_split=GOLDEN_SPLIT)
        return found


__all__ = ["ResultBuilder", "map_to_original"]

"""The runtime's tiled path: bundles whose ``tiling`` block is set (``industrial-adapt-highres``).

Same code as the workbench (:mod:`pyimgano_deploy.runtimes.tiling`), so runtime scores equal
the workbench's tiled scores for the same image:

1. preprocessing (per item, optionally in worker threads): the canonical image is cut with
   :func:`tiling.tile_image` at its own resolution and every tile goes through the bundle's
   ``Preprocess`` (resized to the model input) → :class:`TiledInput`;
2. scoring (per chunk of items): the tiles of all items of the chunk are run through the engine
   in ``runtime.batch_size`` engine batches (``Runtime.run_batch`` pads static batches), then
   each item's tile maps are blended (Hann) and reduced with :func:`tiling.blend_and_reduce`.

The map returned with ``include_maps`` is the blended full-resolution map (already at the
image's size). Defects are extracted on that map area-resized to *model scale* (image size ×
model input / tile), the scale at which the workbench calibrated the pixel threshold; their
boxes are also scaled to the image. An engine failure only fails the items that had tiles in
the failing engine batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pyimgano_deploy.bundles.errors import InvalidBundleError
from pyimgano_deploy.inputs import Preprocess
from pyimgano_deploy.postprocess.thresholds import apply_threshold
from pyimgano_deploy.runtimes.errors import EngineRunError
from pyimgano_deploy.runtimes.results import InferenceError, InferenceResult
from pyimgano_deploy.runtimes.tiling import TileOrigin, TilingSpec, blend_and_reduce, tile_image, to_model_scale

if TYPE_CHECKING:
    from pyimgano_deploy.runtimes.runtime import Runtime

#: ``{item index: (result, ms, DefectsResult | None)}`` as ``Runtime._score_chunk`` consumes it.
Done = dict[int, tuple[InferenceResult, float, Any]]


def bundle_tiling(bundle: Any) -> TilingSpec | None:
    """The manifest's tiling spec (``None`` when ``tiling`` is null). ``InvalidBundleError`` when
    the block is malformed, or when it is combined with a centre crop (a tile map must cover
    its tile)."""
    block, source = bundle.tiling_block, "bundle.json"
    if block is None:
        return None
    try:
        spec = TilingSpec.from_dict(block)
    except (TypeError, ValueError) as exc:
        raise InvalidBundleError(f"{source}: tiling: {exc}") from exc
    if bundle.preprocess.center_crop is not None:
        raise InvalidBundleError(
            f"{source}: tiling is set but input.preprocess.center_crop is {list(bundle.preprocess.center_crop)}; "
            "tiled bundles need center_crop null (each tile map must cover its whole tile)"
        )
    return spec


@dataclass
class TiledInput:
    """One image cut into tiles: preprocessed ``uint8 [T, h, w, 3]`` and the tile origins."""

    tiles: np.ndarray
    grid: list[TileOrigin]


class TiledScorer:
    """Prepares and scores items of a tiled bundle for a :class:`~.runtime.Runtime`."""

    def __init__(self, spec: TilingSpec, preprocess: Preprocess) -> None:
        self.spec = spec
        self.preprocess = preprocess

    def prepare(self, canonical: np.ndarray) -> TiledInput:
        """Cut ``canonical`` (HxWx3 uint8 RGB) into tiles and preprocess each one."""
        grid, tiles = tile_image(canonical, self.spec)
        return TiledInput(self.preprocess.batch(tiles), grid)

    def score(self, runtime: "Runtime", ok: list[Any], include_maps: bool, defects: Any) -> Done:
        """Results for the prepared items ``ok`` (``LoadedItem`` with a :class:`TiledInput`)."""
        inputs: list[TiledInput] = [p.value for p in ok]
        counts = np.array([len(t.grid) for t in inputs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        owner = np.repeat(np.arange(len(ok)), counts)
        all_tiles = np.concatenate([t.tiles for t in inputs]) if len(inputs) > 1 else inputs[0].tiles
        tile_maps: list[np.ndarray | None] = [None] * len(all_tiles)
        failed: dict[int, InferenceError] = {}
        engine_ms = np.zeros(len(ok), dtype=np.float64)
        step = runtime.batch_size
        for start in range(0, len(all_tiles), step):
            t0 = time.perf_counter()
            stop = min(start + step, len(all_tiles))
            owners = owner[start:stop]
            try:
                _, maps = runtime.run_batch(all_tiles[start:stop])
            except EngineRunError as exc:
                err = InferenceError(type(exc).__name__, str(exc), "inference")
                for j in np.unique(owners):
                    failed.setdefault(int(j), err)
            else:
                tile_maps[start:stop] = list(maps)
            np.add.at(engine_ms, owners, (time.perf_counter() - t0) * 1e3 / (stop - start))
        done: Done = {}
        for j, p in enumerate(ok):
            t1 = time.perf_counter()
            if j in failed:
                result, found = InferenceResult.failure(failed[j], runtime.threshold), None
            else:
                maps_j = tile_maps[offsets[j] : offsets[j + 1]]
                result, found = self._finish(runtime, p, maps_j, include_maps, defects)  # type: ignore[arg-type]
            done[p.index] = (result, p.ms + float(engine_ms[j]) + (time.perf_counter() - t1) * 1e3, found)
        return done

    def _finish(
        self, runtime: "Runtime", p: Any, tile_maps: list[np.ndarray], include_maps: bool, defects: Any
    ) -> tuple[InferenceResult, Any]:
        """Blend + reduce one item's tile maps; the result and the ``DefectsResult`` if asked."""
        thr = runtime.threshold
        if not all(np.all(np.isfinite(m)) for m in tile_maps):
            err = InferenceError("NonFiniteAnomalyMap", f"engine returned NaN/inf tile map values for {p.input}", "inference")
            return InferenceResult.failure(err, thr), None
        tiled: TiledInput = p.value
        try:
            value, full = blend_and_reduce(tile_maps, tiled.grid, p.orig_hw, self.spec)
            if not math.isfinite(value):
                err = InferenceError("NonFiniteScore", f"tiled score is {value} for {p.input}", "inference")
                return InferenceResult.failure(err, thr), None
            found = None
            if defects is not None:
                model_map = to_model_scale(full, self.preprocess.output_size, self.spec.tile)
                found = runtime._defects(model_map, p.orig_hw, defects)
        except (ValueError, cv2.error) as exc:
            return InferenceResult.failure(InferenceError(type(exc).__name__, str(exc), "postprocess"), thr), None
        result = InferenceResult(
            score=value,
            label=apply_threshold(value, thr),
            threshold=thr,
            anomaly_map=full if include_maps else None,
            defects=None if found is None else found.to_record(),
        )
        return result, found


__all__ = ["TiledInput", "TiledScorer", "bundle_tiling"]

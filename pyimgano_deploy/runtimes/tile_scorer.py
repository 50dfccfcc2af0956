"""The runtime's tiled path: bundles whose ``tiling`` block is set (``industrial-adapt-highres``).

Same code as the workbench (:mod:`pyimgano_deploy.runtimes.tiling`), so runtime scores equal
the workbench's tiled scores for the same image:

1. preprocessing (per item, optionally in worker threads): the canonical image is cut with
   :func:`tiling.tile_image` at its own resolution and every tile goes through the bundle's
   ``Preprocess`` (resized to the model input) → :class:`TiledInput`;
2. scoring (per chunk of items): the tiles of all items of the chunk are run through the
   batch-scoring callable it is given, in engine batches, then each item's tile maps are
   blended (Hann) and reduced with :func:`tiling.blend_and_reduce`. The runtime builds the
   results (:mod:`.finishing`), as for plain bundles.

The map returned with ``include_maps`` is the blended full-resolution map (already at the
image's size). Defects are extracted on that map area-resized to *model scale* (image size ×
model input / tile, :meth:`TiledScorer.model_map`), the scale at which the workbench
calibrated the pixel threshold. An engine failure only fails the items that had tiles in the
failing engine batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from pyimgano_deploy.bundles.errors import InvalidBundleError
from pyimgano_deploy.inputs import Preprocess
from pyimgano_deploy.inputs.loading import InferenceError
from pyimgano_deploy.runtimes.errors import EngineRunError
from pyimgano_deploy.runtimes.tiling import TileOrigin, TilingSpec, blend_and_reduce, tile_image, to_model_scale


@dataclass
class Scored:
    """One tiled item after the engine: its reduced ``score`` and full-resolution map, or
    ``error``; ``engine_ms`` is its share of the engine time."""

    score: float
    full_map: np.ndarray | None
    error: InferenceError | None
    engine_ms: float


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

    def score(self, run_batch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], ok: list[Any],
              batch_size: int) -> dict[int, Scored]:
        """Engine outputs of the loaded items ``ok`` (``LoadedItem`` holding a :class:`TiledInput`):
        the tiles of all items in ``batch_size`` engine batches through ``run_batch``, then each
        item's tile maps blended and reduced. An engine failure fails only the items that had
        tiles in the failing batch."""
        inputs: list[TiledInput] = [p.value for p in ok]
        counts = np.array([len(t.grid) for t in inputs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        owner = np.repeat(np.arange(len(ok)), counts)
        all_tiles = np.concatenate([t.tiles for t in inputs]) if len(inputs) > 1 else inputs[0].tiles
        tile_maps: list[np.ndarray | None] = [None] * len(all_tiles)
        failed: dict[int, InferenceError] = {}
        engine_ms = np.zeros(len(ok), dtype=np.float64)
        for start in range(0, len(all_tiles), batch_size):
            t0 = time.perf_counter()
            stop = min(start + batch_size, len(all_tiles))
            owners = owner[start:stop]
            try:
                _, maps = run_batch(all_tiles[start:stop])
            except EngineRunError as exc:
                err = InferenceError(type(exc).__name__, str(exc), "inference")
                for j in np.unique(owners):
                    failed.setdefault(int(j), err)
            else:
                tile_maps[start:stop] = list(maps)
            np.add.at(engine_ms, owners, (time.perf_counter() - t0) * 1e3 / (stop - start))
        out: dict[int, Scored] = {}
        for j, p in enumerate(ok):
            error = failed.get(j)
            value, full = math.nan, None
            if error is None:
                value, full, error = self._blend(p, tile_maps[offsets[j] : offsets[j + 1]])  # type: ignore[arg-type]
            out[p.index] = Scored(value, full, error, float(engine_ms[j]))
        return out

    def _blend(self, p: Any, tile_maps: list[np.ndarray]) -> tuple[float, np.ndarray | None, InferenceError | None]:
        """Blend + reduce one item's tile maps → (score, full-resolution map, or the error)."""
        if not all(np.all(np.isfinite(m)) for m in tile_maps):
            return math.nan, None, InferenceError("NonFiniteAnomalyMap", f"engine returned NaN/inf tile map values for {p.input}", "inference")
        try:
            value, full = blend_and_reduce(tile_maps, p.value.grid, p.orig_hw, self.spec)
        except (ValueError, cv2.error) as exc:
            return math.nan, None, InferenceError(type(exc).__name__, str(exc), "postprocess")
        return float(value), full, None

    def model_map(self, full_map: np.ndarray) -> np.ndarray:
        """The full-resolution map at *model scale*, where the workbench calibrated the pixel threshold."""
        return to_model_scale(full_map, self.preprocess.output_size, self.spec.tile)


__all__ = ["Scored", "TiledInput", "TiledScorer", "bundle_tiling"]

"""Tiling for large images (2K/4K): grid, cut, Hann-blend tile maps, reduce to one score.

numpy (+ OpenCV for resizing tile maps) only — no torch — so training (workbench) and the
torch-free runtime share exactly this code, and fit and inference see the same scale.

The flow for one image ``[H, W, 3]``:

1. ``tile_grid(H, W, tile, stride)`` → tile origins ``(y, x)``; along each axis the origins
   are ``0, stride, 2·stride, …`` plus a last origin ``L − tile`` flush with the far edge, so
   every pixel (last row and column included) is covered. An axis shorter than ``tile``
   gets one origin 0 and the tile is padded (symmetric reflection) to ``tile`` px, so the
   model always sees tiles at the same scale.
2. ``cut_tiles(image, grid, tile)`` → ``tile × tile`` crops.
3. the model scores each tile (its own preprocessing resizes the tile to the model input).
4. ``blend_tile_maps`` resizes each tile map (model resolution) back to ``tile × tile``
   (bilinear), weights it with a 2-D Hann window and accumulates; the full-image map is the
   weighted sum divided by the summed weights (a constant map stays that constant).
5. ``reduce_score(map, "max" | "topk_mean", topk)`` → the image score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from pyimgano_deploy.checks import is_int, unknown_keys, unknown_keys_message

BLENDS = ("hann",)
SCORE_REDUCTIONS = ("max", "topk_mean")
_KEYS = ("tile", "stride", "blend", "score_reduction", "topk")

TileOrigin = tuple[int, int]  # (y, x) of the tile's top-left corner in image coordinates


@dataclass(frozen=True)
class TilingSpec:
    """Tiling settings as they travel in ``infer_config.json`` (``tiling`` block)."""

    tile: int = 512
    stride: int = 384
    blend: str = "hann"
    score_reduction: str = "topk_mean"
    topk: int = 100

    def __post_init__(self) -> None:
        if not is_int(self.tile) or self.tile < 16:
            raise ValueError(f"tiling 'tile' must be an integer >= 16 (pixels), got {self.tile!r}")
        if not is_int(self.stride) or not 1 <= self.stride <= self.tile:
            raise ValueError(f"tiling 'stride' must be an integer in [1, tile={self.tile}] (no gaps), got {self.stride!r}")
        if self.blend not in BLENDS:
            raise ValueError(f"tiling 'blend' must be one of {list(BLENDS)}, got {self.blend!r}")
        if self.score_reduction not in SCORE_REDUCTIONS:
            raise ValueError(f"tiling 'score_reduction' must be one of {list(SCORE_REDUCTIONS)}, got {self.score_reduction!r}")
        if not is_int(self.topk) or self.topk < 1:
            raise ValueError(f"tiling 'topk' must be an integer >= 1 (pixels), got {self.topk!r}")
        object.__setattr__(self, "tile", int(self.tile))
        object.__setattr__(self, "stride", int(self.stride))
        object.__setattr__(self, "topk", int(self.topk))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TilingSpec":
        if not isinstance(data, Mapping):
            raise ValueError(f"tiling must be a mapping with keys {list(_KEYS)}, got {type(data).__name__}")
        unknown = unknown_keys(data, _KEYS)
        if unknown:
            raise ValueError(unknown_keys_message("tiling", unknown, _KEYS))
        return cls(**dict(data))


def _axis_origins(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)
    return sorted(set(origins))


def tile_grid(height: int, width: int, tile: int, stride: int) -> list[TileOrigin]:
    """Row-major tile origins ``(y, x)`` covering the whole ``height × width`` image."""
    if not (is_int(height) and is_int(width)) or height < 1 or width < 1:
        raise ValueError(f"image size must be positive integers, got {height!r} x {width!r}")
    TilingSpec(tile=tile, stride=stride)  # validates tile and stride
    return [(y, x) for y in _axis_origins(int(height), tile, stride) for x in _axis_origins(int(width), tile, stride)]


def cut_tiles(image: np.ndarray, grid: Sequence[TileOrigin], tile: int) -> list[np.ndarray]:
    """``tile × tile`` crops of ``image`` (HxW or HxWxC) at ``grid``; an image smaller than the
    tile along an axis is padded by symmetric reflection first (the padding is discarded when
    blending). Crops are C-contiguous copies."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"cut_tiles: expected an HxW or HxWxC image, got shape {arr.shape}")
    h, w = arr.shape[:2]
    pad_h, pad_w = max(0, tile - h), max(0, tile - w)
    if pad_h or pad_w:
        pad = [(0, pad_h), (0, pad_w)] + ([(0, 0)] if arr.ndim == 3 else [])
        arr = np.pad(arr, pad, mode="symmetric")
    tiles = []
    for y, x in grid:
        crop = arr[y : y + tile, x : x + tile]
        if crop.shape[:2] != (tile, tile):
            raise ValueError(f"cut_tiles: tile at (y={y}, x={x}) leaves the {h}x{w} image; build the grid with tile_grid")
        tiles.append(np.ascontiguousarray(crop))
    return tiles


def hann_window(size: int) -> np.ndarray:
    """2-D ``size × size`` Hann window, float32, strictly positive (half-sample shifted:
    ``w[i] = sin²(π (i + ½) / size)``), so blending never divides by zero at image edges."""
    if not is_int(size) or size < 1:
        raise ValueError(f"hann_window: size must be a positive integer, got {size!r}")
    i = np.arange(size, dtype=np.float64)
    w1 = np.sin(np.pi * (i + 0.5) / size) ** 2
    return np.outer(w1, w1).astype(np.float32)


def blend_tile_maps(
    tile_maps: Sequence[np.ndarray],
    grid: Sequence[TileOrigin],
    image_hw: tuple[int, int],
    tile: int,
    blend: str = "hann",
) -> np.ndarray:
    """Blend per-tile anomaly maps (any resolution, e.g. the model's) into one ``float32 [H, W]``
    map of the full image: each map is resized bilinearly to ``tile × tile``, weighted by the
    window and accumulated; the result is the weighted mean at every pixel."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    if len(tile_maps) != len(grid):
        raise ValueError(f"got {len(tile_maps)} tile maps for {len(grid)} tiles")
    h, w = int(image_hw[0]), int(image_hw[1])
    acc = np.zeros((h, w), dtype=np.float32)
    weight = np.zeros((h, w), dtype=np.float32)
    window = hann_window(tile)
    for i, ((y, x), m) in enumerate(zip(grid, tile_maps)):
        tm = np.asarray(m, dtype=np.float32)
        if tm.ndim != 2:
            raise ValueError(f"tile map #{i} must be 2-D, got shape {tm.shape}")
        if tm.shape != (tile, tile):
            tm = cv2.resize(np.ascontiguousarray(tm), (tile, tile), interpolation=cv2.INTER_LINEAR)
        hh, ww = min(tile, h - y), min(tile, w - x)
        if hh <= 0 or ww <= 0:
            raise ValueError(f"tile #{i} at (y={y}, x={x}) lies outside the {h}x{w} image")
        win = window[:hh, :ww]
        acc[y : y + hh, x : x + ww] += tm[:hh, :ww] * win
        weight[y : y + hh, x : x + ww] += win
    if np.any(weight <= 0):
        raise ValueError("the tiles do not cover the whole image; build the grid with tile_grid")
    return acc / weight


def reduce_score(anomaly_map: np.ndarray, reduction: str = "max", topk: int = 100) -> float:
    """Image score from a map: its maximum, or the mean of its ``topk`` largest values."""
    m = np.asarray(anomaly_map, dtype=np.float32).ravel()
    if m.size == 0:
        raise ValueError("reduce_score: empty anomaly map")
    if reduction == "max":
        return float(m.max())
    if reduction == "topk_mean":
        if not is_int(topk) or topk < 1:
            raise ValueError(f"reduce_score: topk must be an integer >= 1, got {topk!r}")
        k = min(int(topk), m.size)
        return float(np.partition(m, m.size - k)[m.size - k :].astype(np.float64).mean())
    raise ValueError(f"reduce_score: reduction must be one of {list(SCORE_REDUCTIONS)}, got {reduction!r}")


TilePredictor = Callable[[list[np.ndarray]], np.ndarray]


def tile_image(image: np.ndarray, spec: TilingSpec) -> tuple[list[TileOrigin], list[np.ndarray]]:
    """First half of :func:`score_tiled`: the grid of ``image`` (HxWx3) and its tiles."""
    h, w = image.shape[:2]
    grid = tile_grid(h, w, spec.tile, spec.stride)
    return grid, cut_tiles(image, grid, spec.tile)


def blend_and_reduce(
    tile_maps: Sequence[np.ndarray], grid: Sequence[TileOrigin], image_hw: tuple[int, int], spec: TilingSpec
) -> tuple[float, np.ndarray]:
    """Second half of :func:`score_tiled`: blend the tile maps (one per ``grid`` entry) into the
    full-image map and reduce it: ``(score, float32 [H, W])``."""
    if len(tile_maps) != len(grid):
        raise ValueError(f"got {len(tile_maps)} tile maps for {len(grid)} tiles")
    full = blend_tile_maps(list(tile_maps), grid, image_hw, spec.tile, spec.blend)
    return reduce_score(full, spec.score_reduction, spec.topk), full


def score_tiled(image: np.ndarray, spec: TilingSpec, predict_maps: TilePredictor) -> tuple[float, np.ndarray]:
    """Tile ``image`` (HxWx3), get one map per tile from ``predict_maps(tiles) -> [N, h, w]``,
    blend, reduce: ``(score, full-image map float32 [H, W])``. The runtime runs the same two
    halves (:func:`tile_image`, :func:`blend_and_reduce`) with tiles of several images batched."""
    grid, tiles = tile_image(image, spec)
    maps = predict_maps(tiles)
    if len(maps) != len(grid):
        raise ValueError(f"predict_maps returned {len(maps)} maps for {len(grid)} tiles")
    return blend_and_reduce(list(maps), grid, image.shape[:2], spec)


def model_scale_shape(image_hw: tuple[int, int], input_hw: tuple[int, int], tile: int) -> tuple[int, int]:
    """(h, w) of a tiled map at *model scale*: image size × model input / tile (the scale the
    workbench calibrates the pixel threshold at; same formula as ``workbench.scoring``)."""
    return (max(1, round(image_hw[0] * input_hw[0] / tile)), max(1, round(image_hw[1] * input_hw[1] / tile)))


def to_model_scale(full_map: np.ndarray, input_hw: tuple[int, int], tile: int) -> np.ndarray:
    """A full-resolution tiled map area-resized (INTER_AREA) to model scale, float32."""
    arr = np.ascontiguousarray(full_map, dtype=np.float32)
    h, w = model_scale_shape(arr.shape[:2], input_hw, tile)
    if (h, w) == arr.shape[:2]:
        return arr
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA)


__all__ = [
    "BLENDS",
    "SCORE_REDUCTIONS",
    "TileOrigin",
    "TilingSpec",
    "blend_and_reduce",
    "blend_tile_maps",
    "cut_tiles",
    "hann_window",
    "model_scale_shape",
    "reduce_score",
    "score_tiled",
    "tile_grid",
    "tile_image",
    "to_model_scale",
]

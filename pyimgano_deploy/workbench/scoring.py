"""Scoring images with a fitted detector for calibration and evaluation, plain or tiled.

Plain: images go through the detector's own preprocessing; maps are at model resolution.
Tiled (``industrial-adapt-highres``): every image is scored tile by tile with
``runtimes.tiling`` (the same code as the runtime); the score is reduced from the
full-resolution blended map, and the map kept for calibration/metrics is that blended map
area-resized to *model scale* (image size × model input / tile), so pixel metrics compare
maps at model resolution in both modes. Masks are resized to the map with nearest neighbour
(plus the detector's centre crop in plain mode).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from pyimgano_deploy.datasets import Sample
from pyimgano_deploy.inputs import read_image, read_mask
from pyimgano_deploy.runtimes.tiling import TilingSpec, cut_tiles, score_tiled, tile_grid, to_model_scale


@dataclass
class ScoredSplit:
    """Scores ``[N]`` and maps (each ``[h, w]`` float32, model scale) of one split, in order."""

    samples: list[Sample]
    scores: np.ndarray
    maps: list[np.ndarray]


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (None when disabled; tqdm also stays silent when stderr is not a
    terminal, like the detectors' own feature-extraction bar)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False, disable=None)


def _tick(bar: Any, n: int = 1) -> None:
    if bar is not None:
        bar.update(n)


class SplitScorer:
    """Scores samples with ``detector`` (plain, or tiled when ``tiling`` is given); ``u16_max`` is
    the full-scale value of the set's 16-bit files (``dataset.u16_max``; None: they are refused)."""

    def __init__(self, detector: Any, tiling: TilingSpec | None, *, progress: bool, u16_max: int | None = None) -> None:
        self.detector = detector
        self.tiling = tiling
        self.progress = progress
        self.u16_max = u16_max

    # ------------------------------------------------------------------ fitting inputs
    def fit_inputs(self, samples: Sequence[Sample]) -> list[Any]:
        """What ``detector.fit`` receives: the paths, or (tiled) every tile of every image as an
        ``rgb_u8_hwc`` array."""
        if self.tiling is None:
            return [s.path for s in samples]
        spec = self.tiling
        tiles: list[np.ndarray] = []
        bar = progress_bar(len(samples), "cutting tiles", self.progress)
        try:
            for s in samples:
                image = read_image(s.path, u16_max=self.u16_max)
                tiles.extend(cut_tiles(image, tile_grid(image.shape[0], image.shape[1], spec.tile, spec.stride), spec.tile))
                _tick(bar)
        finally:
            if bar is not None:
                bar.close()
        return tiles

    @property
    def fit_input_format(self) -> str | None:
        return None if self.tiling is None else "rgb_u8_hwc"

    @property
    def fit_u16_max(self) -> int | None:
        """The ``u16_max`` of :meth:`fit_inputs` (tiles are already 8-bit arrays)."""
        return self.u16_max if self.tiling is None else None

    # ------------------------------------------------------------------ scoring
    def score(self, samples: Sequence[Sample], desc: str) -> ScoredSplit:
        scores: list[float] = []
        maps: list[np.ndarray] = []
        bar = progress_bar(len(samples), desc, self.progress)
        try:
            source = self._plain(samples) if self.tiling is None else self._tiled(samples)
            for n, s, m in source:
                scores.extend(s)
                maps.extend(m)
                _tick(bar, n)
        finally:
            if bar is not None:
                bar.close()
        arr = np.asarray(scores, dtype=np.float64)
        bad = [samples[i].path for i in np.flatnonzero(~np.isfinite(arr))[:3]]
        if bad:
            raise ValueError(f"the detector returned a non-finite score for {bad}")
        return ScoredSplit(samples=list(samples), scores=arr, maps=maps)

    def _plain(self, samples: Sequence[Sample]) -> Iterator[tuple[int, list[float], list[np.ndarray]]]:
        from pyimgano_deploy.models.detectors.batches import iter_batches

        det = self.detector
        for idx, batch in iter_batches([s.path for s in samples], det.preprocess, input_format=None, batch_size=det.batch_size,
                                       u16_max=self.u16_max):
            s, m = det.predict_batch(batch)
            yield len(idx), [float(v) for v in s], [np.ascontiguousarray(x, dtype=np.float32) for x in m]

    def _predict_tile_maps(self, tiles: list[np.ndarray]) -> np.ndarray:
        det = self.detector
        out = []
        for start in range(0, len(tiles), det.batch_size):
            _, maps = det.predict_batch(det.preprocess.batch(tiles[start : start + det.batch_size]))
            out.append(maps)
        return np.concatenate(out)

    def _tiled(self, samples: Sequence[Sample]) -> Iterator[tuple[int, list[float], list[np.ndarray]]]:
        spec = self.tiling
        assert spec is not None
        for s in samples:
            image = read_image(s.path, u16_max=self.u16_max)
            score, full = score_tiled(image, spec, self._predict_tile_maps)
            yield 1, [score], [self.to_model_scale(full)]

    def to_model_scale(self, full_map: np.ndarray) -> np.ndarray:
        """A tiled run's full-resolution map at model scale (INTER_AREA)."""
        assert self.tiling is not None
        return to_model_scale(full_map, self.detector.input_size, self.tiling.tile)

    # ------------------------------------------------------------------ masks
    def mask_for(self, sample: Sample, map_shape: tuple[int, int]) -> np.ndarray | None:
        """The ground-truth mask of ``sample`` on the grid of its map (``None``: no mask file)."""
        if sample.mask_path is None:
            return None
        mask = read_mask(sample.mask_path)
        if self.tiling is not None:
            return cv2.resize(mask, (map_shape[1], map_shape[0]), interpolation=cv2.INTER_NEAREST)
        pre = self.detector.preprocess
        h, w = pre.size
        resized = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) if mask.shape != (h, w) else mask
        if pre.center_crop is not None:
            top, left, ch, cw = pre.crop_box()
            resized = resized[top : top + ch, left : left + cw]
        return np.ascontiguousarray(resized)

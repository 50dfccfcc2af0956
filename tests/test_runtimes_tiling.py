"""runtimes/tiling.py: grid coverage, cutting, Hann blending, score reduction (numpy only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pyimgano_deploy.runtimes.tiling import (
    TilingSpec,
    blend_tile_maps,
    cut_tiles,
    hann_window,
    reduce_score,
    score_tiled,
    tile_grid,
)


def _coverage(h: int, w: int, tile: int, stride: int) -> np.ndarray:
    cov = np.zeros((h, w), dtype=int)
    for y, x in tile_grid(h, w, tile, stride):
        cov[y : y + tile, x : x + tile] += 1
    return cov


@pytest.mark.parametrize("h,w,tile,stride", [(2048, 1536, 512, 384), (1000, 700, 512, 384), (256, 256, 128, 96), (513, 512, 512, 384), (300, 129, 128, 128)])
def test_grid_covers_every_pixel_including_last_row_and_column(h: int, w: int, tile: int, stride: int) -> None:
    grid = tile_grid(h, w, tile, stride)
    assert (_coverage(h, w, tile, stride) >= 1).all()
    assert all(0 <= y <= max(0, h - tile) and 0 <= x <= max(0, w - tile) for y, x in grid)
    assert max(y for y, _ in grid) + tile == h and max(x for _, x in grid) + tile == w  # flush with the far edges
    assert len(grid) == len(set(grid))


def test_grid_positions_follow_the_stride() -> None:
    assert tile_grid(256, 256, 128, 96) == [(y, x) for y in (0, 96, 128) for x in (0, 96, 128)]
    assert tile_grid(512, 512, 512, 384) == [(0, 0)]


def test_tile_bigger_than_image_gives_one_padded_tile() -> None:
    image = np.arange(60 * 40 * 3, dtype=np.uint8).reshape(60, 40, 3)
    grid = tile_grid(60, 40, 128, 96)
    assert grid == [(0, 0)]
    (tile,) = cut_tiles(image, grid, 128)
    assert tile.shape == (128, 128, 3) and tile.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(tile[:60, :40], image)  # original pixels in place, padding after
    full = blend_tile_maps([np.full((32, 32), 2.5, np.float32)], grid, (60, 40), 128)
    assert full.shape == (60, 40)
    np.testing.assert_allclose(full, 2.5, rtol=1e-6)


def test_cut_tiles_match_the_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    grid = tile_grid(300, 200, 128, 96)
    for (y, x), t in zip(grid, cut_tiles(image, grid, 128)):
        np.testing.assert_array_equal(t, image[y : y + 128, x : x + 128])


def test_constant_maps_blend_to_the_same_constant() -> None:
    grid = tile_grid(700, 900, 256, 160)
    maps = [np.full((64, 64), 3.25, np.float32) for _ in grid]
    full = blend_tile_maps(maps, grid, (700, 900), 256)
    assert full.shape == (700, 900) and full.dtype == np.float32
    np.testing.assert_allclose(full, 3.25, rtol=1e-5)


def test_blend_places_a_hot_tile_where_it_belongs() -> None:
    grid = tile_grid(256, 256, 128, 128)  # 4 disjoint tiles
    maps = [np.zeros((32, 32), np.float32) for _ in grid]
    maps[3][:] = 1.0  # bottom-right tile
    full = blend_tile_maps(maps, grid, (256, 256), 128)
    assert full[128:, 128:].min() == pytest.approx(1.0) and full[:128, :].max() == 0.0 and full[:, :128].max() == 0.0


def test_hann_window_is_positive_and_symmetric() -> None:
    w = hann_window(16)
    assert w.shape == (16, 16) and (w > 0).all() and w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w[8, 8] > w[0, 0]


def test_reduce_score() -> None:
    m = np.zeros((10, 10), np.float32)
    m[0, :4] = [4, 3, 2, 1]
    assert reduce_score(m, "max") == 4.0
    assert reduce_score(m, "topk_mean", 2) == pytest.approx(3.5)
    assert reduce_score(m, "topk_mean", 1000) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="reduction"):
        reduce_score(m, "mean")


def test_spec_validation_names_the_key() -> None:
    assert TilingSpec.from_dict({"tile": 128, "stride": 96}).to_dict() == {
        "tile": 128, "stride": 96, "blend": "hann", "score_reduction": "topk_mean", "topk": 100}
    for bad, key in (({"stride": 600}, "stride"), ({"tile": 8}, "tile"), ({"blend": "mean"}, "blend"),
                     ({"score_reduction": "sum"}, "score_reduction"), ({"topk": 0}, "topk"), ({"tiles": 1}, "unknown")):
        with pytest.raises(ValueError, match=key):
            TilingSpec.from_dict(bad)


def test_score_tiled_end_to_end() -> None:
    image = np.zeros((300, 260, 3), np.uint8)
    image[200:220, 100:120] = 255
    spec = TilingSpec(tile=128, stride=96, score_reduction="max")

    def predict(tiles: list[np.ndarray]) -> np.ndarray:  # "model": mean brightness at 32x32
        import cv2

        return np.stack([cv2.resize(t.mean(axis=2).astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA) for t in tiles])

    score, full = score_tiled(image, spec, predict)
    assert full.shape == (300, 260)
    y, x = np.unravel_index(int(full.argmax()), full.shape)
    assert 190 <= y <= 230 and 90 <= x <= 130
    assert score == pytest.approx(float(full.max()))


def test_tiling_module_does_not_import_torch() -> None:
    code = "import sys, pyimgano_deploy.runtimes.tiling; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

"""Mask PNG, RLE, overlays and the JSON record of a defects result."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pyimgano_deploy.postprocess import (
    DefectsConfig,
    extract_defects,
    mask_to_rle,
    render_overlay,
    rle_to_mask,
    save_mask_png,
    save_overlay,
)


def _result(shape=(32, 32)):
    m = np.zeros(shape, np.float32)
    m[4:10, 6:14] = 1.0
    m[20:28, 18:26] = 0.8
    return m, extract_defects(m, DefectsConfig(), pixel_threshold=0.5, image_size=(64, 64))


def test_rle_round_trip_and_layout() -> None:
    mask = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)
    rle = mask_to_rle(mask)
    assert rle == {"size": [2, 3], "counts": [2, 1, 1, 2]}  # column-major: 0,0 | 1,0 | 1,1
    assert rle_to_mask(rle).tolist() == mask.tolist()
    first_set = np.array([[1, 0], [1, 1]], np.uint8)
    assert mask_to_rle(first_set)["counts"] == [0, 2, 1, 1]
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (5, 7), (33, 17)]:
        for p in (0.0, 0.3, 1.0):
            m = (rng.random(shape) < p).astype(np.uint8)
            r = json.loads(json.dumps(mask_to_rle(m)))
            assert sum(r["counts"]) == m.size
            back = rle_to_mask(r)
            assert back.dtype == np.uint8 and np.array_equal(back, m)


def test_rle_errors() -> None:
    with pytest.raises(ValueError, match="sum to 5"):
        rle_to_mask({"size": [2, 3], "counts": [2, 3]})
    with pytest.raises(ValueError, match="RLE must be"):
        rle_to_mask({"counts": [6]})
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.zeros((2, 2, 2), np.uint8))


def test_save_mask_png_non_ascii_path(tmp_path) -> None:
    _, res = _result()
    path = save_mask_png(res.mask, tmp_path / "défauts" / "masque_é.png")
    assert path.is_file()
    back = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2
    assert set(np.unique(back)) == {0, 255}
    assert np.array_equal(back // 255, res.mask)


def test_record_is_json_serialisable(tmp_path) -> None:
    _, res = _result()
    rec = res.to_record(mask_path=tmp_path / "m.png", include_rle=True)
    text = json.dumps(rec)
    back = json.loads(text)
    assert list(back) == ["mask", "rle", "pixel_threshold", "regions"]
    assert back["mask"] == str(tmp_path / "m.png") and back["pixel_threshold"] == 0.5
    assert np.array_equal(rle_to_mask(back["rle"]), res.mask)
    assert [r["id"] for r in back["regions"]] == [0, 1]
    assert back["regions"][0]["bbox_xyxy_image"] == [12.0, 8.0, 28.0, 20.0]
    assert set(back["regions"][0]) == {"id", "bbox_xyxy", "bbox_xyxy_image", "area", "centroid", "score_max",
                                       "score_mean", "fill_ratio", "aspect_ratio", "solidity", "merged_from"}
    plain = res.to_record()
    assert plain["mask"] is None and "rle" not in plain


def test_render_overlay_draws_boxes_in_image_space() -> None:
    m, res = _result()
    image = np.zeros((64, 64, 3), np.uint8)
    before = m.copy()
    out = render_overlay(image, m, res, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert np.array_equal(m, before)
    # Region 0 covers map box (6, 4, 14, 10) → image box (12, 8, 28, 20), drawn inclusive to (27, 19).
    white = np.array([255, 255, 255], np.uint8)
    for y, x in [(8, 12), (8, 20), (19, 27), (14, 12), (14, 27)]:
        assert np.array_equal(out[y, x], white), (y, x, out[y, x])
    assert not np.array_equal(out[14, 20], white)  # inside the box: heat map, not box colour
    heat_only = render_overlay(image, m, None, alpha=0.5)
    assert not np.all(heat_only == 255, axis=-1).any()
    assert np.array_equal(render_overlay(image + 7, m, None, alpha=0.0), image + 7)
    fixed = render_overlay(image, m, None, alpha=1.0, value_range=(0.0, 2.0))
    assert fixed.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="uint8"):
        render_overlay(image.astype(np.float32), m, res)
    with pytest.raises(ValueError, match="alpha"):
        render_overlay(image, m, res, alpha=2.0)


def test_save_overlay(tmp_path) -> None:
    m, res = _result()
    image = np.full((64, 64, 3), 40, np.uint8)
    path = save_overlay(image, m, res, tmp_path / "ovl_ü.png")
    bgr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == (64, 64, 3)
    expected = render_overlay(image, m, res)
    assert np.array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), expected)

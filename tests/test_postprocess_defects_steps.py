"""Each step of the defects pipeline removes what it should and keeps what it should."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from image_files import THR, blank, run
from pyimgano_deploy.postprocess import DefectsConfig, extract_defects
from pyimgano_deploy.postprocess.defects.steps import _median_numpy, fill_holes, roi_to_pixels, smooth_map



def test_threshold_is_inclusive_and_map_untouched() -> None:
    m = blank()
    m[10:14, 10:14] = THR  # exactly at the threshold: defective (score >= threshold)
    m[30:34, 30:34] = np.nextafter(np.float32(THR), np.float32(0))
    before = m.copy()
    res = run(m)
    assert [r.bbox_xyxy for r in res.regions] == [(10, 10, 14, 14)]
    assert res.mask.dtype == np.uint8 and set(np.unique(res.mask)) <= {0, 1}
    assert res.pixel_threshold == THR and res.hysteresis_low is None
    assert np.array_equal(m, before)


def test_roi_gating() -> None:
    m = blank()
    m[5:10, 5:10] = 1.0  # outside ROI
    m[40:46, 40:46] = 1.0  # inside
    res = run(m, roi_xyxy_norm=(0.5, 0.5, 1.0, 1.0))
    assert [r.bbox_xyxy for r in res.regions] == [(40, 40, 46, 46)]
    assert res.mask[:32, :].sum() == 0 and res.mask[:, :32].sum() == 0
    # A blob straddling the ROI edge is cut at the edge.
    m2 = blank()
    m2[28:36, 28:36] = 1.0
    res2 = run(m2, roi_xyxy_norm=(0.5, 0.5, 1.0, 1.0))
    assert [r.bbox_xyxy for r in res2.regions] == [(32, 32, 36, 36)]
    assert roi_to_pixels((0.1, 0.1, 0.55, 0.9), (10, 20)) == (2, 1, 11, 9)
    assert roi_to_pixels(None, (10, 20)) == (0, 0, 20, 10)


def test_border_ignore() -> None:
    m = blank()
    m[0:3, 20:26] = 1.0  # entirely inside the 4-px border band
    m[30:40, 0:10] = 1.0  # touches the left edge: only its border part goes
    m[20:26, 20:26] = 1.0  # interior
    res = run(m, border_ignore_px=4)
    boxes = sorted(r.bbox_xyxy for r in res.regions)
    assert boxes == [(4, 30, 10, 40), (20, 20, 26, 26)]
    assert res.mask[:4].sum() == res.mask[-4:].sum() == res.mask[:, :4].sum() == res.mask[:, -4:].sum() == 0


@pytest.mark.parametrize("smoothing, extra", [("median", {"smoothing_ksize": 3}),
                                              ("median", {"smoothing_ksize": 7}),
                                              ("gaussian", {"smoothing_sigma": 1.5}),
                                              ("box", {"smoothing_ksize": 3})])
def test_smoothing_removes_a_spike_and_keeps_a_blob(smoothing: str, extra: dict) -> None:
    m = blank()
    m[10, 10] = 1.0  # single hot pixel (noise)
    m[30:46, 30:46] = 1.0  # real blob
    assert len(run(m).regions) == 2
    res = run(m, smoothing=smoothing, **extra)
    assert len(res.regions) == 1
    x0, y0, x1, y1 = res.regions[0].bbox_xyxy
    assert 28 <= x0 <= 32 and 44 <= x1 <= 48 and 28 <= y0 <= 32 and 44 <= y1 <= 48
    assert res.mask[10, 10] == 0
    assert res.regions[0].score_max == 1.0  # scores come from the raw map


def test_median_numpy_matches_opencv() -> None:
    m = np.random.default_rng(1).random((23, 17)).astype(np.float32)
    for k in (3, 5):
        assert np.array_equal(_median_numpy(m, k), cv2.medianBlur(m, k))
    out7 = smooth_map(m, "median", ksize=7)
    assert out7.shape == m.shape and out7.dtype == np.float32
    assert out7[11, 8] == pytest.approx(float(np.median(m[8:15, 5:12])))


def test_hysteresis_keeps_connected_low_and_drops_isolated_low() -> None:
    m = blank()
    m[10:14, 10:14] = 0.9  # seed (>= high 0.8)
    m[10:14, 14:30] = 0.6  # low, connected to the seed
    m[40:50, 40:50] = 0.6  # low, isolated
    m[55:58, 5:30] = 0.3  # below low
    c = dict(pixel_threshold_source="bundle")
    plain = extract_defects(m, DefectsConfig(**c), pixel_threshold=0.8)
    assert [r.bbox_xyxy for r in plain.regions] == [(10, 10, 14, 14)]
    hyst = extract_defects(m, DefectsConfig(hysteresis_low=0.5, **c), pixel_threshold=0.8)
    assert [r.bbox_xyxy for r in hyst.regions] == [(10, 10, 30, 14)]
    assert hyst.mask[40:50, 40:50].sum() == 0 and hyst.hysteresis_low == 0.5
    ratio = extract_defects(m, DefectsConfig(hysteresis_low_ratio=0.7, **c), pixel_threshold=0.8)
    assert np.array_equal(ratio.mask, hyst.mask) and ratio.hysteresis_low == pytest.approx(0.56)
    # Connection counts diagonally (8-connectivity).
    d = blank()
    d[10:13, 10:13] = 0.9
    d[13:16, 13:16] = 0.6
    diag = extract_defects(d, DefectsConfig(hysteresis_low=0.5, **c), pixel_threshold=0.8)
    assert [r.bbox_xyxy for r in diag.regions] == [(10, 10, 16, 16)]


def test_open_removes_specks_keeps_blobs() -> None:
    m = blank()
    m[20:28, 20:28] = 1.0
    for y, x in [(5, 5), (50, 10), (10, 50), (40, 40)]:
        m[y, x] = 1.0
    m[55, 30:33] = 1.0  # 1-px thin line
    assert len(run(m).regions) == 6
    res = run(m, open_ksize=3)
    assert [r.bbox_xyxy for r in res.regions] == [(20, 20, 28, 28)]
    assert res.regions[0].area == 64


def test_close_fills_gaps() -> None:
    m = blank()
    m[20:28, 10:20] = 1.0
    m[20:28, 21:31] = 1.0  # 1-px gap at column 20
    assert len(run(m).regions) == 2
    res = run(m, close_ksize=3)
    assert [r.bbox_xyxy for r in res.regions] == [(10, 20, 31, 28)]
    assert res.mask[20:28, 20].all() and res.regions[0].area == 8 * 21


def test_close_does_not_grow_blobs_at_the_map_edge() -> None:
    m = blank()
    m[0:6, 0:6] = 1.0
    m[0:6, 7:12] = 1.0
    res = run(m, close_ksize=3)
    assert res.mask.sum() == 6 * 12


def test_fill_holes() -> None:
    m = blank()
    m[10:20, 10:20] = 1.0
    m[13:17, 13:17] = 0.0  # enclosed hole
    m[30:40, 30:40] = 1.0
    m[33:37, 33:40] = 0.0  # notch open to the right: not a hole
    assert run(m).mask[13:17, 13:17].sum() == 0
    res = run(m, fill_holes=True)
    assert res.mask[13:17, 13:17].all()
    assert sorted(r.area for r in res.regions) == [100 - 4 * 7, 100]
    assert res.mask[33:37, 33:40].sum() == 0
    # A diamond of 8-connected pixels encloses its inside (background is 4-connected).
    ys = [1, 2, 3, 4, 5, 4, 3, 2]
    xs = [3, 2, 1, 2, 3, 4, 5, 4]
    diamond = np.zeros((7, 7), np.uint8)
    diamond[ys, xs] = 1
    filled = fill_holes(diamond)
    assert filled[3, 3] == filled[2, 3] == filled[3, 2] == 1 and filled.sum() == 8 + 5

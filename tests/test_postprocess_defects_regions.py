"""Region filters, deterministic order and ids, merging (list and mask), max_regions."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from image_files import THR, blank, cfg, run
from pyimgano_deploy.postprocess import DEFECTS_PRESETS, Region, extract_defects



def boxes(res) -> list[tuple[int, int, int, int]]:
    return [r.bbox_xyxy for r in res.regions]


def assert_mask_matches_regions(res) -> None:
    n, labels = cv2.connectedComponents(res.mask, connectivity=8)
    assert n - 1 == len(res.regions)
    assert int(res.mask.sum()) == sum(r.area for r in res.regions)
    for r in res.regions:
        x0, y0, x1, y1 = r.bbox_xyxy
        assert res.mask[y0:y1, x0:x1].sum() >= r.area


def test_region_measurements() -> None:
    m = blank()
    m[10:14, 20:28] = 0.75
    m[11, 21] = 2.0
    res = run(m, )
    (r,) = res.regions
    assert r.id == 0 and r.bbox_xyxy == (20, 10, 28, 14) and r.area == 32
    assert r.centroid == pytest.approx((23.5, 11.5))
    assert r.score_max == 2.0 and r.score_mean == pytest.approx((31 * 0.75 + 2.0) / 32)
    assert r.fill_ratio == 1.0 and r.aspect_ratio == 2.0 and r.solidity == pytest.approx(1.0)
    assert r.merged_from == [0] and r.bbox_xyxy_image == (20.0, 10.0, 28.0, 14.0)
    scaled = extract_defects(m, cfg(), pixel_threshold=None, image_size=(128, 256))
    assert scaled.regions[0].bbox_xyxy_image == (80.0, 20.0, 112.0, 28.0)
    assert Region.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_filter_min_area() -> None:
    m = blank()
    m[5:8, 5:8] = 1.0  # 9 px
    m[20:25, 20:25] = 1.0  # 25 px
    res = run(m, min_area=16)
    assert boxes(res) == [(20, 20, 25, 25)] and res.mask[5:8, 5:8].sum() == 0


def test_filter_scores_absolute_and_ratio() -> None:
    m = blank()
    m[5:10, 5:10] = 0.6  # weak: max 0.6, mean 0.6
    m[20:25, 20:25] = 0.6
    m[22, 22] = 3.0  # one strong peak: max 3, mean ~0.70
    m[40:45, 40:45] = 1.2  # uniformly strong: max 1.2, mean 1.2
    assert len(run(m).regions) == 3
    assert sorted(boxes(run(m, min_score_max=1.0))) == [(20, 20, 25, 25), (40, 40, 45, 45)]
    assert sorted(boxes(run(m, min_score_max_ratio=2.0))) == [(20, 20, 25, 25), (40, 40, 45, 45)]
    assert boxes(run(m, min_score_mean=1.0)) == [(40, 40, 45, 45)]
    res = run(m, min_score_mean_ratio=2.0)
    assert boxes(res) == [(40, 40, 45, 45)] and res.mask.sum() == 25


def test_filter_fill_ratio_aspect_ratio_solidity() -> None:
    m = blank()
    m[5:15, 5:15] = 1.0  # square: fill 1, aspect 1, solidity 1
    m[30:40, 5:8] = 1.0  # L shape (vertical bar + foot): low fill and solidity
    m[37:40, 8:20] = 1.0
    m[50:52, 20:60] = 1.0  # long thin bar: aspect 20, fill 1, solidity 1
    res_all = run(m)
    assert len(res_all.regions) == 3
    by_box = {r.bbox_xyxy: r for r in res_all.regions}
    assert by_box[(5, 30, 20, 40)].fill_ratio == pytest.approx(66 / 150)
    assert by_box[(5, 30, 20, 40)].solidity < 0.7
    assert by_box[(20, 50, 60, 52)].aspect_ratio == 20.0
    assert sorted(boxes(run(m, min_fill_ratio=0.8))) == [(5, 5, 15, 15), (20, 50, 60, 52)]
    assert sorted(boxes(run(m, max_aspect_ratio=5.0))) == [(5, 5, 15, 15), (5, 30, 20, 40)]
    res = run(m, min_solidity=0.9)
    assert sorted(boxes(res)) == [(5, 5, 15, 15), (20, 50, 60, 52)]
    assert res.mask[30:40, 5:20].sum() == 0


def _draw(blobs: list[tuple[int, int, int, int, float]], shape=(64, 64)) -> np.ndarray:
    m = np.zeros(shape, np.float32)
    for y0, x0, h, w, v in blobs:
        m[y0:y0 + h, x0:x0 + w] = v
    return m


BLOBS = [
    (5, 5, 4, 4, 1.0),  # ties with the next on score and area: y then x decide
    (5, 30, 4, 4, 1.0),
    (30, 5, 6, 6, 1.0),  # same score, larger area → before the 4x4 ones
    (30, 30, 3, 3, 2.0),  # highest score → first
    (50, 50, 5, 5, 0.8),
]


def test_order_and_ids() -> None:
    res = run(_draw(BLOBS))
    assert boxes(res) == [(30, 30, 33, 33), (5, 30, 11, 36), (5, 5, 9, 9), (30, 5, 34, 9), (50, 50, 55, 55)]
    assert [r.id for r in res.regions] == [0, 1, 2, 3, 4]


def test_order_stable_across_runs_and_blob_permutations() -> None:
    config = DEFECTS_PRESETS["fp40"].with_overrides(merge_gap_px=2)
    reference = None
    for perm in itertools.islice(itertools.permutations(BLOBS), 0, 120, 7):
        big = [(y * 2 + 4, x * 2 + 4, h * 2, w * 2, v) for y, x, h, w, v in perm]
        rec = extract_defects(_draw(big, (140, 140)), config, pixel_threshold=THR).to_record(include_rle=True)
        text = json.dumps(rec, sort_keys=True)
        if reference is None:
            reference = text
            assert len(rec["regions"]) == 5
        assert text == reference


def test_merge_bridges_mask_and_records_merged_from() -> None:
    m = blank()
    m[20:30, 10:20] = 1.0
    m[22:28, 25:32] = 0.9  # 5 background columns (20..24) between the blobs
    m[50:55, 50:55] = 0.7  # far away
    apart = run(m, merge_gap_px=4)
    assert len(apart.regions) == 3
    res = run(m, merge_gap_px=5)
    assert len(res.regions) == 2
    merged, far = res.regions
    assert merged.bbox_xyxy == (10, 20, 32, 30) and merged.merged_from == [0, 1]
    assert far.merged_from == [2] and far.bbox_xyxy == (50, 50, 55, 55)
    assert res.mask[25, 20:25].all()  # the gap is bridged in the mask
    assert merged.area > 100 + 42  # bridge pixels count in the area
    assert_mask_matches_regions(res)



def test_core_ratio_reports_each_region_by_the_pixels_near_its_peak() -> None:
    m = blank()
    m[10:40, 10:40] = 0.6  # a broad low plateau above the threshold (0.5) ...
    m[20:23, 30:33] = 1.5  # ... with a small strong peak inside it
    m[50:54, 50:54] = 0.8  # a second, separate region
    whole = run(m)
    core = run(m, core_ratio=0.5)
    assert len(core.regions) == len(whole.regions) == 2
    strong, weak = core.regions
    assert strong.bbox_xyxy == (30, 20, 33, 23) and strong.area == 9 and strong.score_max == 1.5  # >= 0.5 + 0.5 * 1.0
    assert weak.bbox_xyxy == (50, 50, 54, 54)  # a flat region is its own core
    assert (core.mask <= whole.mask).all()
    assert_mask_matches_regions(core)


def test_core_ratio_keeps_one_region_when_its_core_splits() -> None:
    m = blank()
    m[10:20, 10:40] = 0.6
    m[14, 12] = m[14, 37] = 1.0  # two equal peaks: the first in raster order wins
    (r,) = run(m, core_ratio=0.9).regions
    assert r.bbox_xyxy == (12, 14, 13, 15) and r.area == 1
    assert len(run(m, core_ratio=0.2).regions) == 1  # at a low ratio the core spans both peaks again


def test_a_region_peaking_below_the_threshold_keeps_its_peak_as_core() -> None:
    from pyimgano_deploy.postprocess.defects.steps import region_cores

    level = blank()
    level[5:15, 5:15] = 0.3
    level[9, 9] = 0.4  # below the high threshold, as opening or closing can leave a region
    mask = (level > 0).astype(np.uint8)
    core = region_cores(mask, level, THR, 0.5)
    assert core.sum() == 1 and core[9, 9] == 1


def test_merge_is_transitive_and_handles_region_inside_a_hole() -> None:
    m = blank()
    for x0 in (4, 14, 24, 34):  # chain: 4 px gaps
        m[10:16, x0:x0 + 6] = 1.0
    m[40:60, 40:60] = 1.0
    m[43:57, 43:57] = 0.0
    m[48:52, 48:52] = 1.0  # island inside the ring's hole, 5 background px away
    assert len(run(m, merge_gap_px=4).regions) == 3
    res = run(m, merge_gap_px=5)
    assert len(res.regions) == 2
    assert sorted(r.merged_from for r in res.regions) == [[0, 1, 2, 3], [4, 5]]
    assert_mask_matches_regions(res)


def test_max_regions_truncates_list_and_mask() -> None:
    m = _draw(BLOBS)
    res = run(m, max_regions=2)
    assert boxes(res) == [(30, 30, 33, 33), (5, 30, 11, 36)]
    assert res.mask.sum() == 9 + 36 and res.mask[5:9, 5:9].sum() == 0
    assert_mask_matches_regions(res)


def test_fp40_on_noisy_maps_keeps_mask_and_regions_consistent() -> None:
    rng = np.random.default_rng(7)
    fp40 = DEFECTS_PRESETS["fp40"]
    for seed in range(3):
        noise = cv2.GaussianBlur(rng.random((96, 96)).astype(np.float32), (0, 0), 2.0)
        m = noise.copy()
        m[20 + seed:40, 30:50] += 0.5
        m[60:64, 70:90] += 0.4
        res = extract_defects(m, fp40, pixel_threshold=float(np.quantile(noise, 0.99)), image_size=(192, 192))
        assert 1 <= len(res.regions) <= fp40.max_regions
        assert all(r.area >= 16 and r.score_max >= res.pixel_threshold for r in res.regions)
        assert [r.id for r in res.regions] == list(range(len(res.regions)))
        assert res.mask[:4].sum() == 0 and res.mask[:, -4:].sum() == 0
        assert_mask_matches_regions(res)
        keys = [(-r.score_max, -r.area, r.bbox_xyxy[1], r.bbox_xyxy[0]) for r in res.regions]
        assert keys == sorted(keys)


def test_empty_map_gives_no_regions() -> None:
    res = extract_defects(blank(), DEFECTS_PRESETS["fp40"], pixel_threshold=0.5)
    assert res.regions == [] and res.mask.sum() == 0
    assert res.to_record() == {"mask": None, "pixel_threshold": 0.5, "regions": []}


def test_bad_inputs_are_reported() -> None:
    m = blank()
    with pytest.raises(ValueError, match="image_size must be"):
        extract_defects(m, cfg(), pixel_threshold=None, image_size=(64, None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        extract_defects(np.zeros((2, 8, 8), np.float32), cfg(), pixel_threshold=None)
    bad = blank()
    bad[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        extract_defects(bad, cfg(), pixel_threshold=None)
    with pytest.raises(ValueError, match="DefectsConfig"):
        extract_defects(m, {"min_area": 3}, pixel_threshold=0.5)  # type: ignore[arg-type]

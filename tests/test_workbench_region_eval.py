"""Region-level precision / recall (workbench.region_eval) on hand-made masks."""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyimgano_deploy.workbench import region_eval as re_
from pyimgano_deploy.workbench.region_eval import (
    ImageRegionMatch,
    aggregate,
    evaluate_regions,
    label_components,
    match_regions,
    resize_nearest,
)


def _box(mask: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask[y0:y1, x0:x1] = 1
    return mask


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_module_stays_torch_free() -> None:
    tree = ast.parse(Path(re_.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= {"__future__", "dataclasses", "typing", "numpy", "cv2", "pyimgano_deploy"}, names


def test_label_components_matches_opencv_8_connectivity_in_raster_order() -> None:
    rng = np.random.default_rng(0)
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        labels, n = label_components(m)
        k, ref = cv2.connectedComponents(m, connectivity=8, ltype=cv2.CV_32S)
        assert n == k - 1 and _same_partition(labels, ref)
        firsts = [int(np.flatnonzero(labels.ravel() == i)[0]) for i in range(1, n + 1)]
        assert firsts == sorted(firsts)
    diag = np.eye(5, dtype=bool)  # diagonal pixels touch in 8-connectivity
    assert label_components(diag)[1] == 1
    assert label_components(np.zeros((3, 4)))[1] == 0
    u = np.zeros((6, 7), np.uint8)  # a U: joined only at the bottom row
    u[:, 0] = u[:, 6] = u[5, :] = 1
    assert label_components(u)[1] == 1


def test_resize_nearest_equals_opencv() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 70, 4))
        m = (rng.random((h, w)) < 0.3).astype(np.uint8)
        assert np.array_equal(resize_nearest(m, (oh, ow)), cv2.resize(m, (ow, oh), interpolation=cv2.INTER_NEAREST))
    with pytest.raises(ValueError, match="shape"):
        resize_nearest(np.ones((4, 4)), (0, 3))


def test_match_tp_fp_and_detected_components() -> None:
    gt = np.zeros((40, 40), np.uint8)
    _box(gt, 0, 0, 10, 10)  # G1: 100 px
    _box(gt, 20, 20, 24, 24)  # G2: 16 px
    _box(gt, 30, 0, 34, 4)  # G3: never touched
    pred = np.zeros_like(gt)
    _box(pred, 5, 0, 15, 10)  # 100 px, 50 on G1 -> TP, detects G1
    _box(pred, 23, 23, 33, 33)  # 100 px, 1 on G2 (1 %) -> FP; G2 not detected
    _box(pred, 0, 30, 5, 35)  # no overlap -> FP
    m = match_regions(pred, gt)
    assert m == ImageRegionMatch(n_pred=3, n_tp=1, n_fp=2, n_gt=3, n_gt_detected=1, normal=False)
    # a lower overlap rule turns the 1 % region into a TP that detects G2
    assert match_regions(pred, gt, min_overlap=0.01).n_gt_detected == 2


def test_overlap_boundary_is_inclusive_and_one_region_can_detect_several_components() -> None:
    gt = np.zeros((10, 20), bool)
    gt[0, 0] = True
    pred = np.zeros((10, 20), bool)
    pred[0, 0:10] = True  # 10 px, exactly 1 px (10 %) on the GT
    assert match_regions(pred, gt).n_tp == 1
    pred[0, 10] = True  # 11 px, 1 on the GT (9 %)
    assert match_regions(pred, gt).n_tp == 0
    gt2 = np.zeros((10, 20), bool)
    gt2[2, 2] = gt2[2, 8] = gt2[2, 14] = True  # three 1-px components
    big = np.zeros((10, 20), bool)
    big[2, 0:10] = True  # covers two of them, 20 % of its area on the GT
    assert match_regions(big, gt2) == ImageRegionMatch(1, 1, 0, 3, 2, False)


def test_normal_images_count_every_region_as_false_positive() -> None:
    pred = _box(_box(np.zeros((16, 16), np.uint8), 0, 0, 2, 2), 8, 8, 12, 12)
    assert match_regions(pred, None) == ImageRegionMatch(2, 0, 2, 0, 0, True)
    assert match_regions(pred, np.zeros((16, 16))) == match_regions(pred, None)
    assert match_regions(np.zeros((16, 16)), None) == ImageRegionMatch(0, 0, 0, 0, 0, True)


def test_evaluate_regions_aggregates() -> None:
    gt = _box(np.zeros((20, 20), np.uint8), 0, 0, 6, 6)
    hit = _box(np.zeros((20, 20), np.uint8), 0, 0, 5, 5)
    miss = _box(np.zeros((20, 20), np.uint8), 12, 12, 15, 15)
    normal_fp = _box(_box(np.zeros((20, 20), np.uint8), 0, 0, 2, 2), 10, 10, 12, 12)
    res = evaluate_regions([hit, miss, normal_fp, np.zeros((20, 20))], [gt, gt, None, None])
    assert (res.n_images, res.n_normal_images, res.n_pred, res.n_tp, res.n_fp) == (4, 2, 4, 1, 3)
    assert (res.n_gt, res.n_gt_detected) == (2, 1)
    assert res.precision == pytest.approx(0.25) and res.recall == pytest.approx(0.5)
    assert res.f1 == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert res.fp_regions_per_normal_image == pytest.approx(1.0) and res.normal_images_with_regions == 1
    assert res.fp_regions_per_anomalous_image == pytest.approx(0.5)
    d = res.to_dict()
    assert d["min_overlap"] == 0.1 and "10%" in d["rule"]


def test_undefined_ratios_are_none() -> None:
    empty = aggregate([])
    assert empty.precision is None and empty.recall is None and empty.f1 is None
    assert empty.fp_regions_per_normal_image is None
    only_normals = evaluate_regions([np.zeros((4, 4))], [None])
    assert only_normals.precision is None and only_normals.recall is None
    assert only_normals.fp_regions_per_normal_image == 0.0
    missed = evaluate_regions([np.zeros((4, 4))], [np.ones((4, 4))])
    assert missed.precision is None and missed.recall == 0.0 and missed.f1 is None


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="image #1: pred_mask shape"):
        evaluate_regions([np.zeros((4, 4)), np.zeros((4, 4))], [None, np.zeros((5, 4))])
    with pytest.raises(ValueError, match="2 predicted masks but 1"):
        evaluate_regions([np.zeros((4, 4))] * 2, [None])
    with pytest.raises(ValueError, match="min_overlap"):
        match_regions(np.zeros((4, 4)), None, min_overlap=0.0)
    with pytest.raises(ValueError, match="2-D"):
        match_regions(np.zeros((4, 4, 1)), None)
    with pytest.raises(ValueError, match="dtype"):
        match_regions(np.zeros((4, 4), dtype=object), None)


def test_label_components_keeps_background_zero_when_a_corner_is_set() -> None:
    m = np.zeros((5, 5), np.uint8)
    m[0, 0] = m[2, 2] = m[4, 4] = 1
    m[2, 2] = 0
    m[3, 1] = 1
    labels, n = label_components(m)
    assert n == 3 and labels[1, 1] == 0 and (labels[0, 0], labels[3, 1], labels[4, 4]) == (1, 2, 3)

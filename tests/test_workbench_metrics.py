"""Workbench metrics: cross-checked against scikit-learn (dev dependency) and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyimgano_deploy.workbench.metrics import (
    aupro,
    average_precision,
    binary_confusion,
    evaluate_image_level,
    f1_at_threshold,
    image_auroc,
    pixel_auroc,
    roc_curve,
)

sk_metrics = pytest.importorskip("sklearn.metrics")


def _random_tied(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1  # both classes
    levels = int(rng.integers(2, 12))  # few distinct values → many ties, across classes too
    s = rng.integers(0, levels, n) / levels + 0.3 * y * rng.random(n).round(1)
    return y, s


def test_auroc_and_ap_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(60):
        y, s = _random_tied(rng, int(rng.integers(2, 200)))
        assert abs(image_auroc(y, s) - sk_metrics.roc_auc_score(y, s)) < 1e-9
        assert abs(average_precision(y, s) - sk_metrics.average_precision_score(y, s)) < 1e-9


def test_auroc_and_ap_match_sklearn_continuous_scores() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y
    assert abs(image_auroc(y, s) - sk_metrics.roc_auc_score(y, s)) < 1e-9
    assert abs(average_precision(y, s) - sk_metrics.average_precision_score(y, s)) < 1e-9


def test_roc_curve_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    y, s = _random_tied(rng, 80)
    fpr, tpr, thr = roc_curve(y, s)
    fpr_sk, tpr_sk, thr_sk = sk_metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, fpr_sk)
    np.testing.assert_allclose(tpr, tpr_sk)
    assert math.isinf(thr[0]) and np.allclose(thr[1:], thr_sk[1:])
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1


def test_single_class_gives_nan_not_crash() -> None:
    for y in ([0, 0, 0], [1, 1, 1]):
        assert math.isnan(image_auroc(y, [0.1, 0.2, 0.3]))
        assert math.isnan(average_precision(y, [0.1, 0.2, 0.3]))
    fpr, tpr, _ = roc_curve([0, 0, 0], [0.1, 0.2, 0.3])
    assert np.isnan(tpr).all() and fpr[-1] == 1.0
    res = evaluate_image_level([0, 0, 0], [0.1, 0.2, 0.9], threshold=0.5)
    assert math.isnan(res["auroc"]) and math.isnan(res["ap"]) and math.isnan(res["recall"])
    assert res["confusion"] == {"tp": 0, "fp": 1, "tn": 2, "fn": 0}
    assert res["precision"] == 0.0 and res["f1"] == 0.0


def test_confusion_and_f1_counts() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.5, 0.7, 0.2, 0.9, 0.5, 0.3])
    # score >= 0.5 → predicted anomalous: indices 1, 2, 4, 5
    assert binary_confusion(y, s >= 0.5) == {"tp": 2, "fp": 2, "tn": 2, "fn": 1}
    r = f1_at_threshold(y, s, 0.5)
    assert r["confusion"] == {"tp": 2, "fp": 2, "tn": 2, "fn": 1}
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(sk_metrics.f1_score(y, s >= 0.5))
    # nothing predicted positive: precision undefined, F1 = 0 (there are positives)
    r = f1_at_threshold(y, s, 2.0)
    assert math.isnan(r["precision"]) and r["recall"] == 0.0 and r["f1"] == 0.0
    full = evaluate_image_level(y, s, 0.5)
    assert {"auroc", "ap", "f1", "precision", "recall", "confusion"} <= set(full)
    assert full["n_normal"] == 4 and full["n_anomalous"] == 3


def test_invalid_image_level_inputs() -> None:
    with pytest.raises(ValueError, match="y_true has 2 entries but scores has 3"):
        image_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="only 0"):
        image_auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        average_precision([0, 1], [0.1, float("nan")])


def _pixel_data(rng: np.random.Generator, n: int = 5, size: int = 24) -> tuple[list, list]:
    masks, maps = [], []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        if i % 2 == 0:
            y0, x0 = rng.integers(0, size - 6, 2)
            m[y0 : y0 + 5, x0 : x0 + 4] = 1
        amap = np.round(rng.random((size, size)) * 20) / 20 + 0.4 * m  # ties
        masks.append(m)
        maps.append(amap.astype(np.float32))
    return masks, maps


def test_pixel_auroc_matches_sklearn_on_flattened() -> None:
    masks, maps = _pixel_data(np.random.default_rng(3))
    ref = sk_metrics.roc_auc_score(np.concatenate([m.ravel() for m in masks]),
                                   np.concatenate([a.ravel() for a in maps]))
    assert abs(pixel_auroc(masks, maps) - ref) < 1e-9
    # the memory-bounded histogram path agrees closely
    assert abs(pixel_auroc(masks, maps, max_exact_pixels=0) - ref) < 1e-3


def test_pixel_metrics_degenerate_and_invalid() -> None:
    maps = [np.random.default_rng(4).random((8, 8))]
    assert math.isnan(pixel_auroc([np.zeros((8, 8))], maps))
    assert math.isnan(aupro([np.zeros((8, 8))], maps))
    assert math.isnan(pixel_auroc([None], maps))  # None = normal image
    with pytest.raises(ValueError, match="image 1: mask shape"):
        pixel_auroc([np.zeros((8, 8)), np.zeros((8, 7))], [maps[0], maps[0]])
    with pytest.raises(ValueError, match="image 0: mask must contain only 0 and 1"):
        aupro([np.full((8, 8), 255)], maps)
    with pytest.raises(ValueError, match="2 masks but 1"):
        aupro([None, None], maps)


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 1  # one 2x2 region (4 pixels); 12 normal pixels
    amap = np.full((4, 4), 0.1)
    amap[0, 0], amap[0, 1], amap[1, 0], amap[1, 1] = 0.9, 0.8, 0.5, 0.4
    amap[3, 3] = 0.7
    amap[2, 3] = amap[3, 2] = 0.6
    return mask, amap


def test_aupro_hand_worked_4x4() -> None:
    # Region pixels: 0.9, 0.8, 0.5, 0.4. Normal pixels: 0.7, 0.6, 0.6 and nine at 0.1.
    # Curve (FPR, PRO) walking the thresholds downwards (PRO = overlap of the single region):
    #   t > 0.9 : (0, 0)        t = 0.9 : (0, 1/4)      t = 0.8 : (0, 2/4)
    #   t = 0.7 : (1/12, 2/4)   t = 0.6 : (3/12, 2/4)   t = 0.5 : (3/12, 3/4)
    #   t = 0.4 : (3/12, 1)     t = 0.1 : (1, 1)
    # Area up to FPR 0.3 (vertical steps add nothing; PRO at 0.3, interpolated on the segment
    # (3/12, 1) → (1, 1), is 1):  0.5 * 3/12 + 1 * (0.3 - 3/12) = 0.125 + 0.05 = 0.175.
    # AUPRO = 0.175 / 0.3 = 7/12.
    mask, amap = _hand_case()
    assert aupro([mask], [amap], fpr_limit=0.3) == pytest.approx(7 / 12, abs=1e-12)
    # limit 0.2 lands between (1/12, .5) and (3/12, .5): area 0.5 * 0.2 → AUPRO 0.5
    assert aupro([mask], [amap], fpr_limit=0.2) == pytest.approx(0.5, abs=1e-12)
    # full range: 0.5 * 3/12 + 1 * 9/12 = 0.875
    assert aupro([mask], [amap], fpr_limit=1.0) == pytest.approx(0.875, abs=1e-12)


def test_aupro_hand_worked_tie_interpolation() -> None:
    # Region values 0.9, 0.5, 0.5, 0.2; normal: three at 0.5, nine at 0.1.
    # t = 0.9 : (0, 1/4);  t = 0.5 : (3/12, 3/4) — a diagonal segment because region and normal
    # pixels tie;  t = 0.2 : (3/12, 1);  t = 0.1 : (1, 1).
    # limit 0.125 is half-way along the diagonal: PRO(0.125) = 0.25 + 0.5 * 0.5 = 0.5;
    # area = (0.25 + 0.5) / 2 * 0.125 = 0.046875 → AUPRO = 0.375.
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 1
    amap = np.full((4, 4), 0.1)
    amap[0, 0], amap[0, 1], amap[1, 0], amap[1, 1] = 0.9, 0.5, 0.5, 0.2
    amap[3, 3] = amap[2, 3] = amap[3, 2] = 0.5
    assert aupro([mask], [amap], fpr_limit=0.125) == pytest.approx(0.375, abs=1e-12)


def test_aupro_regions_are_8_connected_and_averaged() -> None:
    # Diagonal pixels (0,0),(1,1) form ONE region under 8-connectivity; (3,3) is a second region.
    # t = 0.9: region A overlap 1/2, region B 1/1 → PRO = 0.75 (4-connectivity would give 2/3).
    # Two of the 13 normal pixels score 0.5 → (2/13, 0.75); t = 0.1 → (2/13, 1); t = 0 → (1, 1).
    # Area to 0.3: 0.75 * 2/13 + 1 * (0.3 - 2/13); AUPRO = that / 0.3.
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = 1
    amap = np.zeros((4, 4))
    amap[0, 0], amap[1, 1], amap[3, 3] = 0.9, 0.1, 0.9
    amap[0, 3] = amap[3, 0] = 0.5
    expected = (0.75 * 2 / 13 + (0.3 - 2 / 13)) / 0.3
    assert aupro([mask], [amap]) == pytest.approx(expected, abs=1e-12)


def test_aupro_perfect_map_and_binned_mode() -> None:
    masks, maps = _pixel_data(np.random.default_rng(5), n=4)
    perfect = [m.astype(np.float32) for m in masks]
    assert aupro(masks, perfect) == pytest.approx(1.0)
    assert aupro(masks, perfect, num_thresholds=64) == pytest.approx(1.0)
    exact = aupro(masks, maps)
    assert 0.0 < exact < 1.0
    # map values are on a 1/20 grid (+0.4): 1401 evenly spaced thresholds hit every value
    assert aupro(masks, maps, num_thresholds=1401) == pytest.approx(exact, abs=1e-9)
    assert abs(aupro(masks, maps, num_thresholds=200) - exact) < 0.02


def test_aupro_matches_brute_force_reference() -> None:
    cv2 = pytest.importorskip("cv2")
    masks, maps = _pixel_data(np.random.default_rng(6), n=3, size=16)
    regions = []
    for i, m in enumerate(masks):
        n, lab = cv2.connectedComponents(m, connectivity=8)
        regions += [(i, lab == k) for k in range(1, n)]
    normal = np.concatenate([(m == 0).ravel() for m in masks])
    allv = np.concatenate([a.ravel() for a in maps])
    pts = [(0.0, 0.0)]
    for t in np.unique(allv)[::-1]:
        fpr = float(np.sum(allv[normal] >= t)) / normal.sum()
        pro = float(np.mean([np.mean(maps[i][r] >= t) for i, r in regions]))
        pts.append((fpr, pro))
    x, y = np.array(pts).T
    lim = 0.3
    k = np.searchsorted(x, lim, side="right")
    y_lim = y[k - 1] + (y[k] - y[k - 1]) * (lim - x[k - 1]) / (x[k] - x[k - 1])
    xs, ys = np.r_[x[:k], lim], np.r_[y[:k], y_lim]
    ref = float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(xs))) / lim
    assert aupro(masks, maps, fpr_limit=lim) == pytest.approx(ref, abs=1e-9)

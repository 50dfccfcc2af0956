"""The parity gate's rule (gate rule 2): score scale per precision and boundary images."""

from __future__ import annotations

import numpy as np

from pyimgano_deploy.bundles.parity import GATE_RULE, compare_outputs, gate_tolerances

MAPS = np.zeros((4, 2, 2))


def _gate(eager, exported, threshold, precision="fp16"):
    return compare_outputs(np.array(eager), MAPS, np.array(exported), MAPS, threshold=threshold, precision=precision)


def test_fp16_score_bound_is_relative_to_small_thresholds() -> None:
    tol = gate_tolerances("fp16", np.array([0.010, 0.012, 0.015, 0.016]), MAPS, threshold=0.0177)
    assert np.isclose(tol["score_abs"], 2e-2 * 0.0177) and tol["rule"] == GATE_RULE


def test_fp16_score_bound_uses_the_score_range_when_it_exceeds_the_threshold() -> None:
    tol = gate_tolerances("fp16", np.array([-2.0, 0.0, 1.0, 2.0]), MAPS, threshold=0.1)
    assert np.isclose(tol["score_abs"], 2e-2 * 4.0)


def test_fp32_score_bound_keeps_max_one_threshold() -> None:
    assert np.isclose(gate_tolerances("fp32", np.array([0.01, 0.02]), MAPS[:2], threshold=0.0177)["score_abs"], 1e-4)


def test_small_scores_moved_by_more_than_two_percent_fail_fp16() -> None:
    # rule 1 (max(1, |thr|)) accepted a 0.005 error on scores whose whole range is 0.006
    r = _gate([0.010, 0.012, 0.014, 0.016], [0.015, 0.012, 0.014, 0.016], threshold=0.0177)
    assert not r.passed and r.labels_identical


def test_label_flip_inside_the_score_band_is_a_boundary_image() -> None:
    thr = 0.0177
    r = _gate([0.010, 0.012, 0.014, thr + 1e-5], [0.010, 0.012, 0.014, thr - 1e-5], threshold=thr)
    assert r.passed and r.labels_identical and r.boundary == (3,)
    assert r.per_image[3]["boundary"] and "boundary images [3]" in r.table()
    assert r.to_manifest()["boundary"] == [3]


def test_label_flip_outside_the_band_fails() -> None:
    thr = 1.0
    r = _gate([0.2, 0.5, 0.9, 1.2], [0.2, 0.5, 0.9, 0.99], threshold=thr)  # 1.2 - 1.0 > score_abs 0.024
    assert not r.passed and not r.labels_identical and r.boundary == ()


def test_without_threshold_nothing_is_a_boundary_image() -> None:
    r = _gate([0.2, 0.5, 0.9, 1.2], [0.2, 0.5, 0.9, 1.2], threshold=None)
    assert r.passed and r.boundary == ()

"""The F1-optimal image threshold on a labelled validation folder (calibration.strategy
f1_validation): the rule, its provenance, the folder checks, and a real `train` run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from pyimgano_deploy.datasets import DatasetError, generate_synthetic_dataset, load_labelled_dir
from pyimgano_deploy.postprocess.thresholds import calibrate_f1_threshold, calibrate_thresholds
from pyimgano_deploy.workbench.rundir import validate_run_dir


def _f1(scores: np.ndarray, labels: np.ndarray, t: float) -> float:
    flagged = scores >= t
    tp = int((flagged & (labels == 1)).sum())
    return 2 * tp / (2 * tp + int((flagged & (labels == 0)).sum()) + int((~flagged & (labels == 1)).sum()))


def test_f1_threshold_is_the_best_cut_and_sits_between_two_images() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40, int), np.ones(25, int)]
    scores = np.r_[rng.normal(0, 1, 40), rng.normal(2, 1, 25)]
    t = calibrate_f1_threshold(scores, labels, source_split="validation", code_path="t")
    best = max(_f1(scores, labels, s) for s in scores)
    assert _f1(scores, labels, t.value) == pytest.approx(best)
    assert not np.any(scores == t.value)  # a midpoint, not a validation score
    assert t.source_split == "validation" and t.n_images == 65 and "F1-optimal on validation (40 normal, 25 anomalous)" in t.method
    assert f"F1 {best:.4f}" in t.method


def test_f1_ties_go_to_the_highest_threshold() -> None:
    # Flagging the top 2 (TP 2, FP 0) or the top 8 (TP 4, FP 4) both give F1 = 2/3; the
    # higher threshold has fewer false alarms.
    scores = np.arange(8.0, -1.0, -1.0)
    labels = np.array([1, 1, 0, 0, 0, 0, 1, 1, 0])
    t = calibrate_f1_threshold(scores, labels, source_split="v", code_path="t")
    assert _f1(scores, labels, 0.5) == pytest.approx(_f1(scores, labels, 6.5)) == pytest.approx(2 / 3)
    assert t.value == pytest.approx(6.5)


def test_f1_tied_scores_are_flagged_together() -> None:
    scores = np.array([2.0, 2.0, 1.0])
    labels = np.array([1, 0, 0])
    t = calibrate_f1_threshold(scores, labels, source_split="v", code_path="t")
    assert t.value == pytest.approx(1.5)  # 2.0 cannot be split between the two images holding it


@pytest.mark.parametrize("labels, match", [([0, 0, 0], "needs normal and anomalous"), ([0, 2, 1], "must be 0"), ([0, 1], "3 scores for 2")])
def test_f1_refuses_labels_it_cannot_use(labels: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        calibrate_f1_threshold(np.array([1.0, 2.0, 3.0]), np.array(labels), source_split="v", code_path="t")


def test_calibrate_thresholds_needs_validation_scores_for_f1() -> None:
    with pytest.raises(ValueError, match="needs labelled validation scores"):
        calibrate_thresholds([1.0, 2.0], None, quantile=0.99, pixel_quantile=None, strategy="f1_validation")


def test_labelled_folder_needs_both_kinds_of_image(tmp_path: Path) -> None:
    cat = generate_synthetic_dataset(tmp_path / "d", seed=0, n_train=2, n_test=4, size=32)
    samples = load_labelled_dir(cat / "test")
    assert {s.label for s in samples} == {0, 1} and all(s.mask_path is None for s in samples)
    shutil.rmtree(cat / "test" / "good")
    with pytest.raises(DatasetError, match=r"0 normal image\(s\) in good/"):
        load_labelled_dir(cat / "test", what="calibration.validation_dir")
    with pytest.raises(DatasetError, match="not a directory"):
        load_labelled_dir(tmp_path / "missing")


def test_labelled_folder_given_as_its_good_folder_points_to_the_parent(tmp_path: Path) -> None:
    cat = generate_synthetic_dataset(tmp_path / "d", seed=0, n_train=2, n_test=4, size=32)
    with pytest.raises(DatasetError, match=r"holds \d+ image file\(s\) directly.*did you mean its parent .*test\?"):
        load_labelled_dir(cat / "test" / "good", what="--validation-dir")


def _train(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--dataset", "synthetic", "--out", str(out), "--set", "dataset.size=48", "--no-progress",
                           "--model-kwargs", json.dumps({"pretrained": False, "image_size": 48, "coreset_ratio": 0.3}), *extra)
    return code, err, out


def test_train_sets_an_f1_optimal_threshold_from_the_validation_folder(tmp_path: Path) -> None:
    validation = generate_synthetic_dataset(tmp_path / "val", seed=7, n_train=2, n_test=12, size=48) / "test"
    code, err, out = _train(tmp_path, "--threshold-strategy", "f1_validation", "--validation-dir", str(validation))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    image = report["thresholds"]["image"]
    assert image["source_split"] == "validation" and image["method"].startswith("F1-optimal on validation")
    records = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "validation"]
    assert sorted(r["input"] for r in val) == sorted(report["splits"]["validation"])
    assert len(val) == image["n_images"] == len(load_labelled_dir(validation))
    scores, labels = np.array([r["score"] for r in val]), np.array([r["y_true"] for r in val])
    assert _f1(scores, labels, image["value"]) == pytest.approx(max(_f1(scores, labels, s) for s in scores))
    assert json.loads((out / "config.json").read_text())["calibration"]["validation_dir"] == str(validation)
    assert validate_run_dir(out) == []  # the validation records agree with report.json
    code, _, err = run_cli("export", "--run", str(out), "--out", str(tmp_path / "bundle"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert manifest["thresholds"]["image"]["value"] == image["value"]
    assert manifest["thresholds"]["image"]["method"] == image["method"]
    code, _, err = run_cli("validate", str(tmp_path / "bundle"))
    assert code == 0, err


def test_train_refuses_a_validation_folder_holding_test_images(tmp_path: Path) -> None:
    # The synthetic set is generated into <out>/data before the folder is checked.
    code, err, _ = _train(tmp_path, "--threshold-strategy", "f1_validation", "--validation-dir", str(tmp_path / "run" / "data" / "surface" / "test"))
    assert code == 1 and "also in the data set's train or test split" in err and "calibration.validation_dir" in err


def test_validation_dir_and_strategy_go_together(tmp_path: Path) -> None:
    code, _, err = run_cli("train", "--dataset", "synthetic", "--out", str(tmp_path / "r"), "--threshold-strategy", "f1_validation", "--dry-run")
    assert code == 2 and "calibration.validation_dir: required by calibration.strategy 'f1_validation'" in err
    code, _, err = run_cli("train", "--dataset", "synthetic", "--out", str(tmp_path / "r"), "--validation-dir", str(tmp_path), "--dry-run")
    assert code == 2 and "used only by it" in err

"""Image-threshold strategies (quantile, max + margin, target FPR) with provenance, through the
API and the real `train` entry point, and the operating-point report (PR curve, defect types)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from pyimgano_deploy.postprocess.thresholds import calibrate_image_threshold

SCORES = np.array([1.0, 2.0, 2.5, 3.0, 4.0, 10.0, 5.0, 2.2, 2.8, 3.3])


def _calibrate(**kw):
    return calibrate_image_threshold(SCORES, source_split="calibration", n_images=SCORES.size, code_path="t", **kw)


def test_max_margin_is_above_every_calibration_image_by_the_spread() -> None:
    t = _calibrate(strategy="max_margin", margin=0.5)
    assert t.value == pytest.approx(10.0 + 0.5 * (10.0 - np.median(SCORES)))
    assert "max + 0.5" in t.method and t.quantile is None and t.score_summary["max"] == 10.0


@pytest.mark.parametrize("fpr, flagged", [(0.1, 1), (0.2, 2), (0.05, 0)])
def test_target_fpr_flags_at_most_that_share_of_calibration_images(fpr: float, flagged: int) -> None:
    t = _calibrate(strategy="target_fpr", target_fpr=fpr)
    assert int((SCORES >= t.value).sum()) == flagged
    assert ("no false alarm allowed" in t.method) == (flagged == 0)


def test_quantile_is_the_default_and_bad_strategies_are_refused() -> None:
    assert _calibrate().value == pytest.approx(np.quantile(SCORES, 0.99))
    with pytest.raises(ValueError, match="threshold strategy must be one of"):
        _calibrate(strategy="median")
    with pytest.raises(ValueError, match="target_fpr must be in"):
        _calibrate(strategy="target_fpr", target_fpr=1.5)


def test_train_with_target_fpr_records_it_and_reports_the_operating_point(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--dataset", "synthetic", "--out", str(out), "--set", "dataset.size=48", "--no-progress",
                           "--model-kwargs", json.dumps({"pretrained": False, "image_size": 48, "coreset_ratio": 0.3}),
                           "--threshold-strategy", "target_fpr", "--target-fpr", "0.25")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    image = report["thresholds"]["image"]
    assert image["method"].startswith("target FPR 0.25 on calibration values")
    cal = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines() if '"calibration"' in line]
    assert sum(r["score"] >= image["value"] for r in cal) <= int(0.25 * len(cal))
    by_type = report["metrics"]["image"]["by_defect_type"]
    assert by_type and all(e["detected"] + len(e["missed"]) == e["n"] for e in by_type.values())
    html = (out / "report.html").read_text()
    assert "Precision–recall (image level)" in html and "Defect types at the image threshold" in html
    config = json.loads((out / "config.json").read_text())
    assert config["calibration"]["strategy"] == "target_fpr" and config["calibration"]["target_fpr"] == 0.25


def test_a_bad_strategy_in_the_config_names_the_key(tmp_path: Path) -> None:
    code, _, err = run_cli("train", "--dataset", "synthetic", "--out", str(tmp_path / "r"), "--set", 'calibration.strategy="best"', "--dry-run")
    assert code != 0 and "calibration.strategy" in err


def test_image_max_pixel_threshold_is_a_quantile_of_the_map_maxima() -> None:
    from pyimgano_deploy.postprocess.thresholds import calibrate_thresholds

    rng = np.random.default_rng(0)
    maps = [rng.random((16, 16)).astype(np.float32) * (1 + i) for i in range(20)]
    maxima = np.array([m.max() for m in maps])
    t = calibrate_thresholds(SCORES, maps, quantile=0.99, pixel_quantile=0.95, pixel_strategy="image_max")
    assert t.pixel is not None and t.pixel.value == pytest.approx(np.quantile(maxima, 0.95))
    assert "per-image maxima" in t.pixel.method and t.pixel.n_values == 20
    assert np.mean([m.max() >= t.pixel.value for m in maps]) <= 0.05 + 1e-9  # few normal maps reach it
    default = calibrate_thresholds(SCORES, maps, quantile=0.99, pixel_quantile=0.95)
    assert default.pixel is not None and default.pixel.value < t.pixel.value  # all pixels: a lower threshold
    with pytest.raises(ValueError, match="pixel threshold strategy"):
        calibrate_thresholds(SCORES, maps, quantile=0.99, pixel_quantile=0.95, pixel_strategy="peaks")


def test_fp40_recipe_calibrates_the_pixel_threshold_on_map_maxima(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--dataset", "synthetic", "--out", str(out), "--set", "dataset.size=48", "--no-progress",
                           "--recipe", "industrial-adapt-fp40", "--no-report",
                           "--model-kwargs", json.dumps({"pretrained": False, "image_size": 48, "coreset_ratio": 0.3}))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["thresholds"]["pixel"]["method"] == "quantile q=0.95 of the calibration maps' per-image maxima"
    config = json.loads((out / "config.json").read_text())["calibration"]
    assert (config["pixel_strategy"], config["pixel_quantile"]) == ("image_max", 0.95)
    code, out_json, _ = run_cli("train", "--dataset", "synthetic", "--out", str(tmp_path / "r2"), "--recipe", "industrial-adapt-fp40",
                                "--pixel-strategy", "pixels", "--pixel-quantile", "0.99", "--dry-run")
    resolved = json.loads(out_json)["calibration"]
    assert code == 0 and (resolved["pixel_strategy"], resolved["pixel_quantile"]) == ("pixels", 0.99)  # the config wins

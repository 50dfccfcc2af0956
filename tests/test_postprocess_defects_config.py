"""DefectsConfig: validation, (de)serialisation, overrides, presets; threshold resolution."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyimgano_deploy.postprocess import (
    DEFECTS_PRESETS,
    DefectsConfig,
    ThresholdCalibration,
    calibrate_for_config,
    calibrate_pixel_threshold,
    extract_defects,
    get_preset,
)
from pyimgano_deploy.postprocess.defects import resolve_hysteresis_low, resolve_pixel_threshold


def test_defaults_turn_every_step_off() -> None:
    cfg = DefectsConfig()
    assert cfg.pixel_threshold_source == "bundle"
    assert cfg.roi_xyxy_norm is None and cfg.border_ignore_px == 0 and cfg.smoothing == "none"
    assert not cfg.uses_hysteresis and cfg.open_ksize == 0 and cfg.close_ksize == 0 and not cfg.fill_holes
    assert cfg.min_area == 0 and cfg.merge_gap_px is None and cfg.max_regions is None


def test_to_dict_from_dict_round_trip_through_json() -> None:
    cfg = DefectsConfig(roi_xyxy_norm=(0.1, 0.2, 0.9, 1.0), smoothing="median", smoothing_ksize=5,
                        hysteresis_low=0.3, min_solidity=0.5, merge_gap_px=3, max_regions=7)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["roi_xyxy_norm"] == [0.1, 0.2, 0.9, 1.0]
    back = DefectsConfig.from_dict(data)
    assert back == cfg
    for preset in DEFECTS_PRESETS.values():
        assert DefectsConfig.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset


def test_from_dict_accepts_partial_and_coerces_json_numbers() -> None:
    cfg = DefectsConfig.from_dict({"border_ignore_px": 4.0, "smoothing_sigma": 2, "roi_xyxy_norm": [0, 0, 1, 1]})
    assert cfg.border_ignore_px == 4 and isinstance(cfg.border_ignore_px, int)
    assert cfg.smoothing_sigma == 2.0 and isinstance(cfg.smoothing_sigma, float)
    assert cfg.roi_xyxy_norm == (0.0, 0.0, 1.0, 1.0)


def test_unknown_keys_list_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['min_aera'\].*min_area"):
        DefectsConfig.from_dict({"min_aera": 3})
    with pytest.raises(ValueError, match="allowed keys"):
        DefectsConfig().with_overrides(blur=3)
    with pytest.raises(ValueError, match="mapping"):
        DefectsConfig.from_dict([("min_area", 3)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"smoothing": "bilateral"}, r"'smoothing' must be one of \['none', 'median', 'gaussian', 'box'\]"),
        ({"border_ignore_px": -1}, r"'border_ignore_px' must be an integer >= 0"),
        ({"border_ignore_px": True}, r"'border_ignore_px' must be an integer"),
        ({"smoothing_ksize": 4}, r"'smoothing_ksize' must be an integer >= 3 and odd"),
        ({"smoothing_sigma": 0}, r"'smoothing_sigma' must be > 0"),
        ({"roi_xyxy_norm": (0.5, 0, 0.4, 1)}, r"'roi_xyxy_norm' must be \[x0, y0, x1, y1\]"),
        ({"roi_xyxy_norm": (0, 0, 1.5, 1)}, r"'roi_xyxy_norm'"),
        ({"roi_xyxy_norm": "0,0,1,1"}, r"'roi_xyxy_norm'"),
        ({"hysteresis_low_ratio": 1.5}, r"'hysteresis_low_ratio' must be in \(0, 1\]"),
        ({"hysteresis_low": 0.2, "hysteresis_low_ratio": 0.5}, "either 'hysteresis_low' or 'hysteresis_low_ratio'"),
        ({"min_score_max": 1.0, "min_score_max_ratio": 1.0}, "either 'min_score_max'"),
        ({"pixel_threshold_source": "fixed"}, "'pixel_threshold_value' is required"),
        ({"pixel_threshold_source": "otsu"}, r"'pixel_threshold_source' must be one of \['bundle', 'fixed'"),
        ({"pixel_threshold_quantile": 0.0}, r"'pixel_threshold_quantile' must be in \(0, 1\]"),
        ({"min_fill_ratio": 1.2}, r"'min_fill_ratio' must be in \[0, 1\]"),
        ({"max_aspect_ratio": 0.5}, r"'max_aspect_ratio' must be >= 1"),
        ({"min_solidity": -0.1}, r"'min_solidity' must be in \[0, 1\]"),
        ({"max_regions": 0}, r"'max_regions' must be an integer >= 1 or null"),
        ({"merge_gap_px": -2}, r"'merge_gap_px' must be an integer >= 0 or null"),
        ({"core_ratio": 0.0}, r"'core_ratio' must be in \(0, 1\]"),
        ({"core_ratio": 1.5}, r"'core_ratio' must be in \(0, 1\]"),
        ({"fill_holes": "yes"}, r"'fill_holes' must be true or false"),
        ({"min_score_mean": float("nan")}, r"'min_score_mean' must be a finite number"),
        ({"morph_shape": "cross"}, r"'morph_shape' must be one of"),
    ],
)
def test_bad_values_name_key_and_range(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DefectsConfig(**kwargs)
    with pytest.raises(ValueError, match=match):
        DefectsConfig.from_dict(kwargs)


def test_with_overrides_returns_validated_copy() -> None:
    base = DefectsConfig()
    cfg = base.with_overrides(min_area=9, smoothing="box")
    assert cfg.min_area == 9 and cfg.smoothing == "box" and base.min_area == 0
    with pytest.raises(ValueError, match="min_area"):
        base.with_overrides(min_area=-3)


def test_preset_fp40() -> None:
    fp40 = get_preset("fp40")
    assert fp40 is DEFECTS_PRESETS["fp40"]
    assert fp40.roi_xyxy_norm == (0.0, 0.0, 1.0, 1.0)
    assert fp40.border_ignore_px == 4
    assert fp40.smoothing == "gaussian" and fp40.smoothing_sigma == 1.5
    assert fp40.hysteresis_low_ratio == 0.9 and fp40.hysteresis_low is None
    assert (fp40.open_ksize, fp40.close_ksize, fp40.fill_holes) == (3, 3, True)
    assert fp40.min_area == 16 and fp40.min_score_max_ratio == 1.0
    assert fp40.merge_gap_px == 8 and fp40.max_regions == 20
    assert resolve_hysteresis_low(fp40, 2.0) == pytest.approx(1.8)
    assert get_preset("false-positive-control") is fp40  # the descriptive name; fp40 stays an alias
    with pytest.raises(ValueError, match="known presets: .*'fp40'"):
        get_preset("fp99")


def test_missing_threshold_says_how_to_provide_one() -> None:
    m = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match=r"pass pixel_threshold=.*pixel_threshold_value"):
        extract_defects(m, DefectsConfig(), pixel_threshold=None)
    with pytest.raises(ValueError, match=r"calibrate_pixel_threshold\(normal_maps, quantile=0.99"):
        extract_defects(m, DefectsConfig(pixel_threshold_source="normal_quantile", pixel_threshold_quantile=0.99),
                        pixel_threshold=None)


def test_threshold_sources() -> None:
    fixed = DefectsConfig(pixel_threshold_source="fixed", pixel_threshold_value=0.25)
    assert resolve_pixel_threshold(fixed, None) == 0.25
    assert resolve_pixel_threshold(fixed, 9.0) == 0.25  # fixed ignores the argument
    assert resolve_pixel_threshold(DefectsConfig(), 0.7) == 0.7
    cal = ThresholdCalibration(value=0.4, method="m", quantile=0.99, source_split="val", n_images=2, n_values=8)
    assert resolve_pixel_threshold(DefectsConfig(), cal) == 0.4
    with pytest.raises(ValueError, match="finite"):
        resolve_pixel_threshold(DefectsConfig(), float("inf"))


def test_hysteresis_low_above_high_is_an_error() -> None:
    m = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="hysteresis low threshold"):
        extract_defects(m, DefectsConfig(hysteresis_low=0.9), pixel_threshold=0.5)
    with pytest.raises(ValueError, match="hysteresis low threshold"):
        extract_defects(m, DefectsConfig(hysteresis_low_ratio=0.5), pixel_threshold=-1.0)


def test_calibrate_pixel_threshold_with_provenance() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((3, 20, 10)).astype(np.float32)
    maps[:, :, 5:] += 10.0  # right half hot: excluded by the ROI
    cal = calibrate_pixel_threshold(list(maps), quantile=0.9, source_split="calib", code_path="tests")
    assert cal.value == pytest.approx(float(np.quantile(maps, 0.9)))
    assert (cal.n_images, cal.n_values, cal.source_split, cal.quantile) == (3, 600, "calib", 0.9)
    assert "normal pixels" in cal.method and cal.code_path == "tests"
    roi = calibrate_pixel_threshold(maps, quantile=0.9, roi_xyxy_norm=(0.0, 0.0, 0.5, 1.0),
                                    source_split="calib", code_path="tests")
    assert roi.value == pytest.approx(float(np.quantile(maps[:, :, :5], 0.9)))
    assert roi.n_values == 300 and "inside ROI" in roi.method and roi.value < 1.0
    assert ThresholdCalibration.from_dict(json.loads(json.dumps(roi.to_dict()))) == roi
    cfg = DefectsConfig(pixel_threshold_source="normal_quantile", pixel_threshold_quantile=0.9,
                        roi_xyxy_norm=(0.0, 0.0, 0.5, 1.0), quantile_in_roi=True)
    assert calibrate_for_config(maps, cfg, source_split="calib").value == pytest.approx(roi.value)
    with pytest.raises(ValueError, match="no normal maps"):
        calibrate_pixel_threshold([], quantile=0.9, source_split="calib", code_path="tests")

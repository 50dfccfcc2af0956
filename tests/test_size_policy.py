"""The keep_aspect input-size policy: resolved from the fit images, validated in the config, recorded."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import run_cli

from pyimgano_deploy.workbench.config import ConfigError, ModelConfig
from pyimgano_deploy.workbench.size_policy import aspect_spread_warning, resolve_image_size


def _images(folder: Path, h: int, w: int, n: int = 3) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        cv2.imwrite(str(p), np.full((h, w, 3), 60 + i, np.uint8))
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("h, w, expected", [(100, 250, (64, 160)), (250, 100, (160, 64)), (90, 90, (64, 64))])
def test_keep_aspect_follows_the_median_aspect_in_multiples_of_32(tmp_path: Path, h: int, w: int, expected: tuple) -> None:
    size, record = resolve_image_size("keep_aspect:64", _images(tmp_path, h, w))
    assert size == expected and record["image_size"] == list(expected) and record["n_images_measured"] == 3


def test_fit_images_of_mixed_aspect_are_recorded_and_warned_about(tmp_path: Path) -> None:
    paths = _images(tmp_path / "wide", 100, 250, n=2) + _images(tmp_path / "tall", 250, 100, n=1)
    size, record = resolve_image_size("keep_aspect:64", paths)
    assert size == (64, 160) and record["aspect_range_w_over_h"] == [0.4, 2.5]
    warning = aspect_spread_warning(record)
    assert warning is not None and "0.4 to 2.5" in warning and "64 × 160" in warning


def test_fit_images_of_one_aspect_get_no_warning(tmp_path: Path) -> None:
    _, record = resolve_image_size("keep_aspect:64", _images(tmp_path, 100, 250))
    assert record["aspect_range_w_over_h"] == [2.5, 2.5] and aspect_spread_warning(record) is None


def test_a_bad_policy_is_a_config_error_naming_the_form() -> None:
    with pytest.raises(ConfigError, match="keep_aspect:S"):
        ModelConfig.from_dict({"name": "vision_padim", "kwargs": {"image_size": "keep_aspect:50", "pretrained": False}})
    assert ModelConfig.from_dict({"name": "vision_padim", "kwargs": {"image_size": "keep_aspect"}}).kwargs["image_size"] == "keep_aspect"


def test_train_resolves_and_records_the_policy(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _images(root / "train", 64, 192, n=6)
    _images(root / "test_good", 64, 192, n=2)
    _images(root / "test_bad", 64, 192, n=2)
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--dataset", "folder", "--set", f'dataset.train_dir="{root / "train"}"',
                           "--set", f'dataset.test_normal_dir="{root / "test_good"}"', "--set", f'dataset.test_anomalous_dir="{root / "test_bad"}"',
                           "--out", str(out), "--no-progress", "--no-report", "--model", "vision_padim",
                           "--model-kwargs", json.dumps({"image_size": "keep_aspect:32", "pretrained": False, "d": 8}))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["input_size"] == [32, 96] and report["model"]["size_policy"]["policy"] == "keep_aspect:32"
    assert json.loads((out / "config.json").read_text())["model"]["kwargs"]["image_size"] == "keep_aspect:32"


def test_the_aspect_recipe_defaults_padim_to_keep_aspect_and_config_kwargs_win(tmp_path: Path) -> None:
    for extra, expected in (([], "keep_aspect"), (["--model-kwargs", '{"image_size": 96}'], 96)):
        code, out, err = run_cli("train", "--dataset", "synthetic", "--out", str(tmp_path / "r"), "--recipe", "industrial-adapt-aspect",
                                 "--dry-run", *extra)
        cfg = json.loads(out)
        assert code == 0, err
        assert (cfg["model"]["name"], cfg["model"]["kwargs"]["image_size"]) == ("vision_padim", expected)
    code, out, _ = run_cli("train", "--dataset", "synthetic", "--out", str(tmp_path / "r"), "--recipe", "industrial-adapt-aspect",
                           "--model", "vision_patchcore", "--dry-run")
    assert code == 0 and json.loads(out)["model"]["kwargs"]["image_size"] == 224  # another model keeps its own defaults


def test_the_fine_aspect_recipe_defaults_padim_to_a_320_px_short_side(tmp_path: Path) -> None:
    code, out, err = run_cli("train", "--dataset", "synthetic", "--out", str(tmp_path / "r"), "--recipe", "industrial-adapt-aspect-fine",
                             "--dry-run")
    assert code == 0, err
    cfg = json.loads(out)
    assert (cfg["recipe"], cfg["model"]["name"], cfg["model"]["kwargs"]["image_size"]) == ("industrial-adapt-aspect-fine", "vision_padim", "keep_aspect:320")
    assert cfg["model"]["kwargs"]["backbone"] == "efficientnet_lite0"

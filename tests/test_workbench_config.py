"""workbench config, recipes and calibration split (no training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyimgano_deploy.workbench.calibration import (
    CalibrationSplitError,
    calibrate_thresholds,
    calibration_count,
    split_calibration,
)
from pyimgano_deploy.workbench.config import ConfigError, TrainConfig, load_config_file
from pyimgano_deploy.workbench.recipes import get_recipe, list_recipes


def _cfg(tmp_path: Path, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"dataset": {"kind": "synthetic"}, "output": {"dir": str(tmp_path / "run")}}
    base.update(over)
    return base


def test_defaults_are_resolved(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(_cfg(tmp_path))
    d = cfg.to_dict()
    assert d["schema_version"] == "1.0" and d["name"] == "run" and d["recipe"] == "industrial-adapt"
    assert d["calibration"] == {"fraction": 0.2, "quantile": 0.99, "pixel_quantile": 0.99, "seed": 0,
                                "strategy": "quantile", "margin": 0.1, "target_fpr": 0.01, "validation_dir": None,
                                "pixel_strategy": "pixels"}
    assert d["model"]["name"] == "vision_patchcore"
    kwargs = d["model"]["kwargs"]
    assert kwargs["pretrained"] is True and kwargs["backbone"] == "efficientnet_lite0"
    assert (kwargs["image_size"], kwargs["coreset_ratio"]) == ("keep_aspect", 0.01)  # the default recipe's PatchCore
    assert "device" not in d["model"]["kwargs"] and "progress" not in d["model"]["kwargs"]
    assert d["dataset"] == {"kind": "synthetic", "root": None, "category": "surface", "seed": 0, "n_train": 40, "n_test": 20, "size": 128}
    assert d["tiling"] is None and d["defects"] is None
    assert d["output"]["dir"] == str(tmp_path / "run") and d["output"]["report"] is True
    assert TrainConfig.from_dict(d).to_dict() == d  # resolved config round-trips


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"bogus": 1}, "bogus"),
        ({"dataset": {"kind": "nope"}}, "dataset.kind"),
        ({"dataset": {"kind": "synthetic", "n_train": 1}}, "dataset.n_train"),
        ({"dataset": {"kind": "synthetic", "train_dir": "x"}}, "dataset (kind synthetic).train_dir"),
        ({"dataset": {"kind": "mvtec"}}, "dataset.root"),
        ({"model": {"name": "nope"}}, "vision_patchcore"),
        ({"model": {"kwargs": {"foo": 1}}}, "foo"),
        ({"model": {"kwargs": {"device": "cpu"}}}, "model.kwargs.device"),
        ({"model": {"kwargs": {"coreset_ratio": 2.0}}}, "coreset_ratio"),
        ({"calibration": {"fraction": 1.0}}, "calibration.fraction"),
        ({"calibration": {"quantile": 0}}, "calibration.quantile"),
        ({"calibration": {"extra": 0}}, "calibration.extra"),
        ({"device": "tpu"}, "device"),
        ({"seed": -1}, "seed"),
        ({"recipe": "nope"}, "industrial-adapt-highres"),
        ({"tiling": {"tile": 128}}, "tiling"),
        ({"output": {"dir": str(Path("x")), "save_maps": "yes"}}, "output.save_maps"),
        ({"defects": {"min_area": -1}}, "min_area"),
        ({"schema_version": "2.0"}, "schema_version"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(_cfg(tmp_path, **over))
    assert needle in str(info.value)


def test_unknown_key_lists_allowed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(_cfg(tmp_path, calibration={"fractoin": 0.3}))
    msg = str(info.value)
    assert "calibration.fractoin" in msg and "'fraction'" in msg and "'pixel_quantile'" in msg


def test_highres_recipe_fills_and_merges_tiling(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(_cfg(tmp_path, recipe="industrial-adapt-highres"))
    assert cfg.tiling == {"tile": 512, "stride": 384, "blend": "hann", "score_reduction": "topk_mean", "topk": 100}
    cfg = TrainConfig.from_dict(_cfg(tmp_path, recipe="industrial-adapt-highres", tiling={"tile": 256, "stride": 192},
                                     model={"kwargs": {"image_size": 128}}))
    assert cfg.tiling["tile"] == 256 and cfg.tiling["stride"] == 192 and cfg.tiling["topk"] == 100
    with pytest.raises(ConfigError, match="tiling.tile"):
        TrainConfig.from_dict(_cfg(tmp_path, recipe="industrial-adapt-highres", tiling={"tile": 128, "stride": 96}))
    with pytest.raises(ConfigError, match="center_crop"):
        TrainConfig.from_dict(_cfg(tmp_path, recipe="industrial-adapt-highres", model={"kwargs": {"center_crop": 200}}))


def test_fp40_recipe_fills_the_preset_and_checks_the_pixel_threshold(tmp_path: Path) -> None:
    from pyimgano_deploy.postprocess.defects import DEFECTS_PRESETS

    cfg = TrainConfig.from_dict(_cfg(tmp_path, recipe="industrial-adapt-fp40"))
    assert cfg.defects == DEFECTS_PRESETS["fp40"].to_dict()
    cfg = TrainConfig.from_dict(_cfg(tmp_path, recipe="industrial-adapt-fp40", defects={"min_area": 32}))
    assert cfg.defects["min_area"] == 32 and cfg.defects["merge_gap_px"] == 8
    with pytest.raises(ConfigError, match="calibration.pixel_quantile"):
        TrainConfig.from_dict(_cfg(tmp_path, recipe="industrial-adapt-fp40", calibration={"pixel_quantile": None}))


def test_folder_dataset_defaults_under_root(tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "test" / "anomalous").mkdir(parents=True)
    cfg = TrainConfig.from_dict(_cfg(tmp_path, dataset={"kind": "folder", "root": str(tmp_path / "data")}))
    assert cfg.dataset.train_dir == str(tmp_path / "data" / "train")
    assert cfg.dataset.test_anomalous_dir == str(tmp_path / "data" / "test" / "anomalous")
    assert cfg.dataset.test_normal_dir is None and cfg.dataset.mask_dir is None
    with pytest.raises(ConfigError, match="dataset.train_dir"):
        TrainConfig.from_dict(_cfg(tmp_path, dataset={"kind": "folder"}))


def test_yaml_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"dataset": {"kind": "synthetic"}}')
    assert load_config_file(tmp_path / "c.json") == {"dataset": {"kind": "synthetic"}}
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config_file(tmp_path / "bad.json")
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("dataset:\n  kind: synthetic\n")
    assert load_config_file(tmp_path / "c.yaml") == {"dataset": {"kind": "synthetic"}}


def test_recipes_registry() -> None:
    assert list_recipes() == ["industrial-adapt", "industrial-adapt-aspect", "industrial-adapt-aspect-fine", "industrial-adapt-fp40", "industrial-adapt-highres",
                              "micro-finetune-autoencoder"]
    info = get_recipe("industrial-adapt-highres").info()
    assert info["defaults"]["tiling"]["tile"] == 512 and info["steps"]
    with pytest.raises(KeyError, match="known recipes"):
        get_recipe("x")


# ------------------------------------------------------------------------- calibration split
def test_split_is_seeded_disjoint_and_complete() -> None:
    items = [f"img{i:02d}" for i in range(28)]
    fit, cal = split_calibration(items, 0.2, seed=3)
    assert len(cal) == 6 and len(fit) == 22
    assert not set(fit) & set(cal) and sorted(fit + cal) == items
    assert (fit, cal) == split_calibration(items, 0.2, seed=3)
    assert cal != split_calibration(items, 0.2, seed=4)[1]
    assert fit == sorted(fit) and cal == sorted(cal)  # original order kept


def test_split_keeps_one_image_each_side() -> None:
    assert calibration_count(2, 0.2) == 1 and calibration_count(5, 0.05) == 1 and calibration_count(3, 0.9) == 2
    with pytest.raises(CalibrationSplitError, match="at least 2"):
        split_calibration(["only"], 0.2, seed=0)


def test_calibrate_thresholds_provenance() -> None:
    scores = np.linspace(0, 1, 11)
    maps = [np.full((4, 4), v, np.float32) for v in scores]
    th = calibrate_thresholds(scores, maps, quantile=0.9, pixel_quantile=0.5)
    assert th.image.value == pytest.approx(0.9) and th.image.source_split == "calibration" and th.image.n_images == 11
    assert th.image.code_path.endswith("calibrate_thresholds")
    assert th.pixel is not None and th.pixel.value == pytest.approx(0.5) and th.pixel.n_values == 11 * 16
    assert calibrate_thresholds(scores, maps, quantile=0.9, pixel_quantile=None).pixel is None


def test_yaml_without_pyyaml_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    (tmp_path / "c.yml").write_text("dataset: {kind: synthetic}\n")
    with pytest.raises(ConfigError, match="PyYAML"):
        load_config_file(tmp_path / "c.yml")


def test_cuda_device_needs_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        assert TrainConfig.from_dict(_cfg(tmp_path, device="cuda")).device == "cuda"
    else:
        with pytest.raises(ConfigError, match="device"):
            TrainConfig.from_dict(_cfg(tmp_path, device="cuda"))

"""`pyimgano-deploy train` end to end through the real CLI (click's CliRunner)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from pyimgano_deploy.bundles.exit_codes import EXIT_OUTPUT
from pyimgano_deploy.cli import main
from pyimgano_deploy.workbench.rundir import REQUIRED_FILES, validate_run_dir

TINY_MODEL = '{"pretrained": false, "image_size": 64}'
TINY_SYNTHETIC = ("--set", "dataset.size=64", "--set", "dataset.n_train=12", "--set", "dataset.n_test=8")


def _train(*args: str) -> Any:
    return CliRunner().invoke(main, ["train", *args], catch_exceptions=False)


def _json_out(result: Any) -> dict[str, Any]:
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _per_image(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "per_image.jsonl").read_text().splitlines()]


def _read(run: Path, rel: str) -> dict[str, Any]:
    return json.loads((run / rel).read_text())


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Any]:
    run = tmp_path_factory.mktemp("synthetic") / "run"
    result = _train("--dataset", "synthetic", "--out", str(run), *TINY_SYNTHETIC, "--model-kwargs", TINY_MODEL,
                    "--save-maps", "--json")
    return run, _json_out(result), result


# ----------------------------------------------------------------------------- synthetic run
def test_synthetic_run_writes_a_valid_run_dir(synthetic_run: tuple[Path, dict[str, Any], Any]) -> None:
    run, summary, result = synthetic_run
    assert validate_run_dir(run) == []
    for rel in REQUIRED_FILES + ("report.html",):
        assert (run / rel).is_file(), rel
    assert summary["ok"] is True and summary["run_dir"] == str(run)
    assert set(summary["timings_s"]) >= {"load", "fit", "calibrate", "evaluate", "write", "total"}
    assert 0.0 <= summary["metrics"]["image"]["auroc"] <= 1.0
    assert summary["metrics"]["pixel"]["auroc"] is not None  # the synthetic set has masks
    assert summary["thresholds"]["image"] == _read(run, "artifacts/infer_config.json")["thresholds"]["image"]["value"]
    assert "fit / 2 calibration / 8 test images" in result.stderr and not result.stdout.count("\n") > 1  # logs on stderr
    assert (run / "data" / "surface" / "train" / "good").is_dir()  # generated into <out>/data


def test_report_json_and_infer_config_contents(synthetic_run: tuple[Path, dict[str, Any], Any]) -> None:
    run = synthetic_run[0]
    report = _read(run, "report.json")
    assert report["schema_version"] == "1.0" and report["toolkit"]["name"] == "pyimgano-deploy"
    assert report["dataset"]["n_fit"] == 10 and report["dataset"]["n_calibration"] == 2 and report["dataset"]["n_test"] == 8
    image_thr = report["thresholds"]["image"]
    assert image_thr["source_split"] == "calibration" and image_thr["n_images"] == 2 and image_thr["quantile"] == 0.99
    assert image_thr["code_path"] == "pyimgano_deploy.postprocess.thresholds.calibrate_thresholds"
    assert report["thresholds"]["pixel"]["n_values"] == 2 * 64 * 64
    cfg = _read(run, "artifacts/infer_config.json")
    assert set(cfg) == {"schema_version", "model", "preprocess", "thresholds", "tiling", "defects"}
    assert cfg["model"] == {"name": "vision_patchcore", "family": "patchcore"}
    assert cfg["preprocess"] == {"size": [64, 64], "interpolation": "linear", "center_crop": None}
    assert cfg["tiling"] is None and cfg["defects"] is None
    env = _read(run, "environment.json")
    assert env["torch"]["version"] and "packages" in env
    detector = _read(run, "model/detector.json")
    assert detector["fitted"]["n_images"] == 10
    assert detector["thresholds"]["image"]["value"] == image_thr["value"]
    config = _read(run, "config.json")
    assert config["model"]["kwargs"]["pretrained"] is False and config["output"]["save_maps"] is True


def test_calibration_split_is_disjoint_from_the_fit_split(synthetic_run: tuple[Path, dict[str, Any], Any]) -> None:
    run = synthetic_run[0]
    splits = _read(run, "report.json")["splits"]
    fit, cal = set(splits["fit"]), set(splits["calibration"])
    train_files = {str(p) for p in (run / "data" / "surface" / "train" / "good").iterdir()}
    assert fit and cal and not fit & cal and fit | cal == train_files
    records = _per_image(run)
    assert {r["input"] for r in records if r["split"] == "calibration"} == cal
    assert not fit & {r["input"] for r in records}  # fitting images are never scored/recorded
    assert sum(r["split"] == "test" for r in records) == 8


def test_per_image_records_and_maps(synthetic_run: tuple[Path, dict[str, Any], Any]) -> None:
    run = synthetic_run[0]
    for r in _per_image(run):
        assert r["label"] == int(r["score"] >= r["threshold"])
        assert r["y_true"] == (0 if r["defect_type"] == "good" else 1)
        amap = np.load(run / r["map"], allow_pickle=False)
        assert amap.shape == (64, 64) and amap.dtype == np.float32
    html = (run / "report.html").read_text()
    assert "Worst cases" in html and "data:image/png;base64," in html


def test_validate_run_dir_reports_problems(synthetic_run: tuple[Path, dict[str, Any], Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(synthetic_run[0], bad)
    (bad / "model" / "state.safetensors").unlink()
    records = _per_image(bad)
    records[0]["threshold"] = 123.0
    (bad / "per_image.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = _read(bad, "report.json")
    report["splits"]["fit"].append(report["splits"]["calibration"][0])
    del report["metrics"]
    (bad / "report.json").write_text(json.dumps(report))
    problems = "\n".join(validate_run_dir(bad))
    assert "model/state.safetensors: missing" in problems
    assert "per_image.jsonl:1: threshold" in problems
    assert "overlap" in problems and "missing key 'metrics'" in problems
    assert validate_run_dir(tmp_path / "nope") != []


def test_existing_out_is_refused_without_force(synthetic_run: tuple[Path, dict[str, Any], Any]) -> None:
    run = synthetic_run[0]
    result = CliRunner().invoke(main, ["train", "--dataset", "synthetic", "--out", str(run), "--model-kwargs", TINY_MODEL])
    assert result.exit_code == EXIT_OUTPUT and "--force" in result.stderr


# ----------------------------------------------------------------------------- config handling
def test_dry_run_prints_the_resolved_config(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"dataset": {"kind": "synthetic", "size": 64}, "output": {"dir": str(tmp_path / "r")}}))
    result = _train("--config", str(cfg), "--seed", "7", "--quantile", "0.95", "--dry-run")
    assert result.exit_code == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert resolved["seed"] == 7 and resolved["dataset"]["seed"] == 7 and resolved["calibration"]["seed"] == 7
    assert resolved["calibration"]["quantile"] == 0.95 and resolved["dataset"]["size"] == 64
    assert resolved["model"]["kwargs"]["backbone"] == "efficientnet_lite0"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--dataset", "synthetic", "--out", "X", "--set", "calibration.fractoin=0.3"], "calibration.fractoin"),
        (["--dataset", "synthetic", "--out", "X", "--model-kwargs", "{bad"], "--model-kwargs"),
        (["--dataset", "synthetic", "--out", "X", "--model-kwargs", '{"nope": 1}'], "nope"),
        (["--dataset", "synthetic", "--out", "X", "--recipe", "fast"], "industrial-adapt"),
        (["--dataset", "synthetic", "--out", "X", "--calibration-fraction", "1.5"], "calibration.fraction"),
        (["--dataset", "mvtec", "--out", "X"], "dataset.root"),
        (["--out", "X"], "--dataset"),
    ],
)
def test_config_errors_exit_2_and_name_the_key(tmp_path: Path, args: list[str], needle: str) -> None:
    args = [str(tmp_path / "x") if a == "X" else a for a in args]
    result = CliRunner().invoke(main, ["train", *args, "--dry-run"])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr


def test_unknown_key_in_config_file_and_json_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"dataset": {"kind": "synthetic"}, "output": {"dir": str(tmp_path / "r")}, "modle": {}}))
    result = CliRunner().invoke(main, ["train", "--config", str(cfg), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["ok"] is False and "modle" in result.stderr and "'model'" in result.stderr
    result = CliRunner().invoke(main, ["train", "--dataset", "mvtec", "--root", str(tmp_path / "missing"),
                                       "--out", str(tmp_path / "r2"), "--json", "--no-progress"])
    assert result.exit_code == 1 and "does not exist" in json.loads(result.stdout)["error"]


# ----------------------------------------------------------------------------- recipes
def test_highres_recipe_fits_on_tiles_and_writes_tiling(tmp_path: Path) -> None:
    run = tmp_path / "hr"
    summary = _json_out(_train(
        "--dataset", "synthetic", "--recipe", "industrial-adapt-highres", "--out", str(run), "--no-progress", "--json",
        "--set", "dataset.size=256", "--set", "dataset.n_train=6", "--set", "dataset.n_test=4",
        "--set", 'tiling={"tile": 128, "stride": 96}', "--model-kwargs", TINY_MODEL, "--no-report",
    ))
    assert validate_run_dir(run) == []
    tiling = _read(run, "artifacts/infer_config.json")["tiling"]
    assert tiling == {"tile": 128, "stride": 96, "blend": "hann", "score_reduction": "topk_mean", "topk": 100}
    report = _read(run, "report.json")
    n_fit = report["dataset"]["n_fit"]
    assert report["model"]["fitted"]["n_images"] == n_fit * 9  # a 256 px image has 3 x 3 tiles of 128 at stride 96
    assert report["metrics"]["pixel"]["map_shapes"] == [[128, 128]]  # model scale: 256 * 64 / 128
    assert summary["metrics"]["image"]["auroc"] is not None
    assert not (run / "report.html").exists()


def test_fp40_recipe_writes_the_defects_block_and_force_overwrites(tmp_path: Path) -> None:
    from pyimgano_deploy.postprocess.defects import DEFECTS_PRESETS

    run = tmp_path / "fp40"
    (run / "maps").mkdir(parents=True)
    (run / "maps" / "stale.npy").write_bytes(b"x")
    (run / "notes.txt").write_text("keep me")
    summary = _json_out(_train("--dataset", "synthetic", "--recipe", "industrial-adapt-fp40", "--out", str(run), "--force",
                               "--no-progress", "--json", *TINY_SYNTHETIC, "--model-kwargs", TINY_MODEL))
    assert validate_run_dir(run) == []
    assert _read(run, "artifacts/infer_config.json")["defects"] == DEFECTS_PRESETS["fp40"].to_dict()
    check = _read(run, "report.json")["defects_check"]
    assert check["pixel_threshold"] == summary["thresholds"]["pixel"]
    assert check["test"]["normal"]["n_images"] == 4 and check["test"]["anomalous"]["n_images"] == 4
    regions = check["test"]["regions"]
    assert regions["n_gt"] > 0 and 0.0 <= (regions["recall"] or 0.0) <= 1.0
    assert "regions" not in check["calibration"]  # calibration images have no masks
    assert not (run / "maps").exists() and (run / "notes.txt").read_text() == "keep me"



def test_a_run_written_before_a_defects_knob_existed_stays_valid(tmp_path: Path) -> None:
    run = tmp_path / "old"
    _json_out(_train("--dataset", "synthetic", "--recipe", "industrial-adapt-fp40", "--out", str(run), "--no-progress", "--json",
                     *TINY_SYNTHETIC, "--model-kwargs", TINY_MODEL))
    for name in ("config.json", "artifacts/infer_config.json"):  # as an older toolkit wrote them: no core_ratio
        doc = _read(run, name)
        del doc["defects"]["core_ratio"]
        (run / name).write_text(json.dumps(doc))
    assert validate_run_dir(run) == []
    doc = _read(run, "artifacts/infer_config.json")
    doc["defects"]["min_area"] += 1
    (run / "artifacts/infer_config.json").write_text(json.dumps(doc))
    assert "defects differ" in "\n".join(validate_run_dir(run))

def test_all_categories_on_a_two_category_tree(tmp_path: Path) -> None:
    from pyimgano_deploy.datasets import generate_synthetic_dataset

    root = tmp_path / "mvtec"
    for i, cat in enumerate(("bottle", "cable")):
        generate_synthetic_dataset(root, seed=i, n_train=6, n_test=4, size=64, category=cat)
    run = tmp_path / "all"
    summary = _json_out(_train("--dataset", "mvtec", "--root", str(root), "--category", "all", "--out", str(run),
                               "--no-progress", "--json", "--no-report", "--model-kwargs", TINY_MODEL))
    assert sorted(summary["categories"]) == ["bottle", "cable"]
    assert validate_run_dir(run) == []
    top = _read(run, "summary.json")
    assert top["schema_version"] == "1.0" and sorted(top["categories"]) == ["bottle", "cable"]
    assert top["mean"]["image_auroc"] is not None
    for cat in ("bottle", "cable"):
        assert _read(run / "categories" / cat, "config.json")["dataset"]["category"] == cat
        assert _read(run / "categories" / cat, "report.json")["dataset"]["category"] == cat


def _folder_tree(tmp_path: Path) -> Path:
    """A plain-folder data set (train/, test/normal, test/anomalous, masks/) from a synthetic one."""
    from pyimgano_deploy.datasets import generate_synthetic_dataset

    src = generate_synthetic_dataset(tmp_path / "src", seed=1, n_train=6, n_test=6, size=64)
    root = tmp_path / "folder"
    shutil.copytree(src / "train" / "good", root / "train")
    shutil.copytree(src / "test" / "good", root / "test" / "normal")
    (root / "test" / "anomalous").mkdir(parents=True)
    (root / "masks").mkdir()
    for kind in sorted(p.name for p in (src / "test").iterdir() if p.name != "good"):
        for img in (src / "test" / kind).iterdir():
            shutil.copy(img, root / "test" / "anomalous" / f"{kind}_{img.name}")
            shutil.copy(src / "ground_truth" / kind / f"{img.stem}_mask.png", root / "masks" / f"{kind}_{img.stem}_mask.png")
    return root


def test_folder_dataset_and_a_corrupt_training_image(tmp_path: Path) -> None:
    root = _folder_tree(tmp_path)
    summary = _json_out(_train("--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "run"), "--no-progress",
                               "--json", "--no-report", "--model-kwargs", TINY_MODEL))
    assert validate_run_dir(tmp_path / "run") == []
    assert summary["metrics"]["pixel"]["n_masks"] == 3 and summary["metrics"]["image"]["n_images"] == 6
    (root / "train" / "003.png").write_bytes(b"not a png")
    result = CliRunner().invoke(main, ["train", "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "run2"),
                                       "--no-progress", "--model-kwargs", TINY_MODEL, "--calibration-fraction", "0.1"])
    assert result.exit_code == 1 and "003.png" in result.stderr


# ----------------------------------------------------------------------------- real images
def test_hazelnut_random_init(hazelnut_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "hz"
    summary = _json_out(_train("--dataset", "mvtec", "--root", str(hazelnut_root), "--out", str(run), "--no-progress",
                               "--json", "--model-kwargs", TINY_MODEL))
    assert validate_run_dir(run) == []
    report = _read(run, "report.json")
    assert report["dataset"]["n_fit"] + report["dataset"]["n_calibration"] == report["dataset"]["train"]["n_images"]
    assert summary["metrics"]["pixel"]["n_masks"] > 0 and summary["metrics"]["pixel"]["aupro"] is not None


@pytest.mark.pretrained
def test_hazelnut_pretrained_lite0(hazelnut_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "hz224"
    t0 = time.perf_counter()
    summary = _json_out(_train("--dataset", "mvtec", "--root", str(hazelnut_root), "--out", str(run), "--no-progress", "--json"))
    elapsed = time.perf_counter() - t0
    assert validate_run_dir(run) == []
    assert _read(run, "config.json")["model"]["kwargs"]["image_size"] == "keep_aspect"  # the default recipe's size policy
    assert _read(run, "report.json")["model"]["input_size"] == [224, 224]  # square images: 224 x 224
    assert summary["metrics"]["image"]["auroc"] >= 0.95, summary["metrics"]
    assert elapsed < 60, f"took {elapsed:.1f} s"


def test_export_refuses_an_inconsistent_train_run(synthetic_run: tuple[Path, dict[str, Any], Any], tmp_path: Path) -> None:
    """export applies workbench.rundir's validator to runs written by train."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(synthetic_run[0], run)
    cfg = _read(run, "artifacts/infer_config.json")
    cfg["thresholds"]["image"]["value"] += 1.0  # no longer the report's calibrated threshold
    (run / "artifacts" / "infer_config.json").write_text(json.dumps(cfg))
    result = CliRunner().invoke(main, ["export", "--run", str(run), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "not a consistent run directory" in result.stderr and not (tmp_path / "b").exists()

"""16-bit training sets: ``dataset.u16_max`` / ``train --u16-max`` through fit, export, validate and infer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import jsonl_records, run_cli

from pyimgano_deploy.bundles import manifest_problems
from pyimgano_deploy.workbench.config import ConfigError, DatasetConfig

FULL_SCALE = 4095  # a 12-bit camera
MODEL_KWARGS = json.dumps({"pretrained": False, "image_size": "keep_aspect:32", "d": 8})


def _write_set(root: Path, *, sixteen_bit: bool) -> Path:
    """The same 12-bit pictures as 16-bit PNGs, or as the 8-bit PNGs ``u16_max`` makes of them."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("good", 2), ("bad", 2)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            raw = rng.integers(0, FULL_SCALE + 1, size=(40, 96), dtype=np.uint16)
            if split == "bad":
                raw[10:20, 30:50] = FULL_SCALE
            image = raw if sixteen_bit else np.rint(raw * (255.0 / FULL_SCALE)).astype(np.uint8)
            cv2.imwrite(str(root / split / f"{i}.png"), image)
    return root


def _train(root: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli("train", "--dataset", "folder", "--set", f'dataset.train_dir="{root / "train"}"',
                   "--set", f'dataset.test_normal_dir="{root / "good"}"', "--set", f'dataset.test_anomalous_dir="{root / "bad"}"',
                   "--out", str(out), "--no-progress", "--no-report", "--model", "vision_padim", "--model-kwargs", MODEL_KWARGS, *extra)


def _test_scores(run: Path) -> list[float]:
    return [r["score"] for r in jsonl_records(run / "per_image.jsonl") if r.get("split") == "test"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 16-bit set, its run with ``--u16-max 4095`` and that run's bundle."""
    base = tmp_path_factory.mktemp("u16")
    data = _write_set(base / "data16", sixteen_bit=True)
    code, _, err = _train(data, base / "run", "--u16-max", str(FULL_SCALE))
    assert code == 0, err
    code, _, err = run_cli("export", "--run", str(base / "run"), "--out", str(base / "bundle"))
    assert code == 0, err
    return data, base / "run", base / "bundle"


def test_a_16_bit_set_without_u16_max_is_refused_naming_the_file_and_the_option(tmp_path: Path) -> None:
    data = _write_set(tmp_path / "data16", sixteen_bit=True)
    code, _, err = _train(data, tmp_path / "run")
    assert code != 0
    assert "16-bit image" in err and "train/0.png" in err and "--u16-max" in err


def test_training_on_16_bit_files_equals_training_on_their_8_bit_conversion(tmp_path: Path, trained: tuple[Path, Path, Path]) -> None:
    _, run16, _ = trained
    data8 = _write_set(tmp_path / "data8", sixteen_bit=False)
    code, _, err = _train(data8, tmp_path / "run8")
    assert code == 0, err
    assert _test_scores(run16) == _test_scores(tmp_path / "run8")
    assert json.loads((run16 / "config.json").read_text())["dataset"]["u16_max"] == FULL_SCALE
    assert "u16_max" not in json.loads((tmp_path / "run8" / "config.json").read_text())["dataset"]  # 8-bit runs are as before


def test_the_bundle_records_the_training_full_scale_and_validate_decodes_its_sources_with_it(trained: tuple[Path, Path, Path]) -> None:
    _, _, bundle = trained
    assert json.loads((bundle / "bundle.json").read_text())["input"]["u16_max"] == FULL_SCALE
    code, out, err = run_cli("validate", str(bundle))
    assert code == 0, out + err
    assert "pipeline" in out and "PASS" in out


def test_infer_needs_u16_max_named_and_says_which_value_the_bundle_was_trained_with(tmp_path: Path, trained: tuple[Path, Path, Path]) -> None:
    data, run, bundle = trained
    code, _, _ = run_cli("infer", "--bundle", str(bundle), "--input", str(data / "good"), "--save-jsonl", str(tmp_path / "a.jsonl"))
    assert code == 1
    errors = [r["error"]["message"] for r in jsonl_records(tmp_path / "a.jsonl")]
    assert len(errors) == 2 and all("trained on 16-bit images with u16_max 4095" in m for m in errors)
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(data / "good"), "--save-jsonl", str(tmp_path / "b.jsonl"),
                           "--u16-max", str(FULL_SCALE))
    assert code == 0, err
    records = jsonl_records(tmp_path / "b.jsonl")
    eager = {r["input"]: r["score"] for r in jsonl_records(run / "per_image.jsonl")}
    assert len(records) == 2
    for r in records:
        assert r["u16_max"] == FULL_SCALE
        assert r["score"] == pytest.approx(eager[r["input"]], rel=1e-4)


def test_infer_warns_when_u16_max_differs_from_the_training_value(tmp_path: Path, trained: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    data, _, bundle = trained
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(data / "good"), "--save-jsonl", str(tmp_path / "c.jsonl"),
                           "--u16-max", "65535")
    assert code == 0, err
    assert "u16_max 65535 differs from the 4095" in caplog.text


def test_dataset_u16_max_is_validated_at_the_boundary() -> None:
    for bad in (0, 70000, "4095", True):
        with pytest.raises(ConfigError, match="dataset.u16_max"):
            DatasetConfig.from_dict({"kind": "mvtec", "root": "/data", "u16_max": bad}, default_seed=0)
    assert DatasetConfig.from_dict({"kind": "mvtec", "root": "/data", "u16_max": 4095}, default_seed=0).to_dict()["u16_max"] == 4095


def test_a_manifest_with_an_invalid_training_full_scale_is_refused(trained: tuple[Path, Path, Path]) -> None:
    _, _, bundle = trained
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["input"]["u16_max"] = 0
    assert any(p.startswith("input.u16_max") for p in manifest_problems(manifest))


def test_the_eager_api_reads_16_bit_files_with_u16_max_and_refuses_them_without(trained: tuple[Path, Path, Path]) -> None:
    from pyimgano_deploy.inference import infer
    from pyimgano_deploy.models.detectors.base import Detector

    data, run, _ = trained
    detector = Detector.load(run / "model")
    paths = sorted(str(p) for p in (data / "good").iterdir())
    eager = {r["input"]: r["score"] for r in jsonl_records(run / "per_image.jsonl")}
    results = infer(detector, paths, u16_max=FULL_SCALE)
    assert [r.score for r in results] == pytest.approx([eager[p] for p in paths], rel=1e-6)
    assert list(detector.decision_function(paths, u16_max=FULL_SCALE)) == pytest.approx([r.score for r in results], rel=1e-6)
    refused = infer(detector, paths)
    assert all(r.error is not None and r.error.stage == "decode" and "u16_max" in r.error.message for r in refused)


def test_export_triton_serves_16_bit_requests_only_with_u16_max_named(tmp_path: Path, trained: tuple[Path, Path, Path]) -> None:
    _, _, bundle = trained
    code, _, err = run_cli("export-triton", "--bundle", str(bundle), "--out", str(tmp_path / "plain"))
    assert code == 0, err
    assert "trained on 16-bit images with u16_max 4095" in err and "--u16-max" in err
    name = json.loads((bundle / "bundle.json").read_text())["model"]["name"]
    assert json.loads((tmp_path / "plain" / f"{name}_preprocess" / "bundle_info.json").read_text())["u16_max"] is None
    code, _, err = run_cli("export-triton", "--bundle", str(bundle), "--out", str(tmp_path / "u16"), "--u16-max", str(FULL_SCALE))
    assert code == 0, err
    assert json.loads((tmp_path / "u16" / f"{name}_preprocess" / "bundle_info.json").read_text())["u16_max"] == FULL_SCALE
    assert "note:" not in err


def test_overlays_of_16_bit_inputs_read_the_image_as_the_run_did(tmp_path: Path, trained: tuple[Path, Path, Path]) -> None:
    data, _, bundle = trained
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(data / "bad"), "--save-jsonl", str(tmp_path / "d.jsonl"),
                           "--u16-max", str(FULL_SCALE), "--defects", "--save-overlays", str(tmp_path / "overlays"))
    assert code == 0, err  # the overlay re-read each file without u16_max, so every record failed at postprocess
    records = jsonl_records(tmp_path / "d.jsonl")
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(Path(r["defects"]["overlay"]).is_file() for r in records)


def test_an_overlay_reads_its_image_with_the_runs_pixel_limit(tmp_path: Path) -> None:
    from pyimgano_deploy.cli.defects_options import DefectsPlan
    from pyimgano_deploy.inputs import ImageReadError
    from pyimgano_deploy.postprocess.defects import DefectsConfig, extract_defects

    image = tmp_path / "part.png"
    cv2.imwrite(str(image), np.zeros((40, 60, 3), np.uint8))
    amap = np.zeros((40, 60), np.float32)
    amap[10:20, 10:20] = 2.0
    plan = DefectsPlan(config=DefectsConfig(), runtime_config=DefectsConfig(), base="default", overrides={}, pixel_threshold=1.0,
                       provenance={"source": "fixed", "value": 1.0}, overlays_dir=tmp_path)
    found = extract_defects(amap, DefectsConfig(), pixel_threshold=1.0, image_size=(40, 60))
    assert Path(plan.record(0, str(image), found, amap, max_pixels=None)["overlay"]).is_file()
    with pytest.raises(ImageReadError, match="pixels"):
        plan.record(1, str(image), found, amap, max_pixels=100)

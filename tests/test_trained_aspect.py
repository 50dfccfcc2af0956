"""``input.trained_aspect``: exports record the calibration images' aspect ratios, and the runtime
warns once when an input's shape lies outside them (a rotated camera, another crop)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import pytest
from bundle_factory import build_tiny_bundle, random_images, rewrite_manifest
from cli_helpers import run_cli

from pyimgano_deploy.bundles.errors import InvalidBundleError
from pyimgano_deploy.exporters.run_source import RunSource
from pyimgano_deploy.inputs.source_info import ASPECT_TOLERANCE, aspect_differs, aspect_range
from pyimgano_deploy.runtimes import load_bundle

_WARNING = "input.trained_aspect"


def _write(path: Path, height: int, width: int, seed: int = 0) -> str:
    assert cv2.imwrite(str(path), random_images(1, height, width, seed=seed)[0])
    return str(path)


def test_the_range_is_rounded_and_the_tolerance_applies_beyond_it() -> None:
    assert aspect_range([(1130, 460), (1130, 470)]) == [2.4043, 2.4565]
    assert aspect_range([(1130, 460)] * 2) == [2.4565, 2.4565]
    lo, hi = 2.0, 2.5
    assert not aspect_differs([lo, hi], 2000, 1000) and not aspect_differs([lo, hi], 2600, 1000)  # inside, and within 5 %
    assert aspect_differs([lo, hi], int(hi * (1 + ASPECT_TOLERANCE) * 1000) + 10, 1000)
    assert aspect_differs([lo, hi], 460, 1130)  # the camera turned by 90 degrees
    assert not aspect_differs(None, 460, 1130)  # an older bundle records nothing


def test_export_surveys_the_calibration_images_and_the_golden_sources(tmp_path: Path) -> None:
    from pyimgano_deploy.exporters.bundle_export import SURVEY_IMAGES, survey_calibration

    paths = [_write(tmp_path / f"c{i}.png", 20, 40, i) for i in range(SURVEY_IMAGES + 1)]
    odd = _write(tmp_path / "odd.png", 20, 50)  # not among the evenly spaced ones
    source = RunSource(tmp_path, {}, {}, {}, [*paths, odd])
    assert survey_calibration(source).aspect == [2.0, 2.0]
    assert survey_calibration(source, also=[odd]).aspect == [2.0, 2.5]
    assert survey_calibration(source, also=[odd]).colour == "colour"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from run_factory import export_small_padim

    return export_small_padim(tmp_path_factory.mktemp("aspect"))


def test_an_exported_bundle_records_it_and_inspect_shows_it(exported: Path) -> None:
    from pyimgano_deploy.bundles import read_bundle

    assert read_bundle(exported).trained_aspect == [1.0, 1.0]  # the synthetic set is square
    code, out, _ = run_cli("inspect", str(exported))
    assert code == 0 and "aspect (width / height) 1" in out


def test_validate_refuses_a_manifest_that_contradicts_its_golden_sources(exported: Path, tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(exported, edited)
    rewrite_manifest(edited, lambda m: m["input"].update(trained_aspect=[2.0, 2.5]))  # checksums redone: only the content lies
    code, out, _ = run_cli("validate", str(edited))
    assert code == 3 and "input.trained_aspect is [2.0, 2.5], but golden source file(s) [0, 1] have other aspect ratios" in out


@pytest.mark.parametrize("value", [[2.0], [0.0, 1.0], [2.0, 1.0], "wide", [1.0, float("inf")]])
def test_the_manifest_check_refuses_other_values(tmp_path: Path, value: object) -> None:
    root = build_tiny_bundle(tmp_path / "b")
    with pytest.raises(InvalidBundleError, match=r"input.trained_aspect: expected \[min, max\] of positive width / height ratios"):
        rewrite_manifest(root, lambda m: m["input"].update(trained_aspect=value))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and _WARNING in r.getMessage()]


def test_the_runtime_warns_once_for_inputs_of_another_shape(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = build_tiny_bundle(tmp_path / "b")
    rewrite_manifest(root, lambda m: m["input"].update(trained_aspect=[2.0, 2.0]))
    same = [_write(tmp_path / f"same{i}.png", 30, 60 + i, i) for i in range(2)]
    turned = [_write(tmp_path / f"turned{i}.png", 60, 30, 10 + i) for i in range(2)]
    with caplog.at_level(logging.WARNING), load_bundle(root) as runtime:
        assert all(r.ok for r in runtime.infer(same))
        assert _warnings(caplog) == []
        results = runtime.infer(turned)
    assert all(r.ok and (r.source.width, r.source.height) == (30, 60) for r in results)  # scored, and each record says so
    (message,) = _warnings(caplog)
    assert "turned0.png: it is 30 × 60 (aspect 0.5), the training images had aspect 2 (bundle.json input.trained_aspect)" in message


def test_older_bundles_never_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = build_tiny_bundle(tmp_path / "b")  # no trained_aspect: a bundle from before schema 1.6
    with caplog.at_level(logging.WARNING), load_bundle(root) as runtime:
        runtime.infer([_write(tmp_path / "a.png", 60, 20), _write(tmp_path / "b.png", 20, 60)])
    assert _warnings(caplog) == []


def test_export_warns_when_the_calibration_images_differ_in_aspect(tmp_path: Path) -> None:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
    from pyimgano_deploy.exporters.run_source import resolve_run
    from run_factory import make_run_dir

    run = make_run_dir(tmp_path, "vision_padim", size=32, d=8, n_train=4, n_calib=3)
    first = resolve_run(run).calibration_inputs[0]
    image = cv2.imread(first)
    assert cv2.imwrite(first, cv2.resize(image, (image.shape[1] * 3 // 2, image.shape[0])))
    logged: list[str] = []
    result = export_run(run, tmp_path / "b", ExportOptions(golden=2), log=logged.append)
    assert result.manifest["input"]["trained_aspect"] == [1.0, 1.5]
    assert any("aspect ratios (width / height) from 1 to 1.5" in line for line in logged)


def test_the_infer_summary_counts_the_inputs_unlike_the_training_images(tmp_path: Path) -> None:
    import json

    root = build_tiny_bundle(tmp_path / "b")
    rewrite_manifest(root, lambda m: m["input"].update(trained_aspect=[2.0, 2.0], trained_colour="colour"))
    images = tmp_path / "in"
    images.mkdir()
    _write(images / "same.png", 30, 60)
    _write(images / "turned0.png", 60, 30, 1)
    _write(images / "turned1.png", 62, 30, 2)
    assert cv2.imwrite(str(images / "grey.png"), random_images(1, 30, 60, seed=3)[0][..., 0])
    args = ("infer", "--bundle", str(root), "--input", str(images), "--save-jsonl", str(tmp_path / "r.jsonl"))
    code, out, _ = run_cli(*args, "--json")
    assert code == 0
    unlike = json.loads(out)["unlike_training"]
    assert (unlike["other_colour"], unlike["other_aspect"], unlike["trained_aspect"]) == (1, 2, [2.0, 2.0])
    code, _, err = run_cli(*args, "--overwrite")
    assert code == 0 and "1 of another colour (trained colour), 2 of another aspect ratio" in err


def test_refuse_makes_an_unlike_input_its_error_record_and_counts_it(tmp_path: Path) -> None:
    import json

    from cli_helpers import jsonl_records

    root = build_tiny_bundle(tmp_path / "b")
    rewrite_manifest(root, lambda m: m["input"].update(trained_aspect=[2.0, 2.0]))
    images = tmp_path / "in"
    images.mkdir()
    _write(images / "a_same.png", 30, 60)
    _write(images / "b_turned.png", 60, 30, 1)
    out = tmp_path / "r.jsonl"
    code, stdout, _ = run_cli("infer", "--bundle", str(root), "--input", str(images), "--save-jsonl", str(out),
                              "--unlike-training", "refuse", "--max-errors", "1", "--json")
    assert code == 0
    same, turned = jsonl_records(out)
    assert same["status"] == "ok" and turned["status"] == "error" and turned["score"] is None
    assert turned["error"]["type"] == "UnlikeTrainingError" and "30 × 60 (aspect 0.5)" in turned["error"]["message"]
    assert turned["source"]["width"] == 30  # the record still says what the file was
    summary = json.loads(stdout)
    assert summary["errors"] == 1 and summary["unlike_training"]["policy"] == "refuse" and summary["unlike_training"]["other_aspect"] == 1
    assert run_cli("infer", "--bundle", str(root), "--input", str(images), "--save-jsonl", str(out), "--overwrite",
                   "--unlike-training", "refuse")[0] == 1  # over --max-errors 0


def test_the_api_refuses_an_unknown_policy(tmp_path: Path) -> None:
    with load_bundle(build_tiny_bundle(tmp_path / "b")) as runtime, pytest.raises(ValueError, match="unlike_training must be one of"):
        runtime.infer([_write(tmp_path / "a.png", 20, 20)], unlike_training="ignore")


def test_an_embedded_scorer_can_refuse_a_frame_of_another_shape(tmp_path: Path) -> None:
    from pyimgano_deploy.runtimes.embed import FrameScoringError, open_scorer

    root = build_tiny_bundle(tmp_path / "b")
    rewrite_manifest(root, lambda m: m["input"].update(trained_aspect=[2.0, 2.0]))
    scorer = open_scorer(root, unlike_training="refuse")
    try:
        wide, tall = random_images(1, 30, 60)[0], random_images(1, 60, 30)[0]
        assert isinstance(scorer.score_bgr(wide.tobytes(), 30, 60)[0], float)
        with pytest.raises(FrameScoringError, match=r"UnlikeTrainingError: .*it is 30 × 60 \(aspect 0.5\)"):
            scorer.score_bgr(tall.tobytes(), 60, 30)
    finally:
        scorer.close()
    with pytest.raises(ValueError, match="unlike_training must be one of"):
        open_scorer(root, unlike_training="maybe")

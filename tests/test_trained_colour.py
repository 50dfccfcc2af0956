"""``input.trained_colour``: exports say whether the training images were grey or in colour, and
the runtime warns once when an input is the other kind."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, random_images, rewrite_manifest

from pyimgano_deploy.bundles.errors import InvalidBundleError
from pyimgano_deploy.exporters.run_source import RunSource
from pyimgano_deploy.inputs.source_info import colour_of, is_grey
from pyimgano_deploy.runtimes import load_bundle

_WARNING = "input.trained_colour"


def _write(path: Path, grey: bool, seed: int) -> str:
    bgr = cv2.cvtColor(random_images(1, 24, 30, seed=seed)[0], cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if grey else bgr)
    return str(path)


def test_grey_is_one_channel_or_three_equal_ones() -> None:
    rgb = random_images(1, 40, 50, seed=1)[0]
    mono = np.repeat(rgb[..., :1], 3, axis=2)
    assert is_grey(rgb[..., 0]) and is_grey(mono) and not is_grey(rgb)
    mono_one_pixel_off = mono.copy()
    mono_one_pixel_off[37, 3, 2] ^= 1  # one pixel is colour enough: a small image has every row compared
    assert not is_grey(mono_one_pixel_off)
    assert is_grey(np.concatenate([mono, rgb[..., :1]], axis=2))  # alpha is not colour
    assert [colour_of([True]), colour_of([False, False]), colour_of([True, False])] == ["grey", "colour", "mixed"]


@pytest.mark.parametrize(("greys", "expected"), [((True, True), "grey"), ((False, False), "colour"), ((True, False), "mixed")])
def test_export_surveys_the_calibration_images(tmp_path: Path, greys: tuple[bool, ...], expected: str) -> None:
    from pyimgano_deploy.exporters.bundle_export import survey_calibration

    paths = [_write(tmp_path / f"c{i}.png", g, i) for i, g in enumerate(greys)]
    assert survey_calibration(RunSource(tmp_path, {}, {}, {}, paths)).colour == expected


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from run_factory import export_small_padim

    return export_small_padim(tmp_path_factory.mktemp("colour"))


def test_an_exported_bundle_records_it(exported: Path) -> None:
    from pyimgano_deploy.bundles import read_bundle

    assert read_bundle(exported).trained_colour == "colour"  # the synthetic set is in colour


def test_validate_refuses_a_manifest_that_contradicts_its_golden_sources(exported: Path, tmp_path: Path) -> None:
    import shutil

    from cli_helpers import run_cli

    edited = tmp_path / "edited"
    shutil.copytree(exported, edited)
    rewrite_manifest(edited, lambda m: m["input"].update(trained_colour="grey"))  # checksums redone: only the content lies
    code, out, _ = run_cli("validate", str(edited))
    assert code == 3 and "input.trained_colour is 'grey', but golden source file(s) [0, 1] are in colour" in out
    assert run_cli("validate", str(exported))[0] == 0


def test_the_manifest_check_refuses_another_value(tmp_path: Path) -> None:
    root = build_tiny_bundle(tmp_path / "b")
    with pytest.raises(InvalidBundleError, match=r"input.trained_colour: expected one of \['grey', 'colour', 'mixed'\], got 'sepia'"):
        rewrite_manifest(root, lambda m: m["input"].update(trained_colour="sepia"))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and _WARNING in r.getMessage()]


@pytest.mark.parametrize("trained", ["colour", "grey"])
def test_the_runtime_warns_once_for_inputs_of_the_other_kind(tmp_path: Path, caplog: pytest.LogCaptureFixture, trained: str) -> None:
    root = build_tiny_bundle(tmp_path / "b")
    rewrite_manifest(root, lambda m: m["input"].update(trained_colour=trained))
    same = [_write(tmp_path / f"same{i}.png", trained == "grey", i) for i in range(2)]
    other = [_write(tmp_path / f"other{i}.png", trained != "grey", 10 + i) for i in range(3)]
    with caplog.at_level(logging.WARNING), load_bundle(root) as runtime:
        assert all(r.ok for r in runtime.infer(same))
        assert _warnings(caplog) == []
        results = runtime.infer(other)
    assert all(r.ok and r.source.grey == (trained != "grey") for r in results)  # scored, and each record says so
    (message,) = _warnings(caplog)
    assert "other0.png" in message and ("is grey" in message) == (trained == "colour")


def test_mixed_or_older_bundles_never_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = build_tiny_bundle(tmp_path / "b")  # no trained_colour: a bundle from before schema 1.5
    images = [_write(tmp_path / f"{i}.png", i % 2 == 0, i) for i in range(2)]
    with caplog.at_level(logging.WARNING), load_bundle(root) as runtime:
        runtime.infer(images)
    rewrite_manifest(root, lambda m: m["input"].update(trained_colour="mixed"))
    with caplog.at_level(logging.WARNING), load_bundle(root) as runtime:
        runtime.infer(images)
    assert _warnings(caplog) == []


def test_export_warns_when_the_calibration_images_mix_grey_and_colour(tmp_path: Path) -> None:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
    from pyimgano_deploy.exporters.run_source import resolve_run
    from run_factory import make_run_dir

    run = make_run_dir(tmp_path, "vision_padim", size=32, d=8, n_train=4, n_calib=3)
    first = resolve_run(run).calibration_inputs[0]
    image = cv2.imread(first)
    assert cv2.imwrite(first, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    logged: list[str] = []
    result = export_run(run, tmp_path / "b", ExportOptions(golden=2), log=logged.append)
    assert result.manifest["input"]["trained_colour"] == "mixed"
    assert any("mix grey and colour" in line for line in logged)


def test_a_missing_calibration_image_is_a_run_directory_error(tmp_path: Path) -> None:
    from pyimgano_deploy.exporters.bundle_export import survey_calibration
    from pyimgano_deploy.exporters.run_source import RunDirError

    present = _write(tmp_path / "c0.png", False, 0)
    with pytest.raises(RunDirError, match=r"c1.png': file not found: export reads the run's calibration images"):
        survey_calibration(RunSource(tmp_path, {}, {}, {}, [present, str(tmp_path / "c1.png")]))

"""``recalibrate``: a bundle's thresholds re-set on normal images from the line, as a new bundle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import run_cli

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.manifest import manifest_problems
from pyimgano_deploy.bundles.parity import gate_tolerances
from pyimgano_deploy.bundles.replace import BundleExistsError, UnsafeOutputError
from pyimgano_deploy.postprocess.thresholds import calibrate_f1_threshold
from pyimgano_deploy.runtimes import load_bundle, validate_bundle
from pyimgano_deploy.runtimes.recalibration import (
    RECALIBRATION_SPLIT,
    RecalibrationError,
    RecalibrationOptions,
    recalibrate_bundle,
)


def _images(folder: Path, n: int, seed: int, height: int = 40, width: int = 48) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(random_images(n, height, width, seed=seed)):
        paths.append(str(folder / f"{seed}_{i:02d}.png"))
        assert cv2.imwrite(paths[-1], image)
    return paths


def _engine_scores(bundle: Path, paths: list[str]) -> np.ndarray:
    with load_bundle(bundle) as rt:
        return np.array([r.score for r in rt.infer(paths)], dtype=np.float64)


def test_the_threshold_is_the_quantile_of_the_engine_scores_and_the_source_is_unchanged(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    before = (src / "bundle.json").read_bytes()
    normal = _images(tmp_path / "line", 12, seed=5)
    result = recalibrate_bundle(src, normal, tmp_path / "b_line", RecalibrationOptions(quantile=0.9))
    assert (src / "bundle.json").read_bytes() == before
    expected = float(np.quantile(_engine_scores(src, normal), 0.9))
    new = read_bundle(tmp_path / "b_line")
    assert new.image_threshold.value == pytest.approx(expected, rel=1e-12)
    assert new.image_threshold.source_split == RECALIBRATION_SPLIT and new.image_threshold.n_images == 12
    assert result.digest == new.digest != read_bundle(src).digest
    assert validate_bundle(tmp_path / "b_line").ok


def test_every_file_is_copied_byte_for_byte_and_the_entry_names_the_source(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    old = read_bundle(src)
    recalibrate_bundle(src, _images(tmp_path / "line", 6, seed=5), tmp_path / "b_line")
    new = read_bundle(tmp_path / "b_line")
    assert {f["path"]: f["sha256"] for f in new.manifest["files"]} == {f["path"]: f["sha256"] for f in old.manifest["files"]}
    (entry,) = new.manifest["recalibrations"]
    assert entry["from_digest"] == old.digest
    assert entry["previous_thresholds"]["image"] == old.manifest["thresholds"]["image"]
    assert entry["images"]["n_scored"] == 6 and entry["images"]["n_failed"] == 0
    assert new.manifest["created_at"] == old.manifest["created_at"]  # the export's provenance stays


def test_the_parity_record_is_remeasured_under_the_new_threshold(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    recalibrate_bundle(src, _images(tmp_path / "line", 8, seed=9), tmp_path / "b_line", RecalibrationOptions(quantile=0.5))
    new = read_bundle(tmp_path / "b_line")
    golden = new.load_golden()
    tol = gate_tolerances("fp32", golden["score"], golden["anomaly_map"], new.image_threshold.value)
    assert new.manifest["parity"]["fp32"]["tolerance"] == pytest.approx(tol)


def test_two_recalibrations_keep_both_entries_in_order(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    first = recalibrate_bundle(src, _images(tmp_path / "a", 6, seed=1), tmp_path / "b1")
    recalibrate_bundle(tmp_path / "b1", _images(tmp_path / "c", 6, seed=2), tmp_path / "b2")
    entries = read_bundle(tmp_path / "b2").manifest["recalibrations"]
    assert [e["from_digest"] for e in entries] == [read_bundle(src).digest, first.digest]
    assert entries[1]["previous_thresholds"]["image"]["value"] == first.thresholds.image.value


def test_the_source_folder_is_never_the_output(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    normal = _images(tmp_path / "line", 3, seed=5)
    for out in (src, src / "inner", tmp_path):
        with pytest.raises(UnsafeOutputError, match="source bundle"):
            recalibrate_bundle(src, normal, out, RecalibrationOptions(force=True))


def test_an_existing_output_needs_force_and_is_then_replaced(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    normal = _images(tmp_path / "line", 4, seed=5)
    first = recalibrate_bundle(src, normal, tmp_path / "out", RecalibrationOptions(quantile=0.5))
    with pytest.raises(BundleExistsError, match="--force"):
        recalibrate_bundle(src, normal, tmp_path / "out")
    second = recalibrate_bundle(src, normal, tmp_path / "out", RecalibrationOptions(quantile=1.0, force=True))
    assert read_bundle(tmp_path / "out").digest == second.digest != first.digest


def test_failed_inputs_over_max_errors_write_nothing(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    normal = _images(tmp_path / "line", 4, seed=5)
    broken = tmp_path / "line" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(RecalibrationError, match="broken.png"):
        recalibrate_bundle(src, [*normal, str(broken)], tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["b", "line"]  # no bundle, no work folder


def test_failed_inputs_within_max_errors_are_listed_and_left_out(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    normal = _images(tmp_path / "line", 4, seed=5)
    missing = str(tmp_path / "line" / "gone.png")
    result = recalibrate_bundle(src, [*normal, missing], tmp_path / "out", RecalibrationOptions(max_errors=1, quantile=1.0))
    assert [f["input"] for f in result.normal.failed] == [missing]
    assert result.thresholds.image.value == pytest.approx(_engine_scores(src, normal).max())
    assert read_bundle(tmp_path / "out").manifest["recalibrations"][0]["images"]["n_failed"] == 1


def test_f1_on_labelled_images_matches_train_s_rule(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    normal = _images(tmp_path / "line", 4, seed=5)
    good, bad = _images(tmp_path / "val_good", 5, seed=7), _images(tmp_path / "val_bad", 5, seed=8)
    labelled = [(p, 0) for p in good] + [(p, 1) for p in bad]
    result = recalibrate_bundle(src, normal, tmp_path / "out", RecalibrationOptions(strategy="f1_validation"), validation=labelled)
    scores = _engine_scores(src, good + bad)
    expected = calibrate_f1_threshold(scores, np.array([0] * 5 + [1] * 5), source_split="validation", code_path="")
    assert result.thresholds.image.value == pytest.approx(expected.value)
    summary = result.to_dict()
    assert summary["validation"]["n_scored"] == 10
    assert set(summary["validation"]["at_new_threshold"]) >= {"precision", "recall", "false_positive_rate"}


def test_f1_without_labelled_images_is_refused(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    with pytest.raises(ValueError, match="labelled"):
        recalibrate_bundle(src, _images(tmp_path / "line", 2, seed=5), tmp_path / "out", RecalibrationOptions(strategy="f1_validation"))


def test_images_below_every_calibration_score_get_a_note(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    flat = tmp_path / "flat"
    flat.mkdir()
    paths = [str(flat / f"{i}.png") for i in range(3)]
    for p in paths:  # mid-grey: the tiny model's score is about 0, below every golden score
        assert cv2.imwrite(p, np.full((40, 48, 3), 128, np.uint8))
    result = recalibrate_bundle(src, paths, tmp_path / "out")
    assert any("fitted on" in n for n in result.notes)


def test_a_malformed_recalibration_entry_is_a_schema_problem(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    recalibrate_bundle(src, _images(tmp_path / "line", 3, seed=5), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "bundle.json").read_text())
    assert manifest_problems(manifest) == []
    manifest["recalibrations"][0]["from_digest"] = "sha256:xyz"
    del manifest["recalibrations"][0]["previous_thresholds"]["image"]["value"]
    problems = manifest_problems(manifest)
    assert any(p.startswith("recalibrations[0].from_digest:") for p in problems)
    assert any(p.startswith("recalibrations[0].previous_thresholds.image.value:") for p in problems)


# ----------------------------------------------------------------------------- a real export, through the CLI
@pytest.fixture(scope="module")
def padim_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from run_factory import export_small_padim

    return export_small_padim(tmp_path_factory.mktemp("padim"))


def _line_images(bundle: Path, tmp_path: Path) -> Path:
    """The synthetic set's good test images, which the run neither fitted nor calibrated on."""
    data = bundle.parent / "data"
    good = sorted(p for p in data.rglob("*.png") if "test" in p.parts and "good" in p.parts)
    assert good, f"no good test images under {data}"
    folder = tmp_path / "line"
    folder.mkdir()
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


def test_cli_recalibrates_a_real_export_and_the_result_validates(padim_bundle: Path, tmp_path: Path) -> None:
    line = _line_images(padim_bundle, tmp_path)
    out = tmp_path / "b_line"
    code, stdout, stderr = run_cli("recalibrate", "--bundle", str(padim_bundle), "--normal", str(line), "--out", str(out),
                                   "--quantile", "0.5", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    new = read_bundle(out)
    assert summary["digest"] == new.digest and summary["from_digest"] == read_bundle(padim_bundle).digest
    assert summary["thresholds"]["image"]["after"] == new.image_threshold.value
    assert summary["thresholds"]["pixel"]["recalibrated"] and new.pixel_threshold.source_split == RECALIBRATION_SPLIT
    assert new.pixel_threshold.quantile == read_bundle(padim_bundle).pixel_threshold.quantile
    code, stdout, _ = run_cli("validate", str(out), "--json")
    assert code == 0, stdout


def test_cli_keeps_the_pixel_threshold_when_asked(padim_bundle: Path, tmp_path: Path) -> None:
    line = _line_images(padim_bundle, tmp_path)
    code, stdout, stderr = run_cli("recalibrate", "--bundle", str(padim_bundle), "--normal", str(line), "--out",
                                   str(tmp_path / "o"), "--keep-pixel-threshold", "--json")
    assert code == 0, stderr
    assert not json.loads(stdout)["thresholds"]["pixel"]["recalibrated"]
    assert read_bundle(tmp_path / "o").manifest["thresholds"]["pixel"] == read_bundle(padim_bundle).manifest["thresholds"]["pixel"]


def test_cli_text_summary_and_inspect_name_the_change(padim_bundle: Path, tmp_path: Path) -> None:
    line = _line_images(padim_bundle, tmp_path)
    out = tmp_path / "o"
    code, stdout, stderr = run_cli("recalibrate", "--bundle", str(padim_bundle), "--normal", str(line), "--out", str(out))
    assert code == 0, stderr
    assert "image threshold:" in stdout and "→" in stdout and "parity fp32 under the new threshold" in stdout
    code, stdout, _ = run_cli("inspect", str(out))
    assert code == 0
    assert "recalibrated:" in stdout and "at the run's image threshold" in stdout


def test_cli_refuses_the_source_as_output_with_exit_8(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    normal = _images(tmp_path / "line", 2, seed=5)
    code, _, stderr = run_cli("recalibrate", "--bundle", str(src), "--normal", normal[0], "--out", str(src))
    assert code == 8 and "source bundle" in stderr


def test_cli_refuses_validation_images_among_the_normal_ones_with_exit_2(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    val = tmp_path / "val"
    good = _images(val / "good", 2, seed=5)
    _images(val / "scratch", 2, seed=6)
    code, _, stderr = run_cli("recalibrate", "--bundle", str(src), "--normal", good[0], "--validation-dir", str(val),
                              "--out", str(tmp_path / "o"))
    assert code == 2 and "also among --normal" in stderr


def test_cli_exit_1_when_an_input_fails(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    code, stdout, _ = run_cli("recalibrate", "--bundle", str(src), "--normal", str(tmp_path / "missing.png"), "--out",
                              str(tmp_path / "o"), "--json")
    assert code == 1 and json.loads(stdout)["exit_code"] == 1
    assert not (tmp_path / "o").exists()


def test_compare_of_the_two_bundles_results_blames_the_threshold(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    images = _images(tmp_path / "line", 6, seed=5)
    recalibrate_bundle(src, images, tmp_path / "b_line", RecalibrationOptions(quantile=0.5))
    for name, bundle in (("a", src), ("b", tmp_path / "b_line")):
        code, _, stderr = run_cli("infer", "--bundle", str(bundle), "--input", str(tmp_path / "line"), "--save-jsonl",
                                  str(tmp_path / f"{name}.jsonl"), "--json")
        assert code == 0, stderr
    code, stdout, _ = run_cli("compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert code == 0
    assert "6 identical" in stdout and "as after a recalibration" in stdout


def test_recalibrating_on_the_run_s_calibration_images_gives_the_run_s_thresholds(padim_bundle: Path, tmp_path: Path) -> None:
    run = padim_bundle.parent / "run"
    records = [json.loads(line) for line in (run / "per_image.jsonl").read_text().splitlines()]
    calibration = [r["input"] for r in records if r["split"] == "calibration"]
    assert calibration
    src = read_bundle(padim_bundle)
    result = recalibrate_bundle(padim_bundle, calibration, tmp_path / "o",
                                RecalibrationOptions(quantile=src.image_threshold.quantile))
    # the same rule on engine scores instead of eager ones: equal within the fp32 parity gate
    assert result.thresholds.image.value == pytest.approx(src.image_threshold.value, rel=1e-4)
    assert result.thresholds.pixel.value == pytest.approx(src.pixel_threshold.value, rel=1e-4)
    assert result.thresholds.pixel.n_values == src.pixel_threshold.n_values


def test_a_signed_source_gives_an_unsigned_copy_unless_a_key_signs_it(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="signatures need the 'cryptography' package (pip install 'pyimgano-deploy[sign]')")
    from pyimgano_deploy.bundles.signing import generate_keypair, sign_bundle

    private, public = generate_keypair(tmp_path / "keys")
    src = build_tiny_bundle(tmp_path / "b")
    sign_bundle(src, read_bundle(src).digest, str(private))
    normal = _images(tmp_path / "line", 3, seed=5)
    unsigned = recalibrate_bundle(src, normal, tmp_path / "u", RecalibrationOptions(public_key=str(public)))
    assert not (tmp_path / "u" / "bundle.sig").exists()
    assert any("signature" in n for n in unsigned.notes)
    signed = recalibrate_bundle(src, normal, tmp_path / "s", RecalibrationOptions(sign_key=str(private)))
    assert signed.signed
    assert read_bundle(tmp_path / "s", public_key=str(public)).digest == signed.digest


def test_too_few_images_for_the_quantile_get_a_note_and_enough_get_none(tmp_path: Path) -> None:
    src = build_tiny_bundle(tmp_path / "b")
    normal = _images(tmp_path / "line", 12, seed=5)
    few = recalibrate_bundle(src, normal, tmp_path / "o1", RecalibrationOptions(quantile=0.99))
    enough = recalibrate_bundle(src, normal, tmp_path / "o2", RecalibrationOptions(quantile=0.9))
    assert any("quantile of fewer than 100 images" in n for n in few.notes)
    assert not any("quantile of fewer" in n for n in enough.notes)


def test_for_the_image_max_rule_only_each_map_s_maximum_is_kept(tmp_path: Path) -> None:
    from pyimgano_deploy.runtimes.recalibration import score_images

    src = build_tiny_bundle(tmp_path / "b")
    paths = _images(tmp_path / "line", 4, seed=5)
    with load_bundle(src) as rt:
        full = [r.anomaly_map for r in rt.infer(paths, include_maps="model")]
        kept = score_images(rt, paths, [0] * 4, maps="image_max", options=RecalibrationOptions()).maps
        none = score_images(rt, paths, [0] * 4, maps=None, options=RecalibrationOptions()).maps
    assert [m.shape for m in kept] == [(1, 1)] * 4 and none == []
    assert [float(m[0, 0]) for m in kept] == [float(np.max(m)) for m in full]


def test_for_the_all_pixels_rule_a_bounded_sample_is_kept_the_one_train_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyimgano_deploy.postprocess.thresholds as thresholds
    from pyimgano_deploy.postprocess.thresholds import PixelSample
    from pyimgano_deploy.runtimes.recalibration import score_images

    src = build_tiny_bundle(tmp_path / "b")
    paths = _images(tmp_path / "line", 6, seed=5)
    with load_bundle(src) as rt:
        full = [np.asarray(r.anomaly_map, dtype=np.float32) for r in rt.infer(paths, include_maps="model")]
        cap = sum(m.size for m in full) // 3
        monkeypatch.setattr(thresholds, "MAX_PIXEL_VALUES", cap)
        kept = score_images(rt, paths, [0] * 6, maps="pixels", options=RecalibrationOptions()).maps
    assert len(kept) == 6 and sum(m.size for m in kept) <= cap
    np.testing.assert_array_equal(np.concatenate([m.ravel() for m in kept]), PixelSample.of(full, max_values=cap).values())

"""`infer --defects` end to end on a real exported bundle (random-init PatchCore, 64 px)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, rewrite_manifest
from click.testing import CliRunner
from run_factory import make_run_dir

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.cli import main
from pyimgano_deploy.postprocess import DEFECTS_PRESETS, DefectsConfig, calibrate_pixel_threshold, rle_to_mask
from pyimgano_deploy.runtimes import load_bundle, make_record

#: the bundle's defects block: fp40 with a few values changed, so flags visibly override it
BLOCK = DEFECTS_PRESETS["fp40"].with_overrides(min_area=4, border_ignore_px=2, max_regions=5)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``block``: bundle whose manifest carries BLOCK; ``plain``: same model, no
    defects block; ``images``: the generated test images (2 normal, 2 defective)."""
    from pyimgano_deploy.exporters.bundle_export import export_run

    root = tmp_path_factory.mktemp("defects")
    run = make_run_dir(root, size=64)
    cfg_path = run / "artifacts" / "infer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["defects"] = BLOCK.to_dict()
    cfg_path.write_text(json.dumps(cfg))
    block = export_run(run, root / "block", log=lambda m: None).bundle_dir
    plain = root / "plain"
    shutil.copytree(block, plain)
    rewrite_manifest(plain, lambda m: m.update(defects=None))
    return {"block": block, "plain": plain, "images": root / "data" / "surface" / "test"}


def _infer(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["infer", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _run(bundle: Path, images: Path, out: Path, *flags: str) -> tuple[dict, list[dict]]:
    code, stdout, stderr = _infer("--bundle", str(bundle), "--input", str(images), "--save-jsonl", str(out), "--json", *flags)
    assert code == 0, stderr
    return json.loads(stdout), [json.loads(line) for line in out.read_text().splitlines()]


def _low_threshold(bundle: Path) -> float:
    """A pixel threshold that yields regions on every image (median of the golden maps)."""
    return float(np.median(read_bundle(bundle).load_golden()["anomaly_map"]))


def test_bundle_block_masks_overlays_and_rle(env: dict[str, Path], tmp_path: Path) -> None:
    masks, overlays = tmp_path / "masks", tmp_path / "ov"
    summary, records = _run(env["block"], env["images"], tmp_path / "o.jsonl", "--defects", "--save-masks", str(masks),
                            "--save-overlays", str(overlays), "--rle")
    d = summary["defects"]
    assert d["base"] == "bundle" and d["overrides"] == {} and d["config"] == BLOCK.to_dict()
    bundle_cal = read_bundle(env["block"]).pixel_threshold
    assert d["pixel_threshold"]["source"] == "bundle" and d["pixel_threshold"]["value"] == pytest.approx(bundle_cal.value)
    assert d["pixel_threshold"]["calibration"] == bundle_cal.to_dict()
    assert d["masks_dir"] == masks.as_posix() and d["overlays_dir"] == overlays.as_posix() and d["rle"] is True
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert sum(len(r["defects"]["regions"]) for r in records) == d["regions"] >= 1
    for r in records:
        rec = r["defects"]
        mask = cv2.imread(rec["mask"], cv2.IMREAD_UNCHANGED)
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(rle_to_mask(rec["rle"]), (mask > 0).astype(np.uint8))
        assert sum(reg["area"] for reg in rec["regions"]) == int((mask > 0).sum())
        assert len(rec["regions"]) <= 5 and all(reg["area"] >= 4 for reg in rec["regions"])
        assert rec["pixel_threshold"] == pytest.approx(bundle_cal.value)
        assert rec["hysteresis_low"] == pytest.approx(0.9 * bundle_cal.value)
        assert rec["pixel_threshold_provenance"] == {"source": "bundle", "method": bundle_cal.method, "quantile": bundle_cal.quantile,
                                                     "source_split": "calibration", "n_images": bundle_cal.n_images}
        overlay = cv2.imread(rec["overlay"])
        original = cv2.imread(r["input"])
        assert overlay.shape == original.shape and not np.array_equal(overlay, original)
    assert sorted(p.name for p in masks.iterdir()) == [Path(r["defects"]["mask"]).name for r in records]


def test_flags_override_bundle_block(env: dict[str, Path], tmp_path: Path) -> None:
    thr = _low_threshold(env["block"])
    flags = ["--pixel-threshold", repr(thr), "--min-area", "1", "--max-regions", "1", "--border-ignore-px", "0",
             "--smoothing", "none", "--roi-xyxy-norm", "0", "0", "0.5", "1", "--hysteresis-low", repr(0.9 * thr), "--core-ratio", "0.5"]
    summary, records = _run(env["block"], env["images"], tmp_path / "o.jsonl", "--defects", *flags)
    expected = BLOCK.with_overrides(pixel_threshold_source="fixed", pixel_threshold_value=thr, min_area=1, max_regions=1,
                                    border_ignore_px=0, smoothing="none", roi_xyxy_norm=(0.0, 0.0, 0.5, 1.0),
                                    hysteresis_low=0.9 * thr, hysteresis_low_ratio=None, core_ratio=0.5)
    d = summary["defects"]
    assert d["base"] == "bundle" and d["config"] == expected.to_dict()
    assert d["overrides"]["min_area"] == 1 and d["overrides"]["roi_xyxy_norm"] == [0.0, 0.0, 0.5, 1.0]
    assert d["pixel_threshold"] == {"source": "fixed", "value": thr, "calibration": None}
    # the same settings through the Python runtime give the same regions
    with load_bundle(env["block"]) as rt:
        want = rt.infer([r["input"] for r in records], defects=expected)
    for r, w in zip(records, want):
        rec = r["defects"]
        assert rec["mask"] is None and "rle" not in rec and "overlay" not in rec
        assert rec["regions"] == w.defects["regions"] and len(rec["regions"]) == 1
        assert rec["regions"][0]["bbox_xyxy"][2] <= 32  # inside the left half (ROI)
        assert rec["pixel_threshold"] == thr and rec["hysteresis_low"] == pytest.approx(0.9 * thr)
        assert rec["pixel_threshold_provenance"] == {"source": "fixed"}


def test_preset_replaces_block_and_default_without_block(env: dict[str, Path], tmp_path: Path) -> None:
    summary, _ = _run(env["block"], env["images"], tmp_path / "a.jsonl", "--defects", "--defects-preset", "fp40")
    assert summary["defects"]["base"] == "preset:fp40" and summary["defects"]["config"] == DEFECTS_PRESETS["fp40"].to_dict()
    summary, records = _run(env["plain"], env["images"], tmp_path / "b.jsonl", "--defects", "--min-area", "3")
    assert summary["defects"]["base"] == "default"
    assert summary["defects"]["config"] == DefectsConfig(min_area=3).to_dict()
    assert all("defects" in r and r["defects"]["hysteresis_low"] is None for r in records)


def test_normal_quantile_from_golden_maps_with_provenance(env: dict[str, Path], tmp_path: Path) -> None:
    summary, records = _run(env["plain"], env["images"], tmp_path / "o.jsonl", "--defects",
                            "--pixel-threshold-strategy", "normal_quantile", "--pixel-normal-quantile", "0.9")
    golden = read_bundle(env["plain"]).load_golden()["anomaly_map"]
    want = calibrate_pixel_threshold(golden, quantile=0.9, source_split="golden")
    p = summary["defects"]["pixel_threshold"]
    assert p["source"] == "normal_quantile" and p["value"] == pytest.approx(want.value)
    assert p["value"] == pytest.approx(float(np.quantile(golden, 0.9)))
    cal = p["calibration"]
    assert cal["quantile"] == 0.9 and cal["source_split"] == "golden" and cal["n_images"] == len(golden)
    assert cal["n_values"] == golden.size and "normal pixels" in cal["method"]
    assert summary["defects"]["config"]["pixel_threshold_source"] == "normal_quantile"
    for r in records:
        assert r["defects"]["pixel_threshold"] == pytest.approx(want.value)
        assert r["defects"]["pixel_threshold_provenance"] == {
            "source": "normal_quantile", "method": want.method, "quantile": 0.9, "source_split": "golden", "n_images": len(golden)}


def test_runtime_api_resolves_normal_quantile_like_the_cli(env: dict[str, Path]) -> None:
    """``Runtime.infer(defects=cfg)`` with ``normal_quantile`` takes the quantile of the golden
    maps (the library's one resolver), never silently the bundle's pixel threshold."""
    config = DefectsConfig(pixel_threshold_source="normal_quantile", pixel_threshold_quantile=0.9)
    golden = read_bundle(env["plain"]).load_golden()["anomaly_map"]
    want = calibrate_pixel_threshold(golden, quantile=0.9, source_split="golden").value
    images = sorted(env["images"].rglob("*.png"))[:2]
    with load_bundle(env["plain"]) as rt:
        assert rt.bundle.pixel_threshold.value != pytest.approx(want)
        results = rt.infer(images, defects=config)
        assert rt.defects_threshold(config)[0] == pytest.approx(want)
    assert all(r.defects["pixel_threshold"] == pytest.approx(want) for r in results)


_TIMING = re.compile(rb', "timing_ms": [0-9.eE+-]+\}$')


def test_records_without_defects_unchanged(env: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "plain.jsonl"
    code, _, _ = _infer("--bundle", str(env["block"]), "--input", str(env["images"]), "--save-jsonl", str(out))
    assert code == 0
    lines = out.read_bytes().splitlines()
    with load_bundle(env["block"]) as rt:
        paths = [json.loads(line)["input"] for line in lines]
        results = rt.infer(paths)
    for i, (line, path, res) in enumerate(zip(lines, paths, results)):
        expected = json.dumps(make_record(i, path, res, timing_ms=0.0, bundle_digest=rt.bundle.digest,
                                          resolved_path=os.path.realpath(path)),
                              ensure_ascii=False).encode()
        assert _TIMING.sub(b"}", line) == _TIMING.sub(b"}", expected)
        assert b'"defects"' not in line
    # with --defects the records only gain the 'defects' object
    with_defects = tmp_path / "d.jsonl"
    _infer("--bundle", str(env["block"]), "--input", str(env["images"]), "--save-jsonl", str(with_defects), "--defects")
    for a, b in zip(lines, with_defects.read_bytes().splitlines()):
        ra, rb = json.loads(a), json.loads(b)
        assert "defects" in rb
        rb.pop("defects")
        ra.pop("timing_ms"), rb.pop("timing_ms")
        assert ra == rb


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--min-area", "3"], "need --defects"),
        (["--defects", "--pixel-threshold", "1", "--pixel-threshold-strategy", "normal_quantile"], "cannot be combined"),
        (["--defects", "--pixel-threshold-strategy", "bundle", "--pixel-normal-quantile", "0.9"], "only applies"),
        (["--defects", "--pixel-normal-quantile", "0.9"], "needs --pixel-threshold-strategy normal_quantile"),
        (["--defects", "--pixel-threshold-strategy", "fixed"], "pixel_threshold_value"),
        (["--defects", "--roi-xyxy-norm", "0", "0", "1.5", "1"], "[0, 1]"),
        (["--defects", "--roi-xyxy-norm", "0.5", "0", "0.4", "1"], "x2 > x1"),
        (["--defects", "--smoothing-ksize", "4"], "must be odd"),
        (["--defects", "--pixel-threshold", "1", "--hysteresis-low", "2"], "above the pixel threshold"),
        (["--defects", "--pixel-normal-quantile", "0"], "0.0<x<=1.0"),
    ],
)
def test_bad_flag_combinations(env: dict[str, Path], tmp_path: Path, flags: list[str], message: str) -> None:
    out = tmp_path / "o.jsonl"
    code, _, err = _infer("--bundle", str(env["block"]), "--input", str(env["images"]), "--save-jsonl", str(out), *flags)
    assert code == 2 and message in " ".join(err.split()), err
    assert not out.exists()


def test_bundle_without_pixel_threshold_needs_a_strategy(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "tiny")  # thresholds.pixel is null
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.full((32, 40, 3), 90, np.uint8))
    args = ["--bundle", str(bundle), "--input", str(image), "--save-jsonl", str(tmp_path / "o.jsonl"), "--defects"]
    code, _, err = _infer(*args)
    assert code == 2 and "no pixel threshold" in err and "--pixel-threshold" in err
    code, stdout, _ = _infer(*args, "--pixel-threshold-strategy", "normal_quantile", "--json")
    assert code == 0 and json.loads(stdout)["defects"]["pixel_threshold"]["source"] == "normal_quantile"


def test_output_folder_that_cannot_be_created(env: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _infer("--bundle", str(env["block"]), "--input", str(env["images"]), "--save-jsonl",
                          str(tmp_path / "o.jsonl"), "--defects", "--save-masks", str(blocker / "masks"))
    assert code == 2 and "--save-masks: cannot create" in err

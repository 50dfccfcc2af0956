"""A tiled (``industrial-adapt-highres``) bundle: the torch-free runtime scores exactly like the
workbench's eager tiled scoring (same ``runtimes.tiling`` code), end to end through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bundle_factory import build_tiny_bundle, random_images, rewrite_manifest, torch_reference
from pyimgano_deploy.cli import main
from pyimgano_deploy.runtimes.errors import EngineRunError
from pyimgano_deploy.runtimes.loader import load_bundle
from pyimgano_deploy.runtimes.tiling import to_model_scale

TILING = {"tile": 128, "stride": 96}
SIZE = 256  # 3 x 3 tiles of 128 at stride 96
MODEL_HW = (64, 64)


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Any]]]:
    """(run dir, bundle dir, the run's per_image.jsonl records)."""
    base = tmp_path_factory.mktemp("tiled")
    run, bundle = base / "run", base / "bundle"
    _cli("train", "--dataset", "synthetic", "--recipe", "industrial-adapt-highres", "--out", str(run),
         "--no-progress", "--json", "--no-report", "--save-maps",
         "--set", f"dataset.size={SIZE}", "--set", "dataset.n_train=12", "--set", "dataset.n_test=6",
         "--set", f"tiling={json.dumps(TILING)}",
         "--model-kwargs", json.dumps({"pretrained": False, "image_size": MODEL_HW[0]}))
    _cli("export", "--run", str(run), "--out", str(bundle), "--json")
    records = [json.loads(line) for line in (run / "per_image.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} == {"calibration", "test"}
    return run, bundle, records


def _tol(records: list[dict[str, Any]]) -> float:
    return 1e-4 * max(1.0, abs(records[0]["threshold"]))


def test_cli_infer_scores_equal_workbench_tiled_scores(tiled: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    run, bundle, records = tiled
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["tiling"]["tile"] == 128 and manifest["tiling"]["stride"] == 96
    listing = tmp_path / "inputs.txt"
    listing.write_text("".join(r["input"] + "\n" for r in records))
    jsonl, maps = tmp_path / "out.jsonl", tmp_path / "maps"
    # batch 5 with 9 tiles per image: engine batches mix tiles of different images
    _cli("infer", "--bundle", str(bundle), "--input", f"@{listing}", "--save-jsonl", str(jsonl),
         "--save-maps", str(maps), "--batch-size", "5", "--json")
    got = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [g["input"] for g in got] == [r["input"] for r in records]
    assert all(g["status"] == "ok" for g in got)
    d_score = np.abs(np.array([g["score"] for g in got]) - np.array([r["score"] for r in records]))
    assert d_score.max() <= _tol(records), d_score.max()
    assert [g["label"] for g in got] == [r["label"] for r in records]
    assert all(g["threshold"] == r["threshold"] for g, r in zip(got, records))
    for g, r in zip(got, records):  # full-resolution map; at model scale it is the run's saved map
        full = np.load(g["anomaly_map"]["path"], allow_pickle=False)
        assert full.shape == (SIZE, SIZE) and g["anomaly_map"]["shape"] == [SIZE, SIZE]
        want = np.load(run / r["map"], allow_pickle=False)
        assert np.abs(to_model_scale(full, MODEL_HW, TILING["tile"]) - want).max() <= _tol(records)


def test_python_api_batching_workers_and_arrays_agree(tiled: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, bundle, records = tiled
    from pyimgano_deploy.inputs import read_image

    want = np.array([r["score"] for r in records])
    for batch_size, workers in ((1, 0), (7, 2)):
        rt = load_bundle(bundle, batch_size=batch_size, num_workers=workers)
        assert rt.tiled is not None and rt.engine_info["tiling"]["tile"] == 128
        res = rt.infer([r["input"] for r in records])
        assert np.abs(np.array([x.score for x in res]) - want).max() <= _tol(records)
        assert all(x.anomaly_map is None for x in res)
    arrays = [read_image(r["input"]) for r in records[:2]]
    res = rt.infer(np.stack(arrays), input_format="rgb_u8_hwc", include_maps=True)
    assert np.abs(np.array([x.score for x in res]) - want[:2]).max() <= _tol(records)
    assert res[0].anomaly_map.shape == (SIZE, SIZE) and res[0].anomaly_map.dtype == np.float32


def test_model_scale_maps_of_a_tiled_bundle_are_the_runs_maps(tiled: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    run, bundle, records = tiled
    with load_bundle(bundle) as rt:
        res = rt.infer([r["input"] for r in records[:3]], include_maps="model")
    for got, r in zip(res, records):  # model scale: the image at model input / tile (256 × 64 / 128)
        want = np.load(run / r["map"], allow_pickle=False)
        assert got.anomaly_map.shape == want.shape == (SIZE * MODEL_HW[0] // TILING["tile"],) * 2
        assert np.abs(got.anomaly_map - want).max() <= _tol(records)


class _StaticSession:
    """Wraps a real session as a static-batch engine; fails on call number ``fail_call``."""

    kind, thread_safe, providers = "fake", False, ["fake"]

    def __init__(self, inner: Any, static: int, fail_call: int | None = None) -> None:
        self.inner, self.static_batch, self.fail_call, self.calls = inner, static, fail_call, 0

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert len(batch) == self.static_batch
        self.calls += 1
        if self.calls == self.fail_call:
            raise EngineRunError("device lost")
        return self.inner.run(batch)


def test_static_batch_errors_and_defects(tiled: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    _, bundle, records = tiled
    from pyimgano_deploy.postprocess.defects import DefectsConfig
    from pyimgano_deploy.runtimes.runtime import Runtime

    rt = load_bundle(bundle)
    paths = [r["input"] for r in records[:3]]
    static = Runtime(rt.bundle, _StaticSession(rt.session, 4), batch_size=4)
    res = static.infer([paths[0], str(tmp_path / "missing.png"), *paths[1:]], defects=DefectsConfig())
    assert [x.ok for x in res] == [True, False, True, True] and res[1].error.stage == "read"
    ok = [res[0], res[2], res[3]]
    assert np.abs(np.array([x.score for x in ok]) - [r["score"] for r in records[:3]]).max() <= _tol(records)
    assert all(x.defects is not None for x in ok)
    # 27 tiles in engine batches of 4: call 3 holds tiles 8..11 → images 0 (tile 8) and 1 (tiles 9..11)
    failing = Runtime(rt.bundle, _StaticSession(rt.session, 4, fail_call=3), batch_size=4)
    res = failing.infer(paths)
    assert [x.ok for x in res] == [False, False, True]
    assert res[0].error.stage == "inference" and res[0].error.type == "EngineRunError" and res[0].score is None


def test_validate_passes_on_the_tiled_bundle(tiled: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    _, bundle, _ = tiled
    report = json.loads(_cli("validate", str(bundle), "--json").stdout)
    assert report["ok"] is True and report["engine"]["tiling"]["stride"] == 96


def test_recalibrating_on_the_calibration_split_gives_the_runs_thresholds(tiled: tuple[Path, Path, list[dict[str, Any]]],
                                                                          tmp_path: Path) -> None:
    from pyimgano_deploy.bundles import read_bundle
    from pyimgano_deploy.runtimes.recalibration import RecalibrationOptions, recalibrate_bundle

    _, bundle, records = tiled
    src = read_bundle(bundle)
    calibration = [r["input"] for r in records if r["split"] == "calibration"]
    result = recalibrate_bundle(bundle, calibration, tmp_path / "o", RecalibrationOptions(quantile=src.image_threshold.quantile))
    assert result.thresholds.image.value == pytest.approx(src.image_threshold.value, rel=1e-4)
    assert src.pixel_threshold is not None  # tiled maps at model scale, as the workbench calibrated them
    assert result.thresholds.pixel.value == pytest.approx(src.pixel_threshold.value, rel=1e-4)


def test_bad_tiling_block_is_an_invalid_bundle(tiled: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    _, bundle, _ = tiled
    from pyimgano_deploy.bundles import InvalidBundleError

    copy = tmp_path / "bad"
    shutil.copytree(bundle, copy)
    rewrite_manifest(copy, lambda m: m["tiling"].update(stride=500))
    with pytest.raises(InvalidBundleError, match="tiling"):
        load_bundle(copy)


def test_edited_tiling_fails_the_pipeline_check(tiled: tuple[Path, Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    """A valid but different tiling block (re-hashed, so every checksum matches) changes the
    scores: validate's whole-pipeline check on the golden source files catches it (exit 6)."""
    _, bundle, _ = tiled
    copy = tmp_path / "edited"
    shutil.copytree(bundle, copy)
    rewrite_manifest(copy, lambda m: m["tiling"].update(stride=64))
    result = CliRunner().invoke(main, ["validate", str(copy), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 6, result.stdout
    assert [c["status"] for c in report["checks"]][-2:] == ["pass", "fail"]
    assert "preprocessing or tiling" in report["checks"][-1]["detail"]


def test_non_tiled_bundle_is_unaffected(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "plain")
    rt = load_bundle(bundle, batch_size=3)
    assert rt.tiled is None and rt.engine_info["tiling"] is None
    images = random_images(4, 50, 70, seed=3)
    res = rt.infer(images, input_format="rgb_u8_hwc", include_maps=True)
    want, _ = torch_reference(rt.preprocess.batch(list(images)))
    assert np.abs(np.array([x.score for x in res]) - want).max() < 1e-5
    assert res[0].anomaly_map.shape == (50, 70)


def test_tiled_bundle_golden_set_holds_tiles_not_whole_images(tiled: tuple[Path, Path, list[dict[str, Any]]]) -> None:
    from pyimgano_deploy.bundles import read_bundle
    from pyimgano_deploy.inputs import read_image
    from pyimgano_deploy.runtimes.tiling import TilingSpec, tile_image

    run, bundle, records = tiled
    b = read_bundle(bundle)
    golden = b.load_golden()["images"]
    pre = b.preprocess
    spec = TilingSpec.from_dict(b.manifest["tiling"])
    calib = [r["input"] for r in records if r["split"] == "calibration"]
    whole = {pre(read_image(p)).tobytes() for p in calib}
    tiles = {pre(t).tobytes() for p in calib for t in tile_image(read_image(p), spec)[1]}
    assert all(g.tobytes() in tiles and g.tobytes() not in whole for g in golden)

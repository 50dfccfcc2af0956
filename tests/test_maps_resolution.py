"""Anomaly maps at the model's scale (``include_maps="model"``, ``infer --maps-resolution model``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import jsonl_records, run_cli
from run_factory import make_run_dir

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.runtimes.loader import load_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    root = tmp_path_factory.mktemp("maps")
    run = make_run_dir(root, "vision_padim", size=48, d=16)
    return export_run(run, root / "bundle", ExportOptions(golden=4), log=lambda m: None).bundle_dir


def test_model_scale_maps_are_the_engines_maps_of_the_golden_images(bundle: Path) -> None:
    golden = read_bundle(bundle).load_golden()
    with load_bundle(bundle) as rt:
        results = rt.infer(list(golden["images"]), input_format="rgb_u8_hwc", include_maps="model")
    got = np.stack([r.anomaly_map for r in results])
    assert got.shape == golden["anomaly_map"].shape and got.dtype == np.float32
    np.testing.assert_allclose(got, golden["anomaly_map"], rtol=1e-4, atol=1e-4 * float(np.abs(golden["anomaly_map"]).max()))


def test_original_size_maps_are_what_true_asks_for_and_a_bad_value_is_refused(bundle: Path, tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    with load_bundle(bundle) as rt:
        original = rt.infer([image], input_format="rgb_u8_hwc", include_maps="original")[0].anomaly_map
        as_true = rt.infer([image], input_format="rgb_u8_hwc", include_maps=True)[0].anomaly_map
        model = rt.infer([image], input_format="rgb_u8_hwc", include_maps="model")[0].anomaly_map
        assert original.shape == (60, 90) and np.array_equal(original, as_true)
        assert model.shape == rt.bundle.input_size
        np.testing.assert_array_equal(rt.map_to_original(model, (60, 90)), original)  # one map, two sizes
        with pytest.raises(ValueError, match="include_maps"):
            rt.infer([image], input_format="rgb_u8_hwc", include_maps="full")


def test_infer_saves_model_scale_maps_and_says_so_in_each_record(bundle: Path, tmp_path: Path) -> None:
    import cv2

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((60, 90, 3), 40 * i, np.uint8))
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(tmp_path), "--save-jsonl", str(tmp_path / "m.jsonl"),
                           "--save-maps", str(tmp_path / "maps_m"), "--maps-resolution", "model")
    assert code == 0, err
    h, w = read_bundle(bundle).input_size
    for r in jsonl_records(tmp_path / "m.jsonl"):
        assert r["anomaly_map"]["resolution"] == "model" and r["anomaly_map"]["shape"] == [h, w]
        assert np.load(r["anomaly_map"]["path"]).shape == (h, w)
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(tmp_path / "0.png"), "--save-jsonl", str(tmp_path / "o.jsonl"),
                           "--save-maps", str(tmp_path / "maps_o"))
    assert code == 0, err
    assert jsonl_records(tmp_path / "o.jsonl")[0]["anomaly_map"] == {"path": (tmp_path / "maps_o" / "000000_0.npy").as_posix(),
                                                                     "shape": [60, 90], "dtype": "float32"}  # as before


def test_model_scale_maps_and_overlays_exclude_each_other(bundle: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(tmp_path), "--save-jsonl", str(tmp_path / "x.jsonl"),
                           "--maps-resolution", "model", "--defects", "--save-overlays", str(tmp_path / "ov"))
    assert code == 2 and "--save-overlays" in err
    assert not (tmp_path / "x.jsonl").exists()


def test_float16_maps_halve_the_bytes_and_keep_three_digits(bundle: Path, tmp_path: Path) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.random.default_rng(1).integers(0, 256, size=(60, 90, 3), dtype=np.uint8))
    common = ("infer", "--bundle", str(bundle), "--input", str(tmp_path / "a.png"), "--json")
    code, out32, err = run_cli(*common, "--save-jsonl", str(tmp_path / "32.jsonl"), "--save-maps", str(tmp_path / "m32"))
    assert code == 0, err
    code, out16, err = run_cli(*common, "--save-jsonl", str(tmp_path / "16.jsonl"), "--save-maps", str(tmp_path / "m16"),
                               "--maps-dtype", "float16")
    assert code == 0, err
    assert json.loads(out16)["maps_dtype"] == "float16" and json.loads(out32)["maps_dtype"] == "float32"
    (r16,), (r32,) = jsonl_records(tmp_path / "16.jsonl"), jsonl_records(tmp_path / "32.jsonl")
    m16, m32 = np.load(r16["anomaly_map"]["path"]), np.load(r32["anomaly_map"]["path"])
    assert r16["anomaly_map"]["dtype"] == "float16" and m16.dtype == np.float16 and m16.nbytes * 2 == m32.nbytes
    np.testing.assert_allclose(m16.astype(np.float32), m32, rtol=1e-3, atol=1e-3 * float(np.abs(m32).max()))
    assert r16["score"] == r32["score"]  # the dtype of a saved map never touches the score


def test_a_map_beyond_float16s_range_is_an_error_not_an_inf(tmp_path: Path) -> None:
    from pyimgano_deploy.cli.maps_output import MapsOutput

    with pytest.raises(ValueError, match="float16's largest"):
        MapsOutput(tmp_path, dtype="float16").save(0, "x.png", np.full((2, 2), 7e4, np.float32))
    assert not list(tmp_path.iterdir())


def test_map_options_without_save_maps_are_a_usage_error(bundle: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(tmp_path), "--save-jsonl", str(tmp_path / "u.jsonl"),
                           "--maps-dtype", "float16")
    assert code == 2 and "--maps-dtype describes the saved maps" in err

"""bundles.writer / bundles.reader: a small fake bundle, written, read, then tampered with."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bundle_factory import threshold_record
from pyimgano_deploy.bundles import (
    SCHEMA_VERSION,
    Bundle,
    BundleError,
    ChecksumMismatchError,
    InvalidBundleError,
    config_sha256,
    read_bundle,
    save_golden,
    sha256_file,
    write_manifest,
)

SIZE = 32


def _threshold(value: float) -> dict:
    return threshold_record(value, n_images=6)


def _manifest(preprocess: dict) -> dict:
    parity = {
        "n_images": 3, "max_abs_score": 1e-6, "max_rel_score": 1e-7, "max_abs_map": 2e-6, "map_range": [0.0, 3.5],
        "labels_identical": True, "tolerance": {"score_abs": 1e-4, "map_abs": 1e-3},
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "toolkit": {"name": "pyimgano-deploy", "version": "0.1.0"},
        "created_at": "2024-05-01T12:00:00Z",
        "model": {"name": "padim", "family": "gaussian", "parameters": {"backbone": "resnet18"}},
        "input": {"name": "images", "layout": "NHWC", "dtype": "uint8", "channels": "RGB",
                  "height": SIZE, "width": SIZE, "preprocess": preprocess},
        "outputs": [
            {"name": "score", "shape": ["batch"], "dtype": "float32"},
            {"name": "anomaly_map", "shape": ["batch", SIZE, SIZE], "dtype": "float32"},
        ],
        "engines": [{"file": "model.onnx", "format": "onnx", "precision": "fp32", "opset": 17,
                     "external_data": False, "batch": {"min": 1, "opt": 4, "max": 16, "dynamic": True}}],
        "thresholds": {"image": _threshold(0.75), "pixel": _threshold(0.5)},
        "defects": {"min_area": 4},
        "tiling": None,
        "environment": {"python": "3.11", "packages": {"numpy": np.__version__}},
        "source_run": {"path": "runs/demo", "config_sha256": config_sha256({"model": "padim"}),
                       "metrics": {"image_auroc": 0.98}},
        "parity": {"fp32": parity},
        "golden": {"file": "golden.npz", "n_images": 3},
    }


def _make_bundle(root: Path, preprocess: dict | None = None) -> tuple[Path, dict]:
    preprocess = preprocess or {"size": [SIZE, SIZE], "interpolation": "linear", "center_crop": None}
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(bytes(range(256)) * 4)
    (root / "engines").mkdir(exist_ok=True)
    (root / "engines" / "notes.txt").write_text("built elsewhere\n")
    infer_config = {
        "schema_version": "1.0", "model": {"name": "padim", "family": "gaussian"}, "preprocess": preprocess,
        "thresholds": {"image": _threshold(0.75), "pixel": _threshold(0.5)}, "tiling": None, "defects": None,
    }
    (root / "infer_config.json").write_text(json.dumps(infer_config, indent=2, sort_keys=True) + "\n")
    rng = np.random.default_rng(0)
    save_golden(
        root / "golden.npz",
        rng.integers(0, 256, size=(3, SIZE, SIZE, 3), dtype=np.uint8),
        rng.random(3, dtype=np.float32),
        rng.random((3, SIZE, SIZE), dtype=np.float32),
    )
    manifest = _manifest(preprocess)
    return root, manifest


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    root, manifest = _make_bundle(tmp_path / "b")
    write_manifest(root, manifest)
    return root


def _edit_manifest(root: Path, edit) -> None:
    data = json.loads((root / "bundle.json").read_text())
    edit(data)
    (root / "bundle.json").write_text(json.dumps(data, indent=2))


def _invalid(root: Path, **kwargs) -> str:
    with pytest.raises(InvalidBundleError) as info:
        read_bundle(root, **kwargs)
    assert info.value.exit_code == 3 and isinstance(info.value, BundleError)
    assert not isinstance(info.value, ChecksumMismatchError)
    return str(info.value)


# ----------------------------------------------------------------------------- happy path
def test_write_then_read(bundle_dir: Path):
    written = json.loads((bundle_dir / "bundle.json").read_text())
    assert [f["path"] for f in written["files"]] == ["engines/notes.txt", "golden.npz", "infer_config.json", "model.onnx"]
    entry = written["files"][3]
    assert entry == {"path": "model.onnx", "sha256": sha256_file(bundle_dir / "model.onnx"), "bytes": 1024}
    b = read_bundle(bundle_dir)
    assert isinstance(b, Bundle) and b.checksums_verified
    assert b.manifest == written
    assert b.root == bundle_dir.resolve()
    assert b.engines[0]["file"] == "model.onnx"
    assert b.file("model.onnx") == bundle_dir.resolve() / "model.onnx"
    assert b.has_file("golden.npz") and not b.has_file("model.fp16.onnx")
    with pytest.raises(InvalidBundleError, match="model.fp16.onnx"):
        b.file("model.fp16.onnx")
    assert b.image_threshold.value == 0.75 and b.image_threshold.n_images == 6
    assert b.pixel_threshold.value == 0.5
    assert b.defects_block == {"min_area": 4} and b.tiling_block is None
    golden = b.load_golden()
    assert golden["images"].shape == (3, SIZE, SIZE, 3)
    assert read_bundle(bundle_dir / "bundle.json").manifest == written


def test_pixel_threshold_null(tmp_path: Path):
    root, manifest = _make_bundle(tmp_path / "b")
    manifest["thresholds"]["pixel"] = None
    cfg = json.loads((root / "infer_config.json").read_text())
    cfg["thresholds"]["pixel"] = None
    (root / "infer_config.json").write_text(json.dumps(cfg))
    write_manifest(root, manifest)
    assert read_bundle(root).pixel_threshold is None


def test_write_is_deterministic_and_does_not_mutate_input(tmp_path: Path):
    root, manifest = _make_bundle(tmp_path / "b")
    snapshot = json.dumps(manifest, sort_keys=True)
    full = write_manifest(root, manifest)
    first = (root / "bundle.json").read_bytes()
    assert json.dumps(manifest, sort_keys=True) == snapshot and "files" not in manifest
    # numpy scalars and tuples serialise the same; a stale "files" key is replaced
    manifest["parity"]["fp32"]["max_abs_score"] = np.float64(1e-6)
    manifest["input"]["height"] = np.int64(SIZE)
    manifest["outputs"][1]["shape"] = ("batch", SIZE, SIZE)
    manifest["files"] = [{"path": "stale", "sha256": "0" * 64, "bytes": 0}]
    assert write_manifest(root, manifest) == full
    assert (root / "bundle.json").read_bytes() == first
    assert first.endswith(b"}\n") and b'\n  "created_at"' in first
    other, manifest2 = _make_bundle(tmp_path / "c")
    write_manifest(other, manifest2)
    assert (other / "bundle.json").read_bytes() == first  # same content → same bytes, golden included


def test_writer_refuses_symlinks_and_bad_manifest(tmp_path: Path):
    root, manifest = _make_bundle(tmp_path / "b")
    (tmp_path / "outside.bin").write_bytes(b"x")
    os.symlink(tmp_path / "outside.bin", root / "extra.bin")
    with pytest.raises(InvalidBundleError, match=r"extra\.bin: is a symlink"):
        write_manifest(root, manifest)
    (root / "extra.bin").unlink()
    manifest["engines"][0]["precision"] = "int4"
    with pytest.raises(InvalidBundleError, match=r"engines\[0\]\.precision"):
        write_manifest(root, manifest)
    assert not (root / "bundle.json").exists()
    assert not list(root.glob(".bundle.json*"))
    with pytest.raises(InvalidBundleError, match="not found"):
        write_manifest(tmp_path / "nope", manifest)


# ----------------------------------------------------------------------------- checksums
def test_flipped_byte_is_checksum_mismatch(bundle_dir: Path):
    model = bundle_dir / "model.onnx"
    expected = sha256_file(model)
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    actual = sha256_file(model)
    with pytest.raises(ChecksumMismatchError) as info:
        read_bundle(bundle_dir)
    msg = str(info.value)
    assert info.value.exit_code == 4
    assert "model.onnx" in msg and expected in msg and actual in msg
    assert info.value.mismatches == [{"path": "model.onnx", "expected_bytes": 1024, "actual_bytes": 1024,
                                      "expected_sha256": expected, "actual_sha256": actual}]
    b = read_bundle(bundle_dir, verify_checksums=False)  # hashing skipped
    assert not b.checksums_verified


def test_size_mismatch(bundle_dir: Path):
    with open(bundle_dir / "infer_config.json", "a") as fh:
        fh.write(" ")
    for verify in (True, False):  # size is checked even without hashing
        with pytest.raises(ChecksumMismatchError, match=r"infer_config\.json: size mismatch, expected \d+ bytes"):
            read_bundle(bundle_dir, verify_checksums=verify)


# ----------------------------------------------------------------------------- structure
def test_missing_file(bundle_dir: Path):
    (bundle_dir / "golden.npz").unlink()
    for verify in (True, False):
        assert "golden.npz: listed in bundle.json but missing" in _invalid(bundle_dir, verify_checksums=verify)


def test_missing_dir_manifest_and_bad_json(tmp_path: Path, bundle_dir: Path):
    assert "bundle directory not found" in _invalid(tmp_path / "nope")
    text = (bundle_dir / "bundle.json").read_text()
    (bundle_dir / "bundle.json").write_text(text[:-20])
    msg = _invalid(bundle_dir)
    assert "bundle.json" in msg and "invalid JSON at line" in msg
    (bundle_dir / "bundle.json").write_text("[]")
    assert "(root): expected a JSON object" in _invalid(bundle_dir)
    (bundle_dir / "bundle.json").unlink()
    assert "bundle.json not found" in _invalid(bundle_dir)


def test_threshold_nan_and_missing_key(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda m: m["thresholds"]["image"].__setitem__("value", float("nan")))
    msg = _invalid(bundle_dir)
    assert "bundle.json" in msg and "thresholds.image.value: expected a finite number, got NaN" in msg
    _edit_manifest(bundle_dir, lambda m: m["thresholds"]["image"].__setitem__("value", 0.75))
    read_bundle(bundle_dir)
    _edit_manifest(bundle_dir, lambda m: m["engines"][0].pop("batch"))
    assert "engines[0].batch: expected an object, got nothing" in _invalid(bundle_dir)


@pytest.mark.parametrize(
    "bad_path,fragment",
    [("../x", "contains '..'"), ("/tmp/x", "is absolute"), ("engines\\x.plan", "backslash"), ("sub/../../x", "'..'")],
)
def test_paths_leaving_the_bundle(bundle_dir: Path, bad_path: str, fragment: str):
    entry = {"path": bad_path, "sha256": "0" * 64, "bytes": 0}
    _edit_manifest(bundle_dir, lambda m: m["files"].append(entry))
    msg = _invalid(bundle_dir, verify_checksums=False)
    assert "files[4].path" in msg and repr(bad_path) in msg and fragment in msg


def test_engine_path_absolute(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda m: m["engines"][0].__setitem__("file", str(bundle_dir / "model.onnx")))
    assert "engines[0].file" in _invalid(bundle_dir)


def test_schema_major_refused_minor_accepted(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda m: m.__setitem__("schema_version", "1.9"))
    read_bundle(bundle_dir)
    _edit_manifest(bundle_dir, lambda m: m.__setitem__("schema_version", "2.0"))
    msg = _invalid(bundle_dir)
    assert "'2.0' is not supported" in msg and "major version 1" in msg


def test_unlisted_file(bundle_dir: Path):
    (bundle_dir / "engines" / "rogue.plan").write_bytes(b"\0" * 8)
    msg = _invalid(bundle_dir, verify_checksums=False)
    assert "engines/rogue.plan: unlisted file" in msg


def test_symlink_pointing_outside(tmp_path: Path, bundle_dir: Path):
    outside = tmp_path / "model_copy.onnx"
    outside.write_bytes((bundle_dir / "model.onnx").read_bytes())  # same bytes: checksum alone would pass
    (bundle_dir / "model.onnx").unlink()
    os.symlink(outside, bundle_dir / "model.onnx")
    msg = _invalid(bundle_dir)
    assert "model.onnx: resolves to" in msg and "outside the bundle" in msg
    os.symlink(tmp_path, bundle_dir / "escape")  # an unlisted directory symlink
    assert "escape: unlisted file" in _invalid(bundle_dir)


def test_symlink_inside_is_allowed(bundle_dir: Path):
    (bundle_dir / "real.onnx").write_bytes((bundle_dir / "model.onnx").read_bytes())
    (bundle_dir / "model.onnx").unlink()
    os.symlink("real.onnx", bundle_dir / "model.onnx")
    _edit_manifest(bundle_dir, lambda m: m["files"].append(
        {"path": "real.onnx", "sha256": sha256_file(bundle_dir / "real.onnx"), "bytes": 1024}))
    read_bundle(bundle_dir)


def test_engine_must_be_listed(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda m: m["engines"][0].__setitem__("file", "model.fp16.onnx"))
    assert "engines[0].file: 'model.fp16.onnx' is not listed in files" in _invalid(bundle_dir)


def test_infer_config_threshold_disagreement(tmp_path: Path):
    root, manifest = _make_bundle(tmp_path / "b")
    manifest["thresholds"]["image"]["value"] = 0.8
    write_manifest(root, manifest)
    msg = _invalid(root)
    assert "infer_config.json: thresholds.image.value is 0.75" in msg and "0.8" in msg


def test_golden_disagrees_with_manifest(tmp_path: Path):
    root, manifest = _make_bundle(tmp_path / "b")
    manifest["golden"]["n_images"] = 5
    write_manifest(root, manifest)
    with pytest.raises(InvalidBundleError, match="golden.n_images says 5"):
        read_bundle(root).load_golden()


def test_preprocess_from_manifest(tmp_path: Path):
    mod = pytest.importorskip("pyimgano_deploy.inputs.preprocess")
    pre = mod.Preprocess(size=(SIZE, SIZE), interpolation="area")
    root, manifest = _make_bundle(tmp_path / "b", preprocess=pre.to_dict())
    write_manifest(root, manifest)
    b = read_bundle(root)
    assert b.preprocess == pre
    assert b.preprocess.output_size == (SIZE, SIZE)


def test_bad_preprocess_is_invalid_bundle(tmp_path: Path):
    pytest.importorskip("pyimgano_deploy.inputs.preprocess")
    root, manifest = _make_bundle(tmp_path / "b", preprocess={"size": [SIZE, SIZE], "bogus": 1})
    write_manifest(root, manifest)
    with pytest.raises(InvalidBundleError, match=r"input\.preprocess: .*bogus"):
        read_bundle(root).preprocess

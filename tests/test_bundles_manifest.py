"""bundles.manifest: schema validation, canonical hashing, path safety."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from bundle_factory import threshold_record
from pyimgano_deploy.bundles import SCHEMA_VERSION, InvalidBundleError, canonical_json, config_sha256  # noqa: I001
from pyimgano_deploy.bundles import manifest_problems, relative_path_problem, utc_now_iso, validate_manifest

HEX = "ab" * 32


def _threshold(value: float) -> dict:
    return threshold_record(value, n_images=10)


def _manifest() -> dict:
    parity = {
        "n_images": 4,
        "max_abs_score": 1e-6,
        "max_rel_score": 1e-7,
        "max_abs_map": 2e-6,
        "map_range": 3.5,
        "labels_identical": True,
        "tolerance": {"score_abs": 1e-4, "map_abs": 1e-3},
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "toolkit": {"name": "pyimgano-deploy", "version": "0.1.0"},
        "created_at": "2024-05-01T12:00:00Z",
        "model": {"name": "patchcore", "family": "memory_bank", "parameters": {"k": 1}},
        "input": {
            "name": "images", "layout": "NHWC", "dtype": "uint8", "channels": "RGB", "height": 32, "width": 32,
            "preprocess": {"size": [32, 32], "interpolation": "linear", "center_crop": None},
        },
        "outputs": [
            {"name": "score", "shape": ["batch"], "dtype": "float32"},
            {"name": "anomaly_map", "shape": ["batch", 32, 32], "dtype": "float32"},
        ],
        "engines": [
            {"file": "model.onnx", "format": "onnx", "precision": "fp32", "opset": 17, "external_data": False,
             "batch": {"min": 1, "opt": 4, "max": 8, "dynamic": True}},
            {"file": "engines/sm86-trt10.0.plan", "format": "tensorrt", "precision": "fp16",
             "tensorrt_version": "10.0.1", "gpu": {"name": "RTX 3090", "compute_capability": "8.6"},
             "batch": {"min": 1, "opt": 4, "max": 8, "dynamic": True}},
        ],
        "thresholds": {"image": _threshold(0.7), "pixel": None},
        "defects": None,
        "tiling": None,
        "environment": {"python": "3.11"},
        "source_run": {"path": "runs/demo", "config_sha256": HEX, "metrics": {"image_auroc": 0.99}},
        "parity": {"fp32": parity, "fp16": {**parity, "tolerance": {"score_rel": 1e-2}}},
        "golden": {"file": "golden.npz", "n_images": 4},
        "files": [
            {"path": p, "sha256": HEX, "bytes": 10}
            for p in ("engines/sm86-trt10.0.plan", "golden.npz", "infer_config.json", "model.onnx")
        ],
    }


def _problems_of(m: dict) -> str:
    with pytest.raises(InvalidBundleError) as info:
        validate_manifest(m)
    assert info.value.exit_code == 3
    return str(info.value)


def test_valid_manifest_passes_and_pixel_optional():
    validate_manifest(_manifest())
    m = _manifest()
    del m["thresholds"]["pixel"]
    del m["parity"]["fp16"]
    validate_manifest(m)
    m["thresholds"]["pixel"] = _threshold(0.3)
    validate_manifest(m)


def _set(path: str, value):
    def mutate(m: dict) -> None:
        keys = path.replace("]", "").replace("[", ".").split(".")
        target = m
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        last = keys[-1]
        if value is _DEL:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return mutate


_DEL = object()

BAD_CASES = [
    ("engines[0].precision", "int4", "engines[0].precision: expected one of 'fp32', 'fp16', 'int8'"),
    ("engines[0].precision", _DEL, "engines[0].precision"),
    ("engines[0].format", "tflite", "engines[0].format"),
    ("engines[0].opset", "17", "engines[0].opset: expected an integer"),
    ("engines[0].external_data", 0, "engines[0].external_data: expected true or false"),
    ("engines[0].batch.min", 16, "engines[0].batch: expected min <= opt <= max"),
    ("engines[1].gpu.compute_capability", _DEL, "engines[1].gpu.compute_capability"),
    ("engines[1].tensorrt_version", _DEL, "engines[1].tensorrt_version"),
    ("engines", [], "engines: expected at least one engine"),
    ("engines[0].file", "/abs/model.onnx", "engines[0].file: path '/abs/model.onnx' is absolute"),
    ("engines[0].file", "../model.onnx", "engines[0].file: path '../model.onnx' contains '..'"),
    ("thresholds.image.value", float("nan"), "thresholds.image.value: expected a finite number, got NaN"),
    ("thresholds.image.value", float("inf"), "thresholds.image.value"),
    ("thresholds.image.value", "0.7", "thresholds.image.value"),
    ("thresholds.image", None, "thresholds.image: expected an object"),
    ("thresholds.image.method", _DEL, "thresholds.image.method"),
    ("thresholds.image.quantile", 1.5, "thresholds.image.quantile"),
    ("thresholds.pixel", 0.5, "thresholds.pixel: expected an object or null"),
    ("input.layout", "NCHW", "input.layout: expected 'NHWC', got 'NCHW'"),
    ("input.height", 0, "input.height"),
    ("input.preprocess", _DEL, "input.preprocess"),
    ("outputs[1].name", "map", "outputs: expected an output named 'anomaly_map'"),
    ("outputs[1].shape", ["batch", 32], "outputs[1].shape: expected 3 dimension(s)"),
    ("outputs[0].dtype", "float16", "outputs[0].dtype"),
    ("created_at", "yesterday", "created_at: expected an ISO-8601 UTC timestamp"),
    ("created_at", "2024-05-01T12:00:00+02:00", "created_at: expected a UTC timestamp"),
    ("toolkit.version", 1, "toolkit.version"),
    ("model", _DEL, "model: expected an object"),
    ("defects", _DEL, "defects: expected an object or null"),
    ("source_run.config_sha256", "abc", "source_run.config_sha256: expected 64 lowercase hex"),
    ("parity.fp32.labels_identical", "yes", "parity.fp32.labels_identical"),
    ("parity.fp16.tolerance.score_rel", _DEL, "parity.fp16.tolerance.score_rel"),
    ("parity.fp32.map_range", "wide", "parity.fp32.map_range"),
    ("golden.n_images", 0, "golden.n_images"),
    ("golden.file", "other.npz", "golden.file: 'other.npz' is not listed in files"),
    ("files[0].sha256", "XYZ", "files[0].sha256: expected 64 lowercase hex"),
    ("files[0].bytes", -1, "files[0].bytes"),
    ("files[0].path", "a\\b.plan", "files[0].path: path 'a\\\\b.plan' contains a backslash"),
    ("files[3]", _DEL, "engines[0].file: 'model.onnx' is not listed in files"),
    ("source_run.metrics.image_auroc", float("nan"), "source_run.metrics.image_auroc: expected a finite number or null"),
]


@pytest.mark.parametrize("key,value,expected", BAD_CASES, ids=[c[0] + "-" + str(i) for i, c in enumerate(BAD_CASES)])
def test_bad_field_is_named(key, value, expected):
    m = _manifest()
    _set(key, value)(m)
    assert expected in _problems_of(m)


def test_all_problems_collected_in_one_error():
    m = _manifest()
    m["engines"][0]["precision"] = "int4"
    m["thresholds"]["image"]["value"] = float("nan")
    del m["golden"]
    with pytest.raises(InvalidBundleError) as info:
        validate_manifest(m)
    keys = [p.split(":")[0] for p in info.value.problems]
    assert keys == ["engines[0].precision", "thresholds.image.value", "golden"]
    assert "3 problems" in str(info.value)


def test_schema_versions():
    m = _manifest()
    m["schema_version"] = "2.0"
    msg = _problems_of(m)
    assert "'2.0'" in msg and "major version 1" in msg
    m["schema_version"] = "1.7"  # newer minor: accepted, unknown keys ignored
    m["future_field"] = {"x": 1}
    validate_manifest(m)
    for bad in (1.0, "1", "v1.0", None):
        m["schema_version"] = bad
        assert f"schema_version: expected a version string like '{SCHEMA_VERSION}'" in _problems_of(m)
    del m["schema_version"]
    assert "schema_version" in _problems_of(m)


def test_duplicates_and_self_listing():
    m = _manifest()
    m["files"].append(dict(m["files"][0]))
    m["files"].append({"path": "bundle.json", "sha256": HEX, "bytes": 1})
    m["outputs"].append(copy.deepcopy(m["outputs"][0]))
    msg = _problems_of(m)
    assert "files[4].path: duplicate entry 'engines/sm86-trt10.0.plan'" in msg
    assert "files[5].path: 'bundle.json' must not be listed (it cannot hash itself)" in msg
    assert "outputs[2].name: duplicate output name 'score'" in msg


def test_not_an_object():
    assert manifest_problems([1, 2]) == ["(root): expected a JSON object, got an array of 2"]


@pytest.mark.parametrize(
    "rel,fragment",
    [
        ("model.onnx", None),
        ("engines/a-trt10.plan", None),
        ("/etc/passwd", "absolute"),
        ("C:/x.onnx", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a\\b", "backslash"),
        ("a//b", "not normalised"),
        ("./a", "not normalised"),
        ("", "non-empty"),
        (None, "non-empty"),
    ],
)
def test_relative_path_problem(rel, fragment):
    problem = relative_path_problem(rel)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem


def test_config_sha256_is_canonical():
    a = {"b": [1, 2, (3, 4)], "a": {"y": 1.5, "x": "é"}}
    b = {"a": {"x": "é", "y": 1.5}, "b": [1, 2, [3, 4]]}
    assert config_sha256(a) == config_sha256(b)
    text = '{"a":{"x":"é","y":1.5},"b":[1,2,[3,4]]}'
    assert canonical_json(a) == text
    assert config_sha256(a) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert config_sha256(a) != config_sha256({**a, "c": None})
    with pytest.raises(ValueError):
        config_sha256({"x": float("nan")})


def test_utc_now_iso_validates():
    m = _manifest()
    m["created_at"] = utc_now_iso()
    assert m["created_at"].endswith("Z")
    validate_manifest(m)
    json.dumps(m)


def test_shared_checks_describe_values_the_same_way() -> None:
    """The manifest, the configs and the run validator share one message style (pyimgano_deploy.checks)."""
    import numpy as np

    from pyimgano_deploy.checks import MISSING, describe, expected, is_int, is_number

    assert [describe(v) for v in (None, True, float("nan"), {}, [1, 2], MISSING)] == [
        "null", "true", "NaN", "an object", "an array of 2", "nothing (key missing)"]
    assert expected("input.height", "an integer", "x") == "input.height: expected an integer, got 'x'"
    assert is_int(np.int64(3)) and not is_int(True) and not is_number(float("inf")) and is_number(np.float32(1))

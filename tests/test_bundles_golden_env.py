"""bundles.golden (npz, no pickle) and bundles.environment (no torch import)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pyimgano_deploy.bundles import InvalidBundleError, capture_environment, load_golden, save_golden
from pyimgano_deploy.bundles import environment as environment_module
from pyimgano_deploy.bundles.environment import cpu_features, parse_gpu_query


def _arrays(n: int = 2, h: int = 16, w: int = 24):
    rng = np.random.default_rng(1)
    return (
        rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8),
        rng.random(n, dtype=np.float32),
        rng.random((n, h, w), dtype=np.float32),
    )


def test_golden_roundtrip_and_deterministic_bytes(tmp_path: Path):
    images, scores, maps = _arrays()
    p = save_golden(tmp_path / "golden.npz", images, scores, maps)
    assert p == tmp_path / "golden.npz" and not list(tmp_path.glob("*.tmp"))
    data = load_golden(p)
    assert set(data) == {"images", "score", "anomaly_map"}
    np.testing.assert_array_equal(data["images"], images)
    np.testing.assert_array_equal(data["score"], scores)
    np.testing.assert_array_equal(data["anomaly_map"], maps)
    again = save_golden(tmp_path / "again.npz", images, scores.astype(np.float64), maps)  # float64 cast to float32
    assert again.read_bytes() == p.read_bytes()
    with np.load(p, allow_pickle=False) as npz:  # readable by plain numpy
        assert npz["score"].dtype == np.float32


@pytest.mark.parametrize(
    "which,bad,fragment",
    [
        ("images", lambda a: a.astype(np.float32), "'images': expected uint8 [N, H, W, 3], got float32"),
        ("images", lambda a: a[..., 0], "'images': expected uint8 [N, H, W, 3]"),
        ("images", lambda a: np.concatenate([a, a[..., :1]], axis=-1), "expected 3 channels"),
        ("score", lambda a: a[:1], "batch sizes differ"),
        ("score", lambda a: a.reshape(2, 1), "'score': expected float32 [N]"),
        ("score", lambda a: a.astype(np.int32), "'score': expected float32 [N], got int32"),
        ("maps", lambda a: a[0], "'anomaly_map': expected float32 [N, H, W]"),
        ("maps", lambda a: np.where(a > 0.5, np.nan, a).astype(np.float32), "'anomaly_map': contains NaN or inf"),
        ("score", lambda a: [0.1, 0.2], None),  # lists are accepted
    ],
)
def test_save_golden_rejects_bad_arrays(tmp_path: Path, which, bad, fragment):
    images, scores, maps = _arrays()
    args = {"images": images, "score": scores, "maps": maps}
    args[which] = bad(args[which])
    if fragment is None:
        save_golden(tmp_path / "g.npz", args["images"], args["score"], args["maps"])
        return
    with pytest.raises(ValueError) as info:
        save_golden(tmp_path / "g.npz", args["images"], args["score"], args["maps"])
    assert fragment in str(info.value)
    assert not (tmp_path / "g.npz").exists()


def test_load_golden_rejects_bad_files(tmp_path: Path):
    images, scores, maps = _arrays()
    with pytest.raises(InvalidBundleError, match="golden file not found"):
        load_golden(tmp_path / "none.npz")
    p = tmp_path / "wrong_dtype.npz"
    np.savez(p, images=images.astype(np.float64), score=scores, anomaly_map=maps)
    with pytest.raises(InvalidBundleError, match=r"wrong_dtype\.npz.*'images': expected uint8"):
        load_golden(p)
    p = tmp_path / "missing.npz"
    np.savez(p, images=images, score=scores)
    with pytest.raises(InvalidBundleError, match=r"missing\.npz: golden file is missing key\(s\) \['anomaly_map'\]"):
        load_golden(p)
    p = tmp_path / "pickled.npz"
    np.savez(p, images=np.array([{"a": 1}], dtype=object), score=scores, anomaly_map=maps)
    with pytest.raises(InvalidBundleError, match=r"pickled\.npz: cannot read golden file"):
        load_golden(p)
    p = tmp_path / "garbage.npz"
    p.write_bytes(b"not a zip file at all")
    with pytest.raises(InvalidBundleError, match=r"garbage\.npz: cannot read golden file"):
        load_golden(p)
    p = tmp_path / "truncated.npz"
    save_golden(p, images, scores, maps)
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InvalidBundleError, match=r"truncated\.npz"):
        load_golden(p)


def test_golden_zip_has_fixed_timestamps(tmp_path: Path):
    p = save_golden(tmp_path / "g.npz", *_arrays())
    with zipfile.ZipFile(p) as zf:
        assert [i.filename for i in zf.infolist()] == ["images.npy", "score.npy", "anomaly_map.npy"]
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


# ----------------------------------------------------------------------------- environment
def test_capture_environment_is_json_and_complete():
    env = capture_environment()
    json.loads(json.dumps(env, allow_nan=False))
    for key in ("python", "platform", "machine", "cpu_model", "cpu_features", "cpu_count", "packages", "gpus", "cuda"):
        assert key in env
    assert env["packages"]["numpy"] == np.__version__
    assert set(env["packages"]) >= {"numpy", "opencv", "onnxruntime", "onnx", "torch", "tensorrt"}


def test_cpu_features_tell_an_avx2_cpu_from_a_vnni_one(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nflags\t\t: fpu sse2 avx2 fma\n\n"
                       "processor\t: 1\nflags\t\t: avx512f avx512_vnni\n")
    real_open = open
    monkeypatch.setattr(environment_module, "open",
                        lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k), raising=False)
    assert cpu_features() == {"family": "25", "model": "1", "isa": ["avx2", "fma"]}


def test_bundles_never_import_torch():
    code = (
        "import sys, json\n"
        "import pyimgano_deploy.bundles as b\n"
        "env = b.capture_environment()\n"
        "json.dumps(env)\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _fake_nvidia_smi(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


@pytest.mark.skipif(os.name != "posix", reason="shell-script stand-in for nvidia-smi")
def test_gpu_from_fake_nvidia_smi(tmp_path: Path, monkeypatch):
    _fake_nvidia_smi(
        tmp_path / "bin",
        'if [ "$1" = "--query-gpu=name,compute_cap,driver_version" ]; then\n'
        '  echo "NVIDIA H100 80GB HBM3, 9.0, 550.54.15"\n'
        '  echo "NVIDIA A10, 8.6, 550.54.15"\n'
        "else\n"
        '  echo "| NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4 |"\n'
        "fi\n",
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    env = capture_environment()
    assert env["gpus"] == [
        {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver_version": "550.54.15"},
        {"name": "NVIDIA A10", "compute_capability": "8.6", "driver_version": "550.54.15"},
    ]
    assert env["cuda"] == {"driver_version": "550.54.15", "cuda_version": "12.4"}
    assert env["gpu_error"] is None


@pytest.mark.skipif(os.name != "posix", reason="shell-script stand-in for nvidia-smi")
def test_failing_nvidia_smi_gives_null_gpu(tmp_path: Path, monkeypatch):
    _fake_nvidia_smi(tmp_path / "bin", 'echo "NVIDIA-SMI has failed because it couldn\'t communicate" >&2\nexit 9\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    env = capture_environment()
    assert env["gpus"] is None and env["cuda"] is None
    assert "exited with 9" in env["gpu_error"] and "couldn't communicate" in env["gpu_error"]


def test_parse_gpu_query_names_with_commas():
    assert parse_gpu_query("Tesla, Inc GPU, 7.5, 535.1\n\n") == [
        {"name": "Tesla, Inc GPU", "compute_capability": "7.5", "driver_version": "535.1"}
    ]
    with pytest.raises(ValueError, match="unexpected nvidia-smi line"):
        parse_gpu_query("garbage")

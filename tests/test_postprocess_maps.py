"""Anomaly-map ops: normalise, blur, resize, colourise — on copies, never in place."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pyimgano_deploy.postprocess import blur_map, colorize_map, normalize_map, resize_map


def _ramp(h: int = 16, w: int = 24) -> np.ndarray:
    return np.arange(h * w, dtype=np.float32).reshape(h, w) * 0.5 - 3.0


def test_normalize_minmax_spans_unit_interval() -> None:
    m = _ramp()
    out = normalize_map(m)
    assert out.dtype == np.float32 and out.shape == m.shape
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    assert np.all(np.diff(out.ravel()) >= 0)


def test_normalize_percentile_clips_hot_pixels() -> None:
    m = np.zeros((32, 32), np.float32)
    m[:, 16:] = 1.0
    m[0, 0] = 1000.0  # one hot pixel must not squash the rest
    out = normalize_map(m, "percentile", low=1, high=99)
    assert out.dtype == np.float32
    assert out[5, 20] == pytest.approx(1.0) and out[5, 5] == pytest.approx(0.0)
    assert out[0, 0] == 1.0


def test_normalize_constant_map_gives_zeros() -> None:
    for method in ("minmax", "percentile"):
        out = normalize_map(np.full((8, 8), 3.5, np.float32), method)
        assert out.dtype == np.float32 and not out.any()


def test_normalize_bad_inputs() -> None:
    with pytest.raises(ValueError, match="method"):
        normalize_map(_ramp(), "zscore")
    with pytest.raises(ValueError, match="percentile bounds"):
        normalize_map(_ramp(), "percentile", low=90, high=10)
    with pytest.raises(ValueError, match="2-D"):
        normalize_map(np.zeros((2, 3, 4), np.float32))
    bad = _ramp()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        normalize_map(bad)


def test_blur_map_smooths_and_zero_sigma_copies() -> None:
    m = np.zeros((21, 21), np.float32)
    m[10, 10] = 1.0
    out = blur_map(m, 2.0)
    assert out.dtype == np.float32 and out[10, 10] < 0.1 and out[10, 12] > 0
    assert out.sum() == pytest.approx(1.0, abs=1e-3)
    same = blur_map(m, 0)
    assert np.array_equal(same, m) and same is not m


def test_resize_map_shape_and_dtype() -> None:
    m = _ramp(8, 10).astype(np.float64)
    out = resize_map(m, (16, 20))
    assert out.shape == (16, 20) and out.dtype == np.float32
    assert out.min() >= m.min() - 1e-4 and out.max() <= m.max() + 1e-4
    with pytest.raises(ValueError, match="size"):
        resize_map(m, (0, 4))


def test_colorize_map_is_rgb_jet() -> None:
    m = np.zeros((4, 6), np.float32)
    m[:, 3:] = 1.0
    rgb = colorize_map(m)
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 6, 3) and rgb.flags["C_CONTIGUOUS"]
    low, high = rgb[0, 0], rgb[0, 5]
    assert low[2] > low[0] and low[1] == 0  # JET low end is blue
    assert high[0] > high[2] and high[1] == 0  # JET high end is red


def test_map_ops_never_modify_input() -> None:
    m = _ramp()
    before = m.copy()
    normalize_map(m)
    normalize_map(m, "percentile")
    blur_map(m, 1.5)
    resize_map(m, m.shape)
    colorize_map(normalize_map(m))
    assert np.array_equal(m, before)
    assert resize_map(m, m.shape) is not m


def test_postprocess_import_is_torch_free() -> None:
    code = (
        "import sys; import pyimgano_deploy.postprocess as p; import pyimgano_deploy.postprocess.defects; "
        "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""as_image_list / load_canonical / describe_input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pyimgano_deploy.inputs import (
    ImageFormat,
    ImageFormatError,
    ImageReadError,
    as_image_list,
    describe_input,
    load_canonical,
)


def _rgb(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_single_path(tmp_path):
    p = tmp_path / "a.png"
    assert as_image_list(p) == [p]
    assert as_image_list(str(p)) == [str(p)]
    assert as_image_list(str(p), input_format="rgb_u8_hwc") == [str(p)]


def test_list_and_tuple():
    a, b = _rgb(), _rgb(seed=1)
    out = as_image_list([a, "x.png"])
    assert isinstance(out, list) and out[0] is a and out[1] == "x.png"
    out = as_image_list((a, b), input_format="rgb_u8_hwc")
    assert isinstance(out, list) and len(out) == 2 and out[1] is b
    assert as_image_list([]) == []


def test_single_image_array_is_not_split():
    a = _rgb()
    out = as_image_list(a, input_format="rgb_u8_hwc")
    assert len(out) == 1 and out[0] is a


def test_4d_batch_is_split():
    batch = np.stack([_rgb(seed=i) for i in range(4)])
    out = as_image_list(batch, input_format=ImageFormat.BGR_U8_HWC)
    assert len(out) == 4
    for i in range(4):
        np.testing.assert_array_equal(out[i], batch[i])
        assert out[i].shape == (6, 5, 3)


def test_chw_batch_is_split():
    batch = np.zeros((2, 3, 6, 5), np.float32)
    out = as_image_list(batch, input_format="rgb_f32_chw")
    assert [o.shape for o in out] == [(3, 6, 5), (3, 6, 5)]


def test_gray_3d_stack_is_split_for_gray_hw():
    stack = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    out = as_image_list(stack, input_format="gray_u8_hw")
    assert len(out) == 3 and out[2].shape == (4, 5)
    canon = load_canonical(out[1], input_format="gray_u8_hw")
    np.testing.assert_array_equal(canon[:, :, 0], stack[1])
    # The same 3-D array declared as one HWC image is NOT split (ndim matches one image).
    assert len(as_image_list(np.zeros((4, 5, 1), np.uint8), input_format="gray_u8_hwc1")) == 1
    assert len(as_image_list(np.zeros((2, 4, 5, 1), np.uint8), input_format="gray_u8_hwc1")) == 2


def test_empty_batch_gives_empty_list():
    assert as_image_list(np.zeros((0, 4, 5, 3), np.uint8), input_format="rgb_u8_hwc") == []


@pytest.mark.parametrize(
    "arr,fmt",
    [
        (np.zeros((1, 2, 4, 5, 3), np.uint8), "rgb_u8_hwc"),
        (np.zeros((5,), np.uint8), "gray_u8_hw"),
        (np.zeros((2, 3, 4, 5), np.uint16), "gray_u16_hw"),
    ],
)
def test_wrong_ndim_array_is_error(arr, fmt):
    with pytest.raises(ImageFormatError) as info:
        as_image_list(arr, input_format=fmt)
    assert fmt in str(info.value) and f"shape={tuple(arr.shape)}" in str(info.value)


def test_array_without_input_format_is_error():
    with pytest.raises(ValueError) as info:
        as_image_list(np.zeros((2, 4, 5, 3), np.uint8))
    assert "input_format" in str(info.value) and "rgb_u8_hwc" in str(info.value)
    with pytest.raises(ValueError, match="input_format"):
        load_canonical(_rgb())


def test_auto_format_is_error():
    with pytest.raises(ValueError, match="never guessed"):
        as_image_list(_rgb(), input_format="auto")


@pytest.mark.parametrize("bad", [42, b"a.png", {"a": 1}, None, 1.5])
def test_unsupported_types(bad):
    with pytest.raises(TypeError):
        as_image_list(bad)
    with pytest.raises(TypeError):
        load_canonical(bad, input_format="rgb_u8_hwc")


def test_load_canonical_array_and_path(tmp_path):
    rgb = _rgb(8, 9)
    np.testing.assert_array_equal(load_canonical(rgb[:, :, ::-1], input_format="bgr_u8_hwc"), rgb)
    path = tmp_path / "img one.png"
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    path.write_bytes(buf.tobytes())
    np.testing.assert_array_equal(load_canonical(path), rgb)
    np.testing.assert_array_equal(load_canonical(str(path), input_format="gray_u8_hw"), rgb)  # files ignore it


def test_load_canonical_u16_max(tmp_path):
    arr = np.array([[0, 4095]], np.uint16)
    out = load_canonical(arr, input_format="gray_u16_hw", u16_max=4095)
    assert out[0, :, 1].tolist() == [0, 255]
    path = tmp_path / "g16.png"
    path.write_bytes(cv2.imencode(".png", arr)[1].tobytes())
    assert load_canonical(path, u16_max=4095)[0, :, 0].tolist() == [0, 255]


def test_load_canonical_errors(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        load_canonical(tmp_path / "missing.png")
    with pytest.raises(ImageFormatError, match="rgb_u8_hwc"):
        load_canonical(np.zeros((4, 4), np.uint8), input_format="rgb_u8_hwc")


def test_describe_input(tmp_path):
    assert describe_input("a/b.png", 0) == "a/b.png"
    assert describe_input(Path("a") / "c d.png", 3) == str(Path("a") / "c d.png")
    assert describe_input(np.zeros((2, 3, 3), np.uint8), 7) == "<array #7 shape=(2, 3, 3) dtype=uint8>"
    assert describe_input(np.zeros((4,), np.float32), 1) == "<array #1 shape=(4,) dtype=float32>"
    assert describe_input(42, 2) == "<int #2>"

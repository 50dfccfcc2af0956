"""ImageFormat parsing and normalize_numpy_image: round trips, strict errors, exact rounding."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from pyimgano_deploy.inputs import (
    FORMAT_NDIM,
    ImageFormat,
    ImageFormatError,
    normalize_numpy_image,
    parse_image_format,
)

ALL_NAMES = [
    "bgr_u8_hwc",
    "rgb_u8_hwc",
    "rgb_f32_chw",
    "rgb_f32_hwc",
    "bgr_f32_hwc",
    "gray_u8_hw",
    "gray_u8_hwc1",
    "gray_u16_hw",
    "bgr_u16_hwc",
    "rgb_u16_hwc",
]


def _rgb(h: int = 5, w: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img[0, 0] = (0, 0, 0)
    img[0, 1] = (255, 255, 255)
    return img


def _to_f32(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / np.float32(255.0)).astype(np.float32)


def _to_u16(img: np.ndarray) -> np.ndarray:
    return img.astype(np.uint16) * np.uint16(257)  # 255 -> 65535, exact with u16_max=65535


# Hand-written conversions from canonical RGB u8 HWC to each format. Gray formats start from a
# gray RGB image (three equal channels) so the round trip is exact.
CONVERTERS = {
    "bgr_u8_hwc": lambda rgb: np.ascontiguousarray(rgb[:, :, ::-1]),
    "rgb_u8_hwc": lambda rgb: rgb.copy(),
    "rgb_f32_chw": lambda rgb: np.ascontiguousarray(_to_f32(rgb).transpose(2, 0, 1)),
    "rgb_f32_hwc": lambda rgb: _to_f32(rgb),
    "bgr_f32_hwc": lambda rgb: np.ascontiguousarray(_to_f32(rgb)[:, :, ::-1]),
    "gray_u8_hw": lambda rgb: rgb[:, :, 0].copy(),
    "gray_u8_hwc1": lambda rgb: rgb[:, :, :1].copy(),
    "gray_u16_hw": lambda rgb: _to_u16(rgb[:, :, 0]),
    "bgr_u16_hwc": lambda rgb: np.ascontiguousarray(_to_u16(rgb)[:, :, ::-1]),
    "rgb_u16_hwc": lambda rgb: _to_u16(rgb),
}


def test_enum_has_exactly_the_documented_names():
    assert [f.value for f in ImageFormat] == ALL_NAMES
    assert set(CONVERTERS) == set(ALL_NAMES)
    assert ImageFormat.RGB_F32_CHW == "rgb_f32_chw"
    assert str(ImageFormat.GRAY_U16_HW) == "gray_u16_hw"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_round_trip_every_format(name):
    rgb = _rgb()
    if name.startswith("gray"):
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    arr = CONVERTERS[name](rgb)
    assert arr.ndim == FORMAT_NDIM(name)
    out = normalize_numpy_image(arr, input_format=name)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)
    # Same with the enum member instead of the string.
    np.testing.assert_array_equal(normalize_numpy_image(arr, input_format=ImageFormat(name)), rgb)


@pytest.mark.parametrize("name", ["bgr_u8_hwc", "rgb_u8_hwc", "rgb_f32_chw", "gray_u8_hw", "rgb_u16_hwc"])
def test_non_contiguous_input_is_accepted_and_output_is_new_contiguous(name):
    rgb = _rgb(6, 8)
    arr = CONVERTERS[name](rgb)
    big = np.zeros((arr.shape[0] * 2,) + arr.shape[1:], dtype=arr.dtype)
    big[::2] = arr
    view = big[::2]
    assert not view.flags.c_contiguous
    out = normalize_numpy_image(view, input_format=name)
    assert out.flags.c_contiguous
    assert not np.shares_memory(out, big)
    expected = normalize_numpy_image(arr, input_format=name)
    np.testing.assert_array_equal(out, expected)


def test_rgb_u8_output_is_a_copy():
    rgb = _rgb()
    out = normalize_numpy_image(rgb, input_format="rgb_u8_hwc")
    out[0, 0, 0] = 7
    assert rgb[0, 0, 0] == 0


def test_bgr_is_reversed_and_gray_replicated():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    out = normalize_numpy_image(bgr, input_format="bgr_u8_hwc")
    assert out[0, 0].tolist() == [200, 0, 10]
    gray = np.array([[1, 2], [3, 4]], np.uint8)
    out = normalize_numpy_image(gray, input_format="gray_u8_hw")
    assert out.shape == (2, 2, 3)
    assert out[1, 0].tolist() == [3, 3, 3]


# ---------------------------------------------------------------- parse_image_format


def test_parse_auto_lists_valid_names():
    with pytest.raises(ValueError) as info:
        parse_image_format("auto")
    msg = str(info.value)
    assert "never guessed" in msg
    for name in ALL_NAMES:
        assert name in msg


@pytest.mark.parametrize("bad", ["rgb", "bgr_u8_chw", "", 3, None])
def test_parse_unknown_raises_value_error_listing_names(bad):
    with pytest.raises(ValueError) as info:
        parse_image_format(bad)
    assert isinstance(info.value, ImageFormatError)
    assert "rgb_u8_hwc" in str(info.value) and "gray_u16_hw" in str(info.value)


def test_parse_accepts_names_and_members():
    assert parse_image_format("rgb_f32_chw") is ImageFormat.RGB_F32_CHW
    assert parse_image_format(" BGR_U8_HWC ") is ImageFormat.BGR_U8_HWC
    assert parse_image_format(ImageFormat.GRAY_U8_HW) is ImageFormat.GRAY_U8_HW
    assert FORMAT_NDIM("gray_u8_hw") == 2 and FORMAT_NDIM("gray_u16_hw") == 2
    assert FORMAT_NDIM("gray_u8_hwc1") == 3 and FORMAT_NDIM(ImageFormat.RGB_F32_CHW) == 3


def test_normalize_with_auto_format_raises():
    with pytest.raises(ValueError, match="never guessed"):
        normalize_numpy_image(_rgb(), input_format="auto")


# ---------------------------------------------------------------- errors

_F32 = np.float32
ERROR_CASES = [
    # (format, array, fragment expected in the message)
    ("rgb_u8_hwc", np.zeros((4, 5), np.uint8), "dimensions"),
    ("rgb_u8_hwc", np.zeros((1, 4, 5, 3), np.uint8), "dimensions"),
    ("rgb_u8_hwc", np.zeros((4, 5, 4), np.uint8), "channel"),
    ("bgr_u8_hwc", np.zeros((4, 5, 1), np.uint8), "channel"),
    ("rgb_u8_hwc", np.zeros((4, 5, 3), np.float32), "dtype"),
    ("bgr_u8_hwc", np.zeros((4, 5, 3), np.uint16), "dtype"),
    ("rgb_f32_chw", np.zeros((4, 5, 3), _F32), "channel"),  # HWC given for CHW
    ("rgb_f32_chw", np.zeros((3, 4, 5), np.float64), "dtype"),
    ("rgb_f32_hwc", np.zeros((4, 5, 3), np.uint8), "dtype"),
    ("bgr_f32_hwc", np.zeros((4, 5), _F32), "dimensions"),
    ("gray_u8_hw", np.zeros((4, 5, 1), np.uint8), "dimensions"),
    ("gray_u8_hw", np.zeros((4, 5), np.int32), "dtype"),
    ("gray_u8_hw", np.zeros((4, 5), np.bool_), "dtype"),
    ("gray_u8_hwc1", np.zeros((4, 5, 3), np.uint8), "channel"),
    ("gray_u16_hw", np.zeros((4, 5), np.uint8), "dtype"),
    ("bgr_u16_hwc", np.zeros((4, 5, 3), np.int16), "dtype"),
    ("rgb_u16_hwc", np.zeros((4, 5, 2), np.uint16), "channel"),
    ("rgb_u8_hwc", np.zeros((0, 5, 3), np.uint8), "empty"),
    ("gray_u8_hw", np.zeros((4, 0), np.uint8), "empty"),
    ("rgb_f32_chw", np.zeros((3, 0, 5), _F32), "empty"),
]


@pytest.mark.parametrize("fmt,arr,fragment", ERROR_CASES, ids=[f"{c[0]}-{c[1].shape}-{c[1].dtype}" for c in ERROR_CASES])
def test_error_messages_name_format_shape_and_dtype(fmt, arr, fragment):
    with pytest.raises(ImageFormatError) as info:
        normalize_numpy_image(arr, input_format=fmt)
    msg = str(info.value)
    assert fmt in msg
    assert f"shape={tuple(arr.shape)}" in msg
    assert f"dtype={arr.dtype}" in msg
    assert fragment in msg
    assert isinstance(info.value, ValueError)


def test_not_an_array_is_an_error():
    with pytest.raises(ImageFormatError, match="rgb_u8_hwc.*not a numpy array"):
        normalize_numpy_image([[1, 2, 3]], input_format="rgb_u8_hwc")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmt", ["rgb_f32_hwc", "bgr_f32_hwc"])
def test_non_finite_floats_are_errors(fmt, bad):
    arr = np.full((3, 4, 3), 0.5, np.float32)
    arr[1, 2, 0] = bad
    with pytest.raises(ImageFormatError) as info:
        normalize_numpy_image(arr, input_format=fmt)
    msg = str(info.value)
    assert fmt in msg and "NaN or inf" in msg and "shape=(3, 4, 3)" in msg and "float32" in msg
    assert "1 non-finite" in msg


@pytest.mark.parametrize("value", [-1e-7, 1.0000001, 255.0, -1.0])
def test_floats_outside_unit_range_are_errors(value):
    arr = np.full((3, 4, 5), 0.25, np.float32)
    arr[0, 0, 0] = value
    with pytest.raises(ImageFormatError) as info:
        normalize_numpy_image(arr, input_format="rgb_f32_chw")
    msg = str(info.value)
    assert "rgb_f32_chw" in msg and "[0, 1]" in msg and "min=" in msg and "max=" in msg


def test_float_range_endpoints_are_accepted():
    arr = np.zeros((2, 2, 3), np.float32)
    arr[0, 0] = 1.0
    out = normalize_numpy_image(arr, input_format="rgb_f32_hwc")
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [0, 0, 0]


def test_u16_above_u16_max_is_an_error():
    arr = np.full((3, 4), 4095, np.uint16)
    normalize_numpy_image(arr, input_format="gray_u16_hw", u16_max=4095)
    arr[2, 3] = 4096
    with pytest.raises(ImageFormatError) as info:
        normalize_numpy_image(arr, input_format="gray_u16_hw", u16_max=4095)
    msg = str(info.value)
    assert "gray_u16_hw" in msg and "u16_max=4095" in msg and "4096" in msg and "uint16" in msg


@pytest.mark.parametrize("bad", [0, -1, 65536, 1.5, True, "4095", None])
def test_invalid_u16_max(bad):
    with pytest.raises(ImageFormatError, match="u16_max"):
        normalize_numpy_image(np.zeros((2, 2), np.uint16), input_format="gray_u16_hw", u16_max=bad)


def test_u16_max_accepts_numpy_integer():
    arr = np.array([[0, 1023]], np.uint16)
    out = normalize_numpy_image(arr, input_format="gray_u16_hw", u16_max=np.int64(1023))
    assert out[0, :, 0].tolist() == [0, 255]


# ---------------------------------------------------------------- rounding


def test_float_rounding_half_to_even_exact_values():
    # 0.5 * 255 = 127.5 exactly -> half to even -> 128
    vals = np.array([0.0, 0.5, 1.0, 1 / 255, 2 / 255, 254 / 255], np.float32)
    arr = np.repeat(vals.reshape(1, -1, 1), 3, axis=2)
    out = normalize_numpy_image(arr, input_format="rgb_f32_hwc")[0, :, 0]
    assert out.tolist() == [0, 128, 255, 1, 2, 254]


@pytest.mark.parametrize("k", [0, 1, 2, 3, 100, 127, 253, 254])
def test_float_rounding_at_half_boundaries(k):
    # The float32 nearest to (k + 0.5) / 255 is never exactly the half point; the neighbours just
    # below / above must round to k / k + 1, exactly as the mathematically exact rounding says.
    centre = np.float32((k + 0.5) / 255)
    below = np.nextafter(centre, np.float32(0))
    above = np.nextafter(centre, np.float32(1))
    arr = np.array([[below, centre, above]], np.float32)[:, :, None].repeat(3, axis=2)
    out = normalize_numpy_image(arr, input_format="rgb_f32_hwc")[0, :, 0].tolist()
    assert out[0] == k and out[2] == k + 1
    expected_centre = round(Fraction(float(centre)) * 255)  # Fraction rounding is half-to-even
    assert out[1] == expected_centre


def test_float_rounding_matches_exact_arithmetic():
    rng = np.random.default_rng(1)
    vals = rng.random(4000, dtype=np.float32)
    out = normalize_numpy_image(vals.reshape(40, 100, 1).repeat(3, axis=2), input_format="rgb_f32_hwc")
    expected = [round(Fraction(float(v)) * 255) for v in vals]
    assert out[:, :, 0].ravel().tolist() == expected


def test_u16_rounding_half_to_even():
    # u16_max = 510: x * 255 / 510 = x / 2 exactly -> 0, .5, 1, 1.5, 2, 2.5, 3, 3.5
    arr = np.arange(8, dtype=np.uint16).reshape(1, 8)
    out = normalize_numpy_image(arr, input_format="gray_u16_hw", u16_max=510)[0, :, 0]
    assert out.tolist() == [0, 0, 1, 2, 2, 2, 3, 4]


def test_u16_rounding_matches_exact_arithmetic():
    for u16_max in (65535, 4095, 1023, 1000):
        vals = np.arange(0, u16_max + 1, dtype=np.uint16)
        out = normalize_numpy_image(
            np.repeat(vals.reshape(1, -1, 1), 3, axis=2), input_format="rgb_u16_hwc", u16_max=u16_max
        )[0, :, 0]
        expected = np.array([round(Fraction(int(v) * 255, u16_max)) for v in vals[:: max(1, u16_max // 2000)]])
        np.testing.assert_array_equal(out[:: max(1, u16_max // 2000)], expected)
    # Full 16-bit default: 257 * k -> k.
    arr = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    out = normalize_numpy_image(arr, input_format="gray_u16_hw")[:, :, 0]
    assert out.ravel().tolist() == list(range(256))


def test_package_is_torch_free():
    code = (
        "import sys, pyimgano_deploy.inputs as m; "
        "bad = [n for n in ('torch', 'onnx') if n in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

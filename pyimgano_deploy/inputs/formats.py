"""Declared in-memory image formats and their conversion to the canonical image.

The canonical image used everywhere downstream is **RGB / uint8 / HWC**, C-contiguous.
A numpy array carries no reliable information about its channel order or value range, so
the caller must *declare* its format with :class:`ImageFormat`; nothing here guesses.

Rounding (documented contract, tested to the exact value):

* float -> uint8: ``np.rint(x * 255)`` computed in float64.
* uint16 -> uint8: ``np.rint(x * 255 / u16_max)`` computed in float64.

``np.rint`` rounds half to even, so 127.5 -> 128, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2. For float32
inputs and for uint16 inputs the float64 arithmetic is exact enough that the result equals
the mathematically exact round-half-to-even of ``x * 255`` (resp. ``x * 255 / u16_max``).
(For float32 input the only exact half is ``x = 0.5`` -> 127.5 -> 128; ties matter for
uint16 input when ``u16_max`` is even, e.g. ``u16_max=510``: 1 -> 0, 3 -> 2, 5 -> 2.)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from pyimgano_deploy.checks import u16_max_problem

__all__ = [
    "FORMAT_NDIM",
    "ImageFormat",
    "ImageFormatError",
    "format_channels",
    "normalize_numpy_image",
    "parse_image_format",
]


class ImageFormatError(ValueError):
    """An array does not match its declared :class:`ImageFormat` (or the format is invalid)."""


class ImageFormat(str, Enum):
    """Explicit in-memory layout of one image. ``str`` values are the public names."""

    BGR_U8_HWC = "bgr_u8_hwc"
    RGB_U8_HWC = "rgb_u8_hwc"
    RGB_F32_CHW = "rgb_f32_chw"
    RGB_F32_HWC = "rgb_f32_hwc"
    BGR_F32_HWC = "bgr_f32_hwc"
    GRAY_U8_HW = "gray_u8_hw"
    GRAY_U8_HWC1 = "gray_u8_hwc1"
    GRAY_U16_HW = "gray_u16_hw"
    BGR_U16_HWC = "bgr_u16_hwc"
    RGB_U16_HWC = "rgb_u16_hwc"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class _Spec:
    layout: str  # "hwc", "chw" or "hw"
    channels: int  # 1 for "hw"
    dtype: type  # np.uint8, np.uint16 or np.float32
    order: str  # "rgb", "bgr" or "gray"

    @property
    def ndim(self) -> int:
        return 2 if self.layout == "hw" else 3

    def expected_shape(self) -> str:
        if self.layout == "hw":
            return "(H, W)"
        if self.layout == "chw":
            return f"({self.channels}, H, W)"
        return f"(H, W, {self.channels})"


_SPECS: dict[ImageFormat, _Spec] = {
    ImageFormat.BGR_U8_HWC: _Spec("hwc", 3, np.uint8, "bgr"),
    ImageFormat.RGB_U8_HWC: _Spec("hwc", 3, np.uint8, "rgb"),
    ImageFormat.RGB_F32_CHW: _Spec("chw", 3, np.float32, "rgb"),
    ImageFormat.RGB_F32_HWC: _Spec("hwc", 3, np.float32, "rgb"),
    ImageFormat.BGR_F32_HWC: _Spec("hwc", 3, np.float32, "bgr"),
    ImageFormat.GRAY_U8_HW: _Spec("hw", 1, np.uint8, "gray"),
    ImageFormat.GRAY_U8_HWC1: _Spec("hwc", 1, np.uint8, "gray"),
    ImageFormat.GRAY_U16_HW: _Spec("hw", 1, np.uint16, "gray"),
    ImageFormat.BGR_U16_HWC: _Spec("hwc", 3, np.uint16, "bgr"),
    ImageFormat.RGB_U16_HWC: _Spec("hwc", 3, np.uint16, "rgb"),
}

_VALID_NAMES = ", ".join(f.value for f in ImageFormat)


def parse_image_format(value: str | ImageFormat) -> ImageFormat:
    """Return the :class:`ImageFormat` named by ``value``.

    Raises :class:`ImageFormatError` (a ``ValueError``) for ``"auto"``, unknown names and
    non-strings; the message lists every valid name.
    """
    if isinstance(value, ImageFormat):
        return value
    if not isinstance(value, str):
        raise ImageFormatError(
            f"input_format must be a string naming an image format; got {type(value).__name__} "
            f"{value!r}. Valid formats: {_VALID_NAMES}"
        )
    name = value.strip().lower()
    if name == "auto":
        raise ImageFormatError(
            "input_format='auto' is not supported: image formats are never guessed; declare one of: "
            f"{_VALID_NAMES}"
        )
    try:
        return ImageFormat(name)
    except ValueError:
        raise ImageFormatError(
            f"unknown input_format {value!r}; valid formats: {_VALID_NAMES}"
        ) from None


def FORMAT_NDIM(fmt: str | ImageFormat) -> int:  # noqa: N802 (name fixed by the interface)
    """Number of dimensions of *one* image in format ``fmt`` (2 for ``gray_*_hw``, else 3)."""
    return _SPECS[parse_image_format(fmt)].ndim


def format_channels(fmt: str | ImageFormat) -> int:
    """Channels of one image in format ``fmt`` as the caller holds it (1 for grey, else 3)."""
    return _SPECS[parse_image_format(fmt)].channels


def _describe(image: np.ndarray) -> str:
    """``shape=..., dtype=..., min=..., max=...`` (min/max only where they are meaningful)."""
    text = f"shape={tuple(image.shape)}, dtype={image.dtype}"
    if image.size == 0 or image.dtype.kind not in "biuf":
        return text
    if image.dtype.kind == "f":
        finite = np.isfinite(image)
        n_bad = int(image.size - np.count_nonzero(finite))
        if n_bad:
            text += f", {n_bad} non-finite value(s) (NaN/inf)"
            if n_bad == image.size:
                return text
            values = image[finite]
            return text + f", finite min={values.min()!r}, finite max={values.max()!r}"
    return text + f", min={image.min()!r}, max={image.max()!r}"


def validate_u16_max(u16_max: object) -> int:
    """``u16_max`` as an int in 1..65535 (the full-scale value of 16-bit images), or ImageFormatError."""
    problem = u16_max_problem(u16_max)
    if problem is not None:
        raise ImageFormatError(problem)
    return int(u16_max)  # type: ignore[arg-type]


def normalize_numpy_image(
    image: np.ndarray,
    *,
    input_format: str | ImageFormat,
    u16_max: int = 65535,
) -> np.ndarray:
    """Convert one image in the declared ``input_format`` to canonical RGB / uint8 / HWC.

    Checks (each failure raises :class:`ImageFormatError`, a ``ValueError``, whose message
    names the declared format and what was received: shape, dtype, min/max):

    * ``image`` is a numpy array with the format's ndim, channel count and exact dtype
      (``uint8``, ``uint16`` or ``float32``; e.g. float64 is refused for ``*_f32_*``);
    * it is not empty (no zero-size axis);
    * float formats: every value finite and in ``[0, 1]``;
    * uint16 formats: every value ``<= u16_max``; ``u16_max`` must be in ``1..65535``.

    Conversion: float -> ``np.rint(x * 255)``; uint16 -> ``np.rint(x * 255 / u16_max)``, both
    in float64, rounding half to even (see the module docstring). BGR is reversed to RGB,
    grayscale is replicated to three channels, CHW is transposed to HWC. Non-contiguous input
    is accepted. The result is always a new C-contiguous ``(H, W, 3)`` uint8 array, never a
    view of ``image``.
    """
    fmt = parse_image_format(input_format)
    spec = _SPECS[fmt]
    u16 = validate_u16_max(u16_max)
    expected = f"{spec.expected_shape()} {np.dtype(spec.dtype).name}"

    def fail(problem: str) -> ImageFormatError:
        got = _describe(image) if isinstance(image, np.ndarray) else f"{type(image).__name__}"
        return ImageFormatError(
            f"input_format={fmt.value} expects a numpy array of shape {expected}: {problem}; got {got}"
        )

    if not isinstance(image, np.ndarray):
        raise fail("not a numpy array")
    if image.ndim != spec.ndim:
        raise fail(f"expected {spec.ndim} dimensions, got {image.ndim}")
    channel_axis = {"hwc": 2, "chw": 0, "hw": None}[spec.layout]
    if channel_axis is not None and image.shape[channel_axis] != spec.channels:
        raise fail(
            f"expected {spec.channels} channel(s) on axis {channel_axis}, got {image.shape[channel_axis]}"
        )
    if image.dtype != np.dtype(spec.dtype):
        raise fail(f"expected dtype {np.dtype(spec.dtype).name}, got {image.dtype}")
    if image.size == 0:
        raise fail("image is empty (a zero-size axis)")

    if spec.dtype is np.float32:
        if not np.isfinite(image).all():
            raise fail("contains NaN or inf")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            raise fail(f"float values must lie in [0, 1], found [{lo!r}, {hi!r}]")
        data = np.rint(image.astype(np.float64) * 255.0).astype(np.uint8)
    elif spec.dtype is np.uint16:
        hi = int(image.max())
        if hi > u16:
            raise fail(f"uint16 values must be <= u16_max={u16}, found max={hi}")
        data = np.rint(image.astype(np.float64) * 255.0 / u16).astype(np.uint8)
    else:
        data = image

    if spec.layout == "chw":
        data = data.transpose(1, 2, 0)
    if spec.order == "gray":
        plane = data if data.ndim == 2 else data[:, :, 0]
        out = np.empty(plane.shape + (3,), dtype=np.uint8)
        out[...] = plane[:, :, None]
        return out
    if spec.order == "bgr":
        data = data[:, :, ::-1]
    out = np.empty(data.shape, dtype=np.uint8)
    out[...] = data
    return out

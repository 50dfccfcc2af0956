"""Read image and mask files into the canonical RGB / uint8 / HWC image, strictly.

Files are read as bytes and decoded from memory (so paths with spaces and non-ASCII
characters work on every platform). Before anything is decoded, the header gives the pixel count, and an
image over ``max_pixels`` is refused (a decompression bomb never reaches the decoder).
Decoding is strict: a decoder warning is an error, never a score.

* JPEG: libjpeg-turbo through ``simplejpeg`` with ``strict=True`` (corrupt entropy data, a
  premature end or extraneous bytes raise; OpenCV would only print "Corrupt JPEG data" and
  return an image). Its output is bit-identical to OpenCV's for the same file.
* PNG: every chunk's CRC is checked and the chunk sequence must reach ``IEND``; pixels are
  then decoded by OpenCV (``IMREAD_UNCHANGED``).
* BMP, TIFF, WebP: the header is read with Pillow, pixels with OpenCV (``IMREAD_UNCHANGED``);
  OpenCV returns no decoder warnings for these, so only its errors are seen.

Then the pixels are converted explicitly:

* 8-bit gray -> replicated to RGB; 8-bit BGR -> RGB;
* BGRA (PNG/TIFF/WebP with alpha) -> the alpha channel is **dropped** (not composited);
* 16-bit gray / colour (PNG, TIFF) -> scaled to 8 bits with ``np.rint(x * 255 / u16_max)``
  (round half to even, as in :func:`~pyimgano_deploy.inputs.formats.normalize_numpy_image`);
  the bit depth is never guessed: a 16-bit file needs an explicit ``u16_max`` (4095 for a
  12-bit camera, 65535 for the full range);
* EXIF orientation is **not** applied (``IMREAD_UNCHANGED`` keeps the stored pixel grid).

OpenCV returns ``None`` silently for files it cannot decode; here every such case (missing
file, directory, empty, truncated, corrupt, not an image, unsupported bit depth) raises
:class:`ImageReadError`, which names the path and the reason. JPEG and PNG files are also
checked for truncation (JPEG: no EOI marker ``FFD9`` after the last start-of-scan; PNG: the
chunk sequence does not reach ``IEND``) because decoders may return a partial image.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from pyimgano_deploy.inputs.formats import ImageFormat, ImageFormatError, normalize_numpy_image
from pyimgano_deploy.inputs.source_info import JPEG_SIGNATURE, PNG_SIGNATURE, SourceInfo, bytes_source, file_source

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "ImageReadError", "decode_image", "decode_image_source", "read_image",
           "read_image_source", "read_mask"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: 8192 x 16384: an 8K line-scan frame of 16k lines is accepted, a 20000 x 20000 bomb is not
DEFAULT_MAX_PIXELS = 8192 * 16384



class ImageReadError(ValueError):
    """An image or mask file could not be read; ``.path`` is the file, ``.reason`` why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(os.fspath(path))
        self.reason = reason
        #: the bytes' digest, size and encoding when they were read (set by the ``*_source`` readers)
        self.source: SourceInfo | None = None
        super().__init__(f"cannot read image '{self.path}': {reason}")


class Undeclared16BitError(ImageReadError):
    """A 16-bit file was read without ``u16_max``: its bit depth is never guessed."""


def _read_bytes(path: str | os.PathLike) -> bytes:
    p = Path(os.fspath(path))
    if not p.exists():
        raise ImageReadError(path, "file not found")
    if p.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc.strerror or exc})") from exc
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def _png_truncation(data: bytes) -> str | None:
    """Reason string when the PNG chunk sequence ends before ``IEND`` or a chunk's CRC is wrong
    (libpng only warns for some of those), else ``None``."""
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            return f"truncated PNG: chunk header expected at byte {pos} of {len(data)}, no IEND chunk"
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length  # length + type + data + crc
        if end > len(data):
            return (
                f"truncated PNG: chunk {ctype!r} at byte {pos} needs {12 + length} bytes, "
                f"file has {len(data) - pos} left, no IEND chunk"
            )
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return f"corrupt PNG: CRC mismatch in chunk {ctype!r} at byte {pos}"
        if ctype == b"IEND":
            return None
        pos = end


def _jpeg_truncation(data: bytes) -> str | None:
    """Reason string when no EOI marker follows the last start-of-scan marker, else ``None``."""
    last_sos = data.rfind(b"\xff\xda")
    last_eoi = data.rfind(b"\xff\xd9")
    if last_sos == -1:
        return "truncated or corrupt JPEG: no start-of-scan (FFDA) marker"
    if last_eoi < last_sos:
        return "truncated JPEG: no end-of-image (FFD9) marker after the image data"
    return None


def _jpeg_header(raw: bytes, label: str) -> tuple[int, int, str]:
    """``(width, height, colour space)`` of a JPEG, from its header."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(raw)
    except ValueError as exc:
        raise ImageReadError(label, f"corrupt JPEG header: {exc}") from exc
    return width, height, colorspace


def _header_size(raw: bytes, head: bytes, label: str) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG, BMP, TIFF or WebP from its header, without decoding pixels
    (None: not recognised, left to OpenCV to refuse)."""
    if head.startswith(PNG_SIGNATURE):
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            raise ImageReadError(label, "corrupt PNG: the first chunk is not IHDR")
        return struct.unpack(">II", raw[16:24])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # metadata quirks (EXIF), which open() already parses; OpenCV judges the pixels
            with Image.open(io.BytesIO(raw)) as im:
                return im.size
    except Image.DecompressionBombError as exc:
        raise ImageReadError(label, f"image header declares an absurd size ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        return None


def _decode_jpeg(raw: bytes, colorspace: str, label: str) -> np.ndarray:
    """Strict libjpeg-turbo decode → RGB ``(H, W, 3)`` or gray ``(H, W)`` uint8."""
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        raise ImageReadError(label, f"unsupported JPEG colour space {colorspace!r} (expected gray or colour); convert it to RGB")
    gray = colorspace == "Gray"
    try:
        image = simplejpeg.decode_jpeg(raw, colorspace="GRAY" if gray else "RGB", strict=True)
    except ValueError as exc:
        raise ImageReadError(label, f"corrupt JPEG data: {exc}") from exc
    return image[:, :, 0] if gray else image


def _decode_buffer(raw: bytes, label: str, max_pixels: int | None) -> tuple[np.ndarray, bool]:
    """Bytes → array as stored, and whether its colour order is RGB (JPEG) rather than BGR."""
    head = raw[:16]
    is_png, is_jpeg = head.startswith(PNG_SIGNATURE), head.startswith(JPEG_SIGNATURE)
    if is_png or is_jpeg:
        reason = (_png_truncation if is_png else _jpeg_truncation)(raw)
        if reason is not None:
            raise ImageReadError(label, reason)
    if is_jpeg:
        width, height, colorspace = _jpeg_header(raw, label)
        size: tuple[int, int] | None = (width, height)
    else:
        size = _header_size(raw, head, label)
    if size is not None and max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ImageReadError(
            label, f"image is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, more than max_pixels={max_pixels} "
            "(raise --max-pixels if such images are expected)"
        )
    if is_jpeg:
        return _decode_jpeg(raw, colorspace, label), True
    buf = np.frombuffer(raw, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageReadError(label, f"OpenCV failed to decode {buf.size} bytes: {exc}") from exc
    if image is None:
        raise ImageReadError(
            label,
            f"OpenCV could not decode {buf.size} bytes (corrupt, truncated or not an image; "
            f"first bytes {head[:8]!r})",
        )
    if image.size == 0:
        raise ImageReadError(label, f"decoded an empty image of shape {tuple(image.shape)}")
    return image, False


def _canonical(image: np.ndarray, rgb_order: bool, label: str, u16_max: int | None) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]  # BGRA -> BGR: alpha is dropped, not composited
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageReadError(label, f"unsupported decoded shape {tuple(image.shape)} (expected gray, BGR or BGRA)")
    if image.dtype == np.uint8:
        colour = ImageFormat.RGB_U8_HWC if rgb_order else ImageFormat.BGR_U8_HWC
        fmt = ImageFormat.GRAY_U8_HW if image.ndim == 2 else colour
    elif image.dtype == np.uint16:
        if u16_max is None:
            raise Undeclared16BitError(
                label, "16-bit image: its bit depth is never guessed; declare the sensor's full-scale value "
                "with u16_max (--u16-max; dataset.u16_max in a train config), e.g. 4095 for a 12-bit camera "
                "or 65535 for the full range"
            )
        fmt = ImageFormat.GRAY_U16_HW if image.ndim == 2 else ImageFormat.BGR_U16_HWC
    else:
        raise ImageReadError(
            label, f"unsupported pixel type {image.dtype} (only 8-bit and 16-bit images are supported)"
        )
    try:
        return normalize_numpy_image(image, input_format=fmt, u16_max=65535 if u16_max is None else u16_max)
    except ImageFormatError as exc:
        raise ImageReadError(label, str(exc)) from exc


def _decode(raw: bytes, name: str, u16_max: int | None, max_pixels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(canonical image, pixels as stored)`` of a file's bytes."""
    if not raw:
        raise ImageReadError(name, "file is empty (0 bytes)")
    image, rgb_order = _decode_buffer(raw, name, max_pixels)
    return _canonical(image, rgb_order, name, u16_max), image


def read_image(path: str | os.PathLike, *, u16_max: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as canonical RGB / uint8 / ``(H, W, 3)``, C-contiguous.

    8- and 16-bit gray, BGR and BGRA files are supported (alpha dropped; 16-bit scaled by
    ``u16_max``, which a 16-bit file requires; a value above it is an error). Images over
    ``max_pixels`` (None: no limit) are refused from their header. Raises
    :class:`ImageReadError` naming the path for every failure.
    """
    return _decode(_read_bytes(path), str(os.fspath(path)), u16_max, max_pixels)[0]


def read_image_source(path: str | os.PathLike, *, u16_max: int | None = None,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, SourceInfo]:
    """:func:`read_image`, and the :class:`SourceInfo` of the bytes read (sha256, encoding, the
    pixels as stored): what a result record names as its source."""
    return decode_image_source(_read_bytes(path), name=str(os.fspath(path)), u16_max=u16_max, max_pixels=max_pixels)


def decode_image(data: bytes, *, name: str, u16_max: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`read_image` for the encoded bytes of a file; ``name`` labels errors."""
    return _decode(bytes(data), name, u16_max, max_pixels)[0]


def decode_image_source(data: bytes, *, name: str, u16_max: int | None = None,
                        max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, SourceInfo]:
    """:func:`decode_image`, and the :class:`SourceInfo` of ``data``. An :class:`ImageReadError`
    raised for bytes that were there carries their digest, size and encoding as ``.source``."""
    raw = bytes(data)
    try:
        canonical, stored = _decode(raw, name, u16_max, max_pixels)
    except ImageReadError as exc:
        if raw:
            exc.source = bytes_source(raw)  # a refused file's record still names its bytes
        raise
    return canonical, file_source(raw, stored)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as ``(H, W)`` uint8 with values in ``{0, 1}`` (any nonzero -> 1).

    Gray masks are used as they are; colour masks (BGR/BGRA) take the maximum over the
    colour channels (alpha ignored), so a pixel is foreground when any colour channel is
    nonzero. 8- and 16-bit masks are accepted. Raises :class:`ImageReadError`.
    """
    image, _ = _decode_buffer(_read_bytes(path), str(os.fspath(path)), DEFAULT_MAX_PIXELS)
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"unsupported mask pixel type {image.dtype} (expected 8- or 16-bit)")
    if image.ndim == 3:
        if image.shape[2] == 1:
            image = image[:, :, 0]
        elif image.shape[2] in (3, 4):
            image = image[:, :, :3].max(axis=2)
        else:
            raise ImageReadError(path, f"unsupported mask shape {tuple(image.shape)}")
    if image.ndim != 2:
        raise ImageReadError(path, f"unsupported mask shape {tuple(image.shape)}")
    return np.ascontiguousarray((image != 0).astype(np.uint8))

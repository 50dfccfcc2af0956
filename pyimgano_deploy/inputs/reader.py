"""Read image and mask files with OpenCV into the canonical RGB / uint8 / HWC image.

Files are read as bytes with ``np.fromfile`` and decoded with ``cv2.imdecode`` (so paths
with spaces and non-ASCII characters work on every platform), always with
``IMREAD_UNCHANGED``, then converted explicitly:

* 8-bit gray -> replicated to RGB; 8-bit BGR -> RGB;
* BGRA (PNG/TIFF/WebP with alpha) -> the alpha channel is **dropped** (not composited);
* 16-bit gray / colour (PNG, TIFF) -> scaled to 8 bits with ``np.rint(x * 255 / u16_max)``
  (round half to even, as in :func:`~pyimgano_deploy.inputs.formats.normalize_numpy_image`);
* EXIF orientation is **not** applied (``IMREAD_UNCHANGED`` keeps the stored pixel grid).

OpenCV returns ``None`` silently for files it cannot decode; here every such case (missing
file, directory, empty, truncated, corrupt, not an image, unsupported bit depth) raises
:class:`ImageReadError`, which names the path and the reason. JPEG and PNG files are also
checked for truncation (JPEG: no EOI marker ``FFD9`` after the last start-of-scan; PNG: the
chunk sequence does not reach ``IEND``) because decoders may return a partial image.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from pyimgano_deploy.inputs.formats import ImageFormat, ImageFormatError, normalize_numpy_image

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "read_mask"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


class ImageReadError(ValueError):
    """An image or mask file could not be read; ``.path`` is the file, ``.reason`` why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(os.fspath(path))
        self.reason = reason
        super().__init__(f"cannot read image '{self.path}': {reason}")


def _read_bytes(path: str | os.PathLike) -> np.ndarray:
    p = Path(os.fspath(path))
    if not p.exists():
        raise ImageReadError(path, "file not found")
    if p.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open file ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def _png_truncation(data: bytes) -> str | None:
    """Reason string when the PNG chunk sequence ends before ``IEND``, else ``None``."""
    pos = len(_PNG_SIGNATURE)
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


def _decode(path: str | os.PathLike) -> np.ndarray:
    """Bytes -> array as stored (``IMREAD_UNCHANGED``); raises for anything not decodable."""
    buf = _read_bytes(path)
    head = buf[:16].tobytes()
    if head.startswith(_PNG_SIGNATURE) or head.startswith(_JPEG_SIGNATURE):
        raw = buf.tobytes()
        check = _png_truncation if head.startswith(_PNG_SIGNATURE) else _jpeg_truncation
        reason = check(raw)
        if reason is not None:
            raise ImageReadError(path, reason)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageReadError(path, f"OpenCV failed to decode {buf.size} bytes: {exc}") from exc
    if image is None:
        raise ImageReadError(
            path,
            f"OpenCV could not decode {buf.size} bytes (corrupt, truncated or not an image; "
            f"first bytes {head[:8]!r})",
        )
    if image.size == 0:
        raise ImageReadError(path, f"decoded an empty image of shape {tuple(image.shape)}")
    return image


def read_image(path: str | os.PathLike, *, u16_max: int = 65535) -> np.ndarray:
    """Read an image file as canonical RGB / uint8 / ``(H, W, 3)``, C-contiguous.

    8- and 16-bit gray, BGR and BGRA files are supported (alpha dropped; 16-bit scaled by
    ``u16_max``; a 16-bit value above ``u16_max`` is an error). Raises
    :class:`ImageReadError` naming the path for every failure.
    """
    image = _decode(path)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]  # BGRA -> BGR: alpha is dropped, not composited
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ImageReadError(path, f"unsupported decoded shape {tuple(image.shape)} (expected gray, BGR or BGRA)")
    if image.dtype == np.uint8:
        fmt = ImageFormat.GRAY_U8_HW if image.ndim == 2 else ImageFormat.BGR_U8_HWC
    elif image.dtype == np.uint16:
        fmt = ImageFormat.GRAY_U16_HW if image.ndim == 2 else ImageFormat.BGR_U16_HWC
    else:
        raise ImageReadError(
            path, f"unsupported pixel type {image.dtype} (only 8-bit and 16-bit images are supported)"
        )
    try:
        return normalize_numpy_image(image, input_format=fmt, u16_max=u16_max)
    except ImageFormatError as exc:
        raise ImageReadError(path, str(exc)) from exc


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file as ``(H, W)`` uint8 with values in ``{0, 1}`` (any nonzero -> 1).

    Gray masks are used as they are; colour masks (BGR/BGRA) take the maximum over the
    colour channels (alpha ignored), so a pixel is foreground when any colour channel is
    nonzero. 8- and 16-bit masks are accepted. Raises :class:`ImageReadError`.
    """
    image = _decode(path)
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

"""What one scored input was, for the audit trail: its bytes' digest, encoding and stored pixels.

A JSONL record says which file produced a score by path; the path can later hold other bytes
(a camera that reuses names, a folder rewritten by a sync job). :class:`SourceInfo` pins the
record to content: the sha256 of the file's bytes (the same digest the bundle uses for its own
files), the encoding found from the file's signature (the decoder is chosen by content, so a
JPEG named ``.png`` is recorded as ``jpeg``), and the pixels as stored before conversion to
canonical RGB / uint8 (``channels`` 1, 3 or 4; ``bit_depth`` 8 or 16), which says when a grey
or 16-bit image was scored by a bundle trained on colour.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from pyimgano_deploy.inputs.formats import ImageFormat, format_channels, parse_image_format

__all__ = ["SourceInfo", "array_source", "encoding_of", "file_source"]

#: file signatures of the encodings the reader decodes (``reader.IMAGE_EXTENSIONS``)
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def encoding_of(head: bytes) -> str | None:
    """The encoding a file's first bytes announce (``png``, ``jpeg``, ``bmp``, ``tiff``,
    ``webp``), or ``None`` when no known signature matches."""
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


@dataclass(frozen=True)
class SourceInfo:
    """One input as it arrived. Files: ``sha256`` (hex) and ``size_bytes`` of the bytes read,
    ``encoding``; arrays: ``input_format`` (the declared format) and no digest. Both: ``width``
    and ``height`` in pixels, ``channels`` and ``bit_depth`` as stored."""

    width: int
    height: int
    channels: int
    bit_depth: int
    encoding: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    input_format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSONL ``source`` object: the fields that apply to this input, in a fixed order."""
        fields = {
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "encoding": self.encoding,
            "input_format": self.input_format,
            "width": self.width,
            "height": self.height,
            "channels": self.channels,
            "bit_depth": self.bit_depth,
        }
        return {k: v for k, v in fields.items() if v is not None}


def _stored(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """``(width, height, channels, bit_depth)`` of a decoded, unconverted array (HW or HWC)."""
    channels = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    return int(pixels.shape[1]), int(pixels.shape[0]), channels, 8 * int(pixels.dtype.itemsize)


def file_source(raw: bytes, pixels: np.ndarray) -> SourceInfo:
    """:class:`SourceInfo` of a file's ``raw`` bytes and its ``pixels`` as the decoder stored them."""
    width, height, channels, depth = _stored(pixels)
    return SourceInfo(width, height, channels, depth, encoding=encoding_of(raw[:16]), size_bytes=len(raw),
                      sha256=hashlib.sha256(raw).hexdigest())


def array_source(array: np.ndarray, input_format: str | ImageFormat, canonical: np.ndarray) -> SourceInfo:
    """:class:`SourceInfo` of a declared numpy input: its format, and the size of the canonical
    image it became (a CHW array's height is not its first axis)."""
    return SourceInfo(int(canonical.shape[1]), int(canonical.shape[0]), format_channels(input_format),
                      8 * int(array.dtype.itemsize), input_format=parse_image_format(input_format).value)

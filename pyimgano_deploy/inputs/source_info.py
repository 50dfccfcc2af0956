"""What one scored input was, for the audit trail: its bytes' digest, encoding and stored pixels.

A JSONL record says which file produced a score by path; the path can later hold other bytes
(a camera that reuses names, a folder rewritten by a sync job). :class:`SourceInfo` pins the
record to content: the sha256 of the file's bytes (the same digest the bundle uses for its own
files), the encoding found from the file's signature (the decoder is chosen by content, so a
JPEG named ``.png`` is recorded as ``jpeg``), and the pixels as stored before conversion to
canonical RGB / uint8 (``channels`` 1, 3 or 4; ``bit_depth`` 8 or 16), and whether its content
is ``grey`` (one channel, or colour channels that are equal: a mono camera saved as RGB).
Exports record the same fact of the run's calibration images (``input.trained_colour``), so
the runtime can say when a grey image meets a bundle trained on colour, or the reverse, and
the range of their aspect ratios (``input.trained_aspect``), so it can say when an input's
shape would be stretched unlike any training image's (a rotated camera, another crop).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

import numpy as np

from pyimgano_deploy.inputs.formats import ImageFormat, format_channels, parse_image_format

__all__ = ["ASPECT_TOLERANCE", "COLOURS", "GREY_CHECK_PIXELS", "JPEG_SIGNATURE", "PNG_SIGNATURE", "SourceInfo", "UNLIKE_TRAINING_POLICIES",
           "array_source", "aspect_differs", "aspect_range", "aspect_text", "bytes_source", "colour_differs", "colour_of", "encoding_of", "file_source",
           "is_grey", "unlike_training"]

#: what ``input.trained_colour`` may say of a training set: every image grey, every one in
#: colour, or both kinds
COLOURS = ("grey", "colour", "mixed")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
#: file signatures of the encodings the reader decodes (``reader.IMAGE_EXTENSIONS``)
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (PNG_SIGNATURE, "png"),
    (JPEG_SIGNATURE, "jpeg"),
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


#: pixels :func:`is_grey` compares at most (whole rows, evenly spaced): about 0.5 ms
GREY_CHECK_PIXELS = 1 << 18


def is_grey(pixels: np.ndarray) -> bool:
    """True when an image (HW, or HWC with 1, 3 or 4 channels; a 4th, alpha, is ignored) has no
    colour: one channel, or three channels equal on every pixel of the rows compared. Rows are
    evenly spaced and at most :data:`GREY_CHECK_PIXELS` pixels are compared (every row of a
    0.26 MP image, every 20th of a 5 MP one), so a scored frame pays under a millisecond; colour
    confined to the rows in between would go unseen, which camera images do not do."""
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return True
    height, width = pixels.shape[:2]
    rows = pixels[:: max(1, -(-height * width // GREY_CHECK_PIXELS))]
    for view in (rows[::16], rows):  # a sixteenth first: colour is told there, at a sixteenth of the cost
        if not (np.array_equal(view[..., 0], view[..., 1]) and np.array_equal(view[..., 1], view[..., 2])):
            return False
    return True


def colour_of(grey_flags: list[bool]) -> str:
    """One of :data:`COLOURS` for a set of images' :func:`is_grey` results (at least one)."""
    if not grey_flags:
        raise ValueError("colour_of needs at least one image")
    return "grey" if all(grey_flags) else "colour" if not any(grey_flags) else "mixed"


def colour_differs(trained: str | None, grey: bool) -> bool:
    """True when an image (``grey`` or not) is of the other kind than a bundle's
    ``input.trained_colour`` says all training images were; never for ``mixed`` or ``None``."""
    return trained in ("grey", "colour") and grey != (trained == "grey")


#: how far, as a fraction, an input's aspect ratio (width / height) may lie outside the training
#: images' range before it counts as another shape: crop rounding and ROI jitter of a few pixels
#: stay well inside it; a rotated camera, a binned sensor mode or another crop do not
ASPECT_TOLERANCE = 0.05


def aspect_range(sizes: Iterable[tuple[int, int]]) -> list[float]:
    """``[min, max]`` of width / height over ``(width, height)`` pairs (at least one), rounded to
    four decimals for ``input.trained_aspect`` (a shift of at most 5e-5, far inside :data:`ASPECT_TOLERANCE`)."""
    ratios = [w / h for w, h in sizes]
    if not ratios:
        raise ValueError("aspect_range needs at least one image size")
    return [round(min(ratios), 4), round(max(ratios), 4)]


def aspect_text(aspect: Sequence[float]) -> str:
    """``input.trained_aspect`` for people: ``2.457``, or ``1.2–2.5`` for a range."""
    lo, hi = aspect
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}–{hi:.4g}"


def aspect_differs(trained: Sequence[float] | None, width: int, height: int) -> bool:
    """True when an image of ``width`` × ``height`` pixels has an aspect ratio more than
    :data:`ASPECT_TOLERANCE` outside a bundle's ``input.trained_aspect`` range; never when the
    bundle records none (older bundles)."""
    if trained is None or width <= 0 or height <= 0:
        return False
    lo, hi = trained
    aspect = width / height
    return aspect < lo / (1 + ASPECT_TOLERANCE) or aspect > hi * (1 + ASPECT_TOLERANCE)


#: what the runtime does with an input unlike the training images (:func:`unlike_training`):
#: score it (and warn once), or refuse it as that input's error
UNLIKE_TRAINING_POLICIES = ("score", "refuse")


def unlike_training(trained_colour: str | None, trained_aspect: Sequence[float] | None, source: "SourceInfo | None") -> dict[str, str]:
    """How a decoded input differs from a bundle's training images: ``{"colour": why}`` by
    :func:`colour_differs`, ``{"aspect": why}`` by :func:`aspect_differs`; empty when it does
    not, or when the bundle records neither."""
    found: dict[str, str] = {}
    if source is None:
        return found
    if source.grey is not None and colour_differs(trained_colour, bool(source.grey)):
        found["colour"] = f"it is {'grey' if source.grey else 'in colour'}, the training images were {trained_colour}"
    if source.width and source.height and aspect_differs(trained_aspect, int(source.width), int(source.height)):
        found["aspect"] = (f"it is {source.width} × {source.height} (aspect {source.width / source.height:.4g}), the training "
                           f"images had aspect {aspect_text(trained_aspect)}")  # type: ignore[arg-type]
    return found


@dataclass(frozen=True)
class SourceInfo:
    """One input as it arrived. Files: ``sha256`` (hex) and ``size_bytes`` of the bytes read,
    ``encoding``; arrays: ``input_format`` (the declared format) and no digest. Decoded inputs:
    ``width`` and ``height`` in pixels, ``channels`` and ``bit_depth`` as stored, and ``grey``
    (:func:`is_grey`); a file whose bytes were read but not decoded has only the first three."""

    width: int | None = None
    height: int | None = None
    channels: int | None = None
    bit_depth: int | None = None
    grey: bool | None = None
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
            "grey": self.grey,
        }
        return {k: v for k, v in fields.items() if v is not None}


def _stored(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """``(width, height, channels, bit_depth)`` of a decoded, unconverted array (HW or HWC)."""
    channels = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    return int(pixels.shape[1]), int(pixels.shape[0]), channels, 8 * int(pixels.dtype.itemsize)


def bytes_source(raw: bytes) -> SourceInfo:
    """:class:`SourceInfo` of a file's ``raw`` bytes alone (digest, size, encoding): what an error
    record of a file that could not be decoded says of it."""
    return SourceInfo(encoding=encoding_of(raw[:16]), size_bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest())


def file_source(raw: bytes, pixels: np.ndarray) -> SourceInfo:
    """:class:`SourceInfo` of a file's ``raw`` bytes and its ``pixels`` as the decoder stored them."""
    width, height, channels, depth = _stored(pixels)
    return replace(bytes_source(raw), width=width, height=height, channels=channels, bit_depth=depth, grey=is_grey(pixels))


def array_source(array: np.ndarray, input_format: str | ImageFormat, canonical: np.ndarray) -> SourceInfo:
    """:class:`SourceInfo` of a declared numpy input: its format, and the size of the canonical
    image it became (a CHW array's height is not its first axis)."""
    channels = format_channels(input_format)
    return SourceInfo(width=int(canonical.shape[1]), height=int(canonical.shape[0]), channels=channels,
                      bit_depth=8 * int(array.dtype.itemsize), grey=channels == 1 or is_grey(canonical),
                      input_format=parse_image_format(input_format).value)

"""Turn what a user passes (paths, arrays, batches, lists) into single canonical images."""

from __future__ import annotations

import os
from typing import Union

import numpy as np

from pyimgano_deploy.inputs.formats import (
    FORMAT_NDIM,
    ImageFormat,
    ImageFormatError,
    normalize_numpy_image,
    parse_image_format,
)
from pyimgano_deploy.inputs.reader import DEFAULT_MAX_PIXELS, read_image_source
from pyimgano_deploy.inputs.source_info import SourceInfo, array_source

__all__ = ["ImageInput", "as_image_list", "describe_input", "load_canonical", "load_canonical_source"]

ImageInput = Union[str, os.PathLike, np.ndarray]

_VALID_NAMES = ", ".join(f.value for f in ImageFormat)


def _undeclared_error() -> ImageFormatError:
    return ImageFormatError(
        "numpy array input needs an explicit input_format (formats are never guessed); "
        f"pass input_format=one of: {_VALID_NAMES}"
    )


def as_image_list(images: object, *, input_format: str | ImageFormat | None = None) -> list[ImageInput]:
    """Flatten ``images`` into a list of single inputs.

    * one path (``str`` / ``os.PathLike``) -> ``[path]``;
    * one array with the declared format's ndim -> ``[array]``; with one more dimension ->
      split along axis 0 (views, so ``(N, H, W)`` with ``gray_u8_hw`` gives N images);
      any other ndim, or an array without ``input_format``, -> ``ImageFormatError``;
    * list / tuple -> ``list(images)`` (items are checked later by :func:`load_canonical`).

    Anything else raises ``TypeError``.
    """
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        if input_format is None:
            raise _undeclared_error()
        fmt = parse_image_format(input_format)
        ndim = FORMAT_NDIM(fmt)
        if images.ndim == ndim:
            return [images]
        if images.ndim == ndim + 1:
            return [images[i] for i in range(images.shape[0])]
        raise ImageFormatError(
            f"input_format={fmt.value}: one image has {ndim} dimensions and a batch {ndim + 1}; "
            f"got an array with shape={tuple(images.shape)}, dtype={images.dtype}"
        )
    if isinstance(images, (list, tuple)):
        return list(images)
    raise TypeError(
        "images must be a path, a numpy array, or a list/tuple of paths and arrays; "
        f"got {type(images).__name__}"
    )


def load_canonical(
    item: ImageInput,
    *,
    input_format: str | ImageFormat | None = None,
    u16_max: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """One input -> canonical RGB / uint8 / ``(H, W, 3)``.

    Paths are read with :func:`read_image` (``input_format`` does not apply to files; the
    file's own encoding is used; ``u16_max`` is required for 16-bit files, ``max_pixels``
    bounds the decoded size). Arrays go through :func:`normalize_numpy_image` and need
    ``input_format`` (a declared 16-bit format without ``u16_max`` means the full 0..65535). Errors: ``ImageReadError`` /
    ``ImageFormatError`` (both ``ValueError``), ``TypeError`` for other item types.
    """
    return load_canonical_source(item, input_format=input_format, u16_max=u16_max, max_pixels=max_pixels)[0]


def load_canonical_source(
    item: ImageInput,
    *,
    input_format: str | ImageFormat | None = None,
    u16_max: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, SourceInfo]:
    """:func:`load_canonical`, and the input's :class:`~pyimgano_deploy.inputs.source_info.SourceInfo`
    (a file's sha256, encoding and stored pixels; an array's declared format)."""
    if isinstance(item, (str, os.PathLike)):
        return read_image_source(item, u16_max=u16_max, max_pixels=max_pixels)
    if isinstance(item, np.ndarray):
        if input_format is None:
            raise _undeclared_error()
        canonical = normalize_numpy_image(item, input_format=input_format, u16_max=65535 if u16_max is None else u16_max)
        return canonical, array_source(item, input_format, canonical)
    raise TypeError(f"an image input must be a path or a numpy array; got {type(item).__name__}")


def describe_input(item: object, index: int) -> str:
    """Short label for logs / JSONL: the path as ``str``, or ``<array #i shape=(..) dtype=..>``."""
    if isinstance(item, (str, os.PathLike)):
        return str(os.fspath(item))
    if isinstance(item, np.ndarray):
        return f"<array #{index} shape={tuple(item.shape)} dtype={item.dtype}>"
    return f"<{type(item).__name__} #{index}>"

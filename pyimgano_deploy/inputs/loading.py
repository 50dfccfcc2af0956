"""The one per-item loader: a user's input → a preprocessed model input, or the reason it failed.

The runtime, the eager ``inference.infer`` and detector fitting all load items through
:func:`load_item`, so a bad input gets the same error type, message and stage everywhere:

* ``read``: not a path or an array, a missing, unreadable or non-regular file, an extension
  that is not an image's, an empty file;
* ``decode``: a corrupt or truncated file, a decoder warning, too many pixels, a 16-bit file
  without ``u16_max``, an array that does not match its declared format;
* ``preprocess``: the preprocessing step refused the canonical image.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

import cv2
import numpy as np

from pyimgano_deploy.inputs.collect import describe_input, load_canonical_source
from pyimgano_deploy.inputs.formats import ImageFormat
from pyimgano_deploy.inputs.reader import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from pyimgano_deploy.inputs.source_info import SourceInfo

T = TypeVar("T")

#: What reading, decoding or preprocessing one input may legitimately raise; anything else
#: is a bug and propagates (ImageReadError and ImageFormatError are ValueErrors).
INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, cv2.error, MemoryError)


@dataclass(frozen=True)
class InferenceError:
    """Why one input produced no score: ``type``, ``message`` and ``stage`` (``read``,
    ``decode``, ``preprocess`` here; ``inference`` or ``postprocess`` later in the runtime)."""

    type: str
    message: str
    stage: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "stage": self.stage}


@dataclass(frozen=True)
class Reading:
    """How the inputs of one call are read: declared array format, 16-bit range, size limit."""

    input_format: ImageFormat | str | None = None
    u16_max: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS


@dataclass
class LoadedItem(Generic[T]):
    """One input after :func:`load_item`: ``value`` (what ``prepare`` returned), the canonical
    image's ``(H, W)`` and the input's ``source``, or ``error``."""

    index: int
    input: str
    value: T | None
    orig_hw: tuple[int, int] | None
    error: InferenceError | None
    ms: float = 0.0  # time spent loading, filled in by callers that report timings
    source: SourceInfo | None = None


def _path_problem(path: Path) -> InferenceError | None:
    """``read``-stage problems found without decoding: existence, file type, extension, size.

    What the path is comes before its extension: a mistyped name or a folder has no image
    extension either, and "not found" or "not a regular file" is what tells its user what to fix."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return InferenceError("FileNotFoundError", f"'{path}': no such file or directory", "read")
    except OSError as exc:
        return InferenceError(type(exc).__name__, f"'{path}': {exc.strerror or exc}", "read")
    if not stat.S_ISREG(st.st_mode):
        return InferenceError("IsADirectoryError", f"'{path}' is not a regular file", "read")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return InferenceError(
            "UnsupportedImageType", f"'{path}' has extension '{path.suffix}', expected one of {list(IMAGE_EXTENSIONS)}", "read"
        )
    if st.st_size == 0:
        return InferenceError("EmptyFile", f"'{path}' is empty (0 bytes)", "read")
    return None


def load_item(item: Any, index: int, prepare: Callable[[np.ndarray], T], reading: Reading = Reading()) -> LoadedItem[T]:
    """Read / decode ``item`` (a path or a declared array) and ``prepare`` it; every expected
    failure becomes the item's :class:`InferenceError` (see the module docstring)."""
    desc = describe_input(item, index)
    if not isinstance(item, (str, os.PathLike, np.ndarray)):
        return LoadedItem(index, desc, None, None,
                          InferenceError("InvalidInput", f"input #{index} is {desc}; expected a file path or a numpy array", "read"))
    if not isinstance(item, np.ndarray):
        problem = _path_problem(Path(os.fspath(item)))
        if problem is not None:
            return LoadedItem(index, desc, None, None, problem)
    stage, source = "decode", None
    try:
        canonical, source = load_canonical_source(item, input_format=reading.input_format, u16_max=reading.u16_max,
                                                  max_pixels=reading.max_pixels)
        stage = "preprocess"
        value = prepare(canonical)
    except INPUT_ERRORS as exc:
        known = source if source is not None else getattr(exc, "source", None)  # a refused file's bytes, when read
        return LoadedItem(index, desc, None, None, InferenceError(type(exc).__name__, str(exc), stage), source=known)
    return LoadedItem(index, desc, value, (int(canonical.shape[0]), int(canonical.shape[1])), None, source=source)


__all__ = ["INPUT_ERRORS", "InferenceError", "LoadedItem", "Reading", "load_item"]

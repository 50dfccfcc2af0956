"""Turning user inputs into preprocessed uint8 NHWC batches for eager detectors."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from pyimgano_deploy.inputs import ImageInput, Preprocess, as_image_list
from pyimgano_deploy.inputs.loading import InferenceError, Reading, load_item


class InputError(ValueError):
    """One input could not be turned into a model input; names the input and the stage."""

    def __init__(self, index: int, description: str, error: InferenceError) -> None:
        super().__init__(f"input #{index} ({description}) failed at {error.stage}: {error.message}")
        self.index = index
        self.description = description
        self.stage = error.stage
        self.error = error


def prepare_one(item: ImageInput, index: int, preprocess: Preprocess, input_format: str | None) -> np.ndarray:
    """Read/normalise and preprocess one input with the shared loader
    (:func:`~pyimgano_deploy.inputs.loading.load_item`); raises :class:`InputError` naming it."""
    loaded = load_item(item, index, preprocess, Reading(input_format=input_format))
    if loaded.error is not None:
        raise InputError(index, loaded.input, loaded.error)
    return loaded.value  # type: ignore[return-value]


def iter_batches(
    images: object,
    preprocess: Preprocess,
    *,
    input_format: str | None,
    batch_size: int,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield ``(indices, uint8 [n, H, W, 3])`` batches; the first bad input raises."""
    items: Sequence[ImageInput] = as_image_list(images, input_format=input_format)
    if len(items) == 0:
        raise ValueError("no images were given")
    for start in range(0, len(items), batch_size):
        idx = list(range(start, min(start + batch_size, len(items))))
        yield idx, np.stack([prepare_one(items[i], i, preprocess, input_format) for i in idx])


def count_inputs(images: object, input_format: str | None) -> int:
    return len(as_image_list(images, input_format=input_format))

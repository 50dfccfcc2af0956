"""Turning user inputs into preprocessed uint8 NHWC batches for eager detectors."""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import numpy as np

from pyimgano_deploy.inputs import ImageInput, Preprocess, as_image_list
from pyimgano_deploy.inputs.loading import InferenceError, Reading, load_item

#: Preprocessed batches up to this many bytes are kept after the first pass, so later passes
#: (epochs, a second pass of a head) do not decode again.
DEFAULT_CACHE_BYTES = 1 << 30


class InputError(ValueError):
    """One input could not be turned into a model input; names the input and the stage."""

    def __init__(self, index: int, description: str, error: InferenceError) -> None:
        super().__init__(f"input #{index} ({description}) failed at {error.stage}: {error.message}")
        self.index = index
        self.description = description
        self.stage = error.stage
        self.error = error


def prepare_one(item: ImageInput, index: int, preprocess: Preprocess, input_format: str | None, u16_max: int | None = None) -> np.ndarray:
    """Read/normalise and preprocess one input with the shared loader
    (:func:`~pyimgano_deploy.inputs.loading.load_item`; ``u16_max``: full scale of 16-bit inputs);
    raises :class:`InputError` naming it."""
    loaded = load_item(item, index, preprocess, Reading(input_format=input_format, u16_max=u16_max))
    if loaded.error is not None:
        raise InputError(index, loaded.input, loaded.error)
    return loaded.value  # type: ignore[return-value]


def iter_batches(
    images: object,
    preprocess: Preprocess,
    *,
    input_format: str | None,
    batch_size: int,
    u16_max: int | None = None,
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield ``(indices, uint8 [n, H, W, 3])`` batches; the first bad input raises."""
    items: Sequence[ImageInput] = as_image_list(images, input_format=input_format)
    if len(items) == 0:
        raise ValueError("no images were given")
    yield from _batches_of(items, preprocess, input_format, batch_size, u16_max)


def _batches_of(items: Sequence[ImageInput], preprocess: Preprocess, input_format: str | None, batch_size: int,
                u16_max: int | None) -> Iterator[tuple[list[int], np.ndarray]]:
    for start in range(0, len(items), batch_size):
        idx = list(range(start, min(start + batch_size, len(items))))
        yield idx, np.stack([prepare_one(items[i], i, preprocess, input_format, u16_max) for i in idx])


class BatchSource:
    """A **re-iterable** source of preprocessed ``uint8 [n, H, W, 3]`` batches for fitting.

    Every ``iter()`` is one full pass over the inputs in order (a head may take several
    passes; trained detectors take epochs). ``len()`` is the number of images. The first
    complete pass is cached when the whole set fits in ``cache_bytes``; the first bad input
    raises :class:`InputError`. ``progress`` shows a bar on stderr per pass, titled ``desc``;
    ``u16_max`` is the full-scale value of 16-bit inputs (required for them, never guessed).
    """

    def __init__(self, images: object, preprocess: Preprocess, *, input_format: str | None, batch_size: int,
                 progress: bool = False, desc: str = "reading images", cache_bytes: int = DEFAULT_CACHE_BYTES,
                 u16_max: int | None = None) -> None:
        self.items: Sequence[ImageInput] = as_image_list(images, input_format=input_format)
        if len(self.items) == 0:
            raise ValueError("no images were given")
        self.preprocess = preprocess
        self.input_format = input_format
        self.u16_max = u16_max
        self.batch_size = int(batch_size)
        self.progress = progress
        self.desc = desc
        h, w = preprocess.output_size
        self._cacheable = len(self.items) * h * w * 3 <= cache_bytes
        self._cache: list[np.ndarray] | None = None
        self.passes = 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.passes += 1
        if self._cache is not None:
            yield from self._cache
            return
        kept: list[np.ndarray] = []
        with progress_bar(len(self.items), f"{self.desc} (pass {self.passes})" if self.passes > 1 else self.desc, "img", self.progress) as bar:
            for idx, batch in _batches_of(self.items, self.preprocess, self.input_format, self.batch_size, self.u16_max):
                if self._cacheable:
                    kept.append(batch)
                yield batch
                bar.update(len(idx))
        if self._cacheable:
            self._cache = kept


def progress_bar(total: int, desc: str, unit: str, enabled: bool) -> Any:
    """A tqdm bar on stderr (hidden when stderr is not a terminal or ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=None if enabled else True)


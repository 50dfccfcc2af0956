"""``Runtime``: score images (paths or declared numpy arrays) with one engine session.

A ``Runtime`` composes four pieces, each readable alone:

* the per-item loader (:func:`~pyimgano_deploy.inputs.loading.load_item`): a bad input becomes
  ``InferenceResult.failure`` with its stage (``read``, ``decode``, ``preprocess``) and the
  batch goes on;
* the preparing workers (:mod:`.workers`): items in fixed-size chunks, preprocessed in
  ``num_workers`` threads when asked;
* the scheduled session (:mod:`.streams`): static batches padded, ``streams`` concurrent calls
  of ``micro_batch`` images (throughput mode), outputs checked;
* the result builder (:mod:`.finishing`): scores, labels, maps at the original size, defects,
  and the ``inference`` / ``postprocess`` errors.

Bundles with a ``tiling`` block are scored tile by tile at the image's own resolution
(:mod:`.tile_scorer`, the same code as the workbench); their maps are full-resolution blended
maps. One ``Runtime`` may be shared by several threads; results do not depend on how many
threads call ``infer``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np

from pyimgano_deploy.inputs import DEFAULT_MAX_PIXELS, ImageFormat, ImageFormatError, Preprocess, as_image_list, parse_image_format
from pyimgano_deploy.inputs.loading import InferenceError, LoadedItem, Reading, load_item
from pyimgano_deploy.inputs.reader import Undeclared16BitError
from pyimgano_deploy.inputs.source_info import UNLIKE_TRAINING_POLICIES, unlike_training
from pyimgano_deploy.runtimes.batching import effective_batch_size
from pyimgano_deploy.runtimes.errors import EngineRunError
from pyimgano_deploy.runtimes.finishing import ResultBuilder, map_to_original
from pyimgano_deploy.runtimes.results import InferenceResult, map_resolution
from pyimgano_deploy.runtimes.streams import ScheduledSession, Session
from pyimgano_deploy.runtimes.tile_scorer import TiledScorer, bundle_tiling
from pyimgano_deploy.runtimes.workers import prepared_chunks

_LOG = logging.getLogger(__name__)


@dataclass
class RuntimeItem:
    """One scored input in stream order: its position, label for logs, result and time."""

    index: int
    input: str
    result: InferenceResult
    timing_ms: float
    #: the ``postprocess.defects.DefectsResult`` (mask + regions, map space) when defects were
    #: asked and extracted, for callers that save masks / RLE / overlays; ``None`` otherwise.
    defects_result: Any = None


class Runtime:
    """A verified bundle plus an open engine session. Build it with ``load_bundle``."""

    def __init__(
        self,
        bundle: Any,
        session: Session,
        *,
        engine_info: dict[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        streams: int = 1,
        micro_batch: int | None = None,
    ) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.bundle = bundle
        self.session = session
        self.engine = ScheduledSession(session, streams=streams, micro_batch=micro_batch)
        self.engine_info: dict[str, Any] = dict(engine_info or {})
        self.preprocess: Preprocess = bundle.preprocess
        self.results = ResultBuilder(bundle, self.preprocess)
        self.threshold: float | None = self.results.threshold
        self.batch_size = effective_batch_size(
            int(batch_size),
            static_batch=getattr(session, "static_batch", None),
            max_batch=getattr(session, "max_batch", None),
        )
        self.num_workers = int(num_workers)
        self._u16_noted: set[int] = set()
        self._unlike_noted: set[tuple] = set()
        self.streams = self.engine.streams
        self.micro_batch = self.engine.micro_batch
        spec = bundle_tiling(bundle)
        #: the tiled path (``None``: the bundle has no tiling block; whole images are scored)
        self.tiled: TiledScorer | None = None if spec is None else TiledScorer(spec, self.preprocess)
        self.engine_info.setdefault("tiling", None if spec is None else spec.to_dict())
        self.engine_info.setdefault("batch_size", self.batch_size)
        self.engine_info.setdefault("static_batch", getattr(session, "static_batch", None))
        self.engine_info.setdefault("streams", self.streams)
        self.engine_info.setdefault("micro_batch", self.micro_batch)

    # ------------------------------------------------------------------ engine
    def run_batch(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run preprocessed ``uint8 [B,h,w,3]`` through the scheduled session (:mod:`.streams`).

        Returns ``(score float32 [B], anomaly_map float32 [B,h,w])``; raises ``EngineRunError``
        when the engine fails or returns outputs of the wrong shape.
        """
        return self.engine.run(batch_u8)

    def stop_streams(self) -> None:
        """Shut the stream threads down (they restart on the next batch); the session stays open."""
        self.engine.stop()

    # ------------------------------------------------------------------ public API
    def infer(self, images: Any, **options: Any) -> list[InferenceResult]:
        """Score ``images``: a path, a list of paths and/or arrays, or one array / a batch
        array in the declared ``input_format``. One ``InferenceResult`` per input, in order:
        an element that is neither a path nor an array (``None``, say) is that item's error.

        ``options`` are :meth:`infer_iter`'s: ``input_format``, ``include_maps`` (True or
        ``"original"``: maps at the original image size; ``"model"``: at the model's scale), ``defects``
        (a ``postprocess.defects.DefectsConfig``; ``result.defects`` is then the
        ``DefectsResult.to_record()`` dict, boxes also scaled to the original image),
        ``u16_max`` (the full-scale value of 16-bit inputs, required for 16-bit files, never
        guessed), ``max_pixels`` (files over it are refused from their header; None: no limit) and
        ``unlike_training`` ("score", the default: an input of another colour or aspect ratio than
        the training images is scored, with one warning per kind; "refuse": it is that input's
        ``UnlikeTrainingError``, stage ``preprocess``).
        """
        return [item.result for item in self.infer_iter(images, **options)]

    def infer_iter(
        self,
        images: Any,
        *,
        input_format: str | ImageFormat | None = None,
        include_maps: bool | str = False,
        defects: Any = None,
        u16_max: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        unlike_training: str = "score",
    ) -> Iterator[RuntimeItem]:
        """Like :meth:`infer`, but streams: consumes ``images`` (any iterable, e.g. a generator
        of paths) chunk by chunk and yields a :class:`RuntimeItem` per input, in order, so
        memory stays flat for big folders. The options are documented on :meth:`infer`."""
        fmt = None if input_format is None else parse_image_format(input_format)
        if isinstance(images, (str, os.PathLike, np.ndarray, list, tuple)):
            items: Iterable[Any] = as_image_list(images, input_format=fmt)
        else:
            items = images
        map_resolution(include_maps)  # a bad value fails here, before any input is read
        if unlike_training not in UNLIKE_TRAINING_POLICIES:
            raise ValueError(f"unlike_training must be one of {', '.join(UNLIKE_TRAINING_POLICIES)}, got {unlike_training!r}")
        reading = Reading(fmt, u16_max, max_pixels)
        self._note_u16_max(u16_max)
        policy = unlike_training
        for chunk in prepared_chunks(items, self.batch_size, lambda i, item: self._prepare(i, item, reading, policy), self.num_workers):
            yield from self._score_chunk(chunk, include_maps, defects)

    def _note_u16_max(self, u16_max: int | None) -> None:
        """Warn once per value when ``u16_max`` is not the full scale the bundle was trained with:
        the same pixels then reach the model at another brightness."""
        trained = self.bundle.trained_u16_max
        if u16_max is None or trained is None or u16_max == trained or u16_max in self._u16_noted:
            return
        self._u16_noted.add(u16_max)
        _LOG.warning("u16_max %d differs from the %d this bundle's training images declared (bundle.json input.u16_max): "
                     "16-bit inputs are scaled %.3g× as bright as in training", u16_max, trained, trained / u16_max)

    def _check_unlike(self, loaded: LoadedItem, policy: str) -> None:
        """An input unlike the training images (:func:`unlike_training`: grey against colour or the
        reverse, another aspect ratio) is scored and warned about once per kind and direction, or,
        with ``policy`` "refuse", becomes its error: the model would see it unlike anything it was
        fitted on, and its score would say more about the camera than about the part."""
        found = unlike_training(self.bundle.trained_colour, self.bundle.trained_aspect, loaded.source)
        if not found:
            return
        keys = {"colour": "trained_colour", "aspect": "trained_aspect"}
        where = ", ".join(f"bundle.json input.{keys[k]}" for k in found)
        if policy == "refuse":
            loaded.value, loaded.error = None, InferenceError(
                "UnlikeTrainingError", f"input {loaded.input}: " + "; ".join(found.values()) + f" ({where}); not scored "
                "(unlike-training: refuse)", "preprocess")
            return
        for kind, why in found.items():
            noted = (kind, bool(loaded.source.grey)) if kind == "colour" else (kind,)  # type: ignore[union-attr]
            if noted in self._unlike_noted:
                continue
            self._unlike_noted.add(noted)
            _LOG.warning("input %s: %s (bundle.json input.%s): its score is not comparable with training's; check the "
                         "camera, or export a bundle trained on such images. Further such inputs are not reported here; "
                         "each record's source says which they are, and the infer summary counts them.",
                         loaded.input, why, keys[kind])

    def close(self) -> None:
        self.stop_streams()
        close = getattr(self.session, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        info = self.engine_info
        return (
            f"Runtime(bundle={str(self.bundle.root)!r}, engine={info.get('engine')!r}, "
            f"file={info.get('file')!r}, precision={info.get('precision')!r}, batch_size={self.batch_size}, "
            f"streams={self.streams}, micro_batch={self.micro_batch})"
        )

    # ------------------------------------------------------------------ preprocessing
    def _prepare(self, index: int, item: Any, reading: Reading, unlike: str = "score") -> LoadedItem:
        """Read / decode / preprocess one input with the one per-item loader
        (:func:`~pyimgano_deploy.inputs.loading.load_item`); failures become its error."""
        t0 = time.perf_counter()
        if isinstance(item, np.ndarray) and reading.input_format is None:
            raise ImageFormatError(
                "numpy array inputs need an explicit input_format (formats are never guessed); "
                f"got an array with shape={tuple(item.shape)} dtype={item.dtype} at index {index}"
            )
        loaded = load_item(item, index, self.preprocess if self.tiled is None else self.tiled.prepare, reading)
        loaded.ms = (time.perf_counter() - t0) * 1e3
        if loaded.error is None:
            self._check_unlike(loaded, unlike)
        trained = self.bundle.trained_u16_max
        if loaded.error is not None and loaded.error.type == Undeclared16BitError.__name__ and trained is not None:
            loaded.error = replace(loaded.error, message=f"{loaded.error.message}; this bundle was trained on 16-bit images "
                                   f"with u16_max {trained} (bundle.json input.u16_max): pass --u16-max {trained} for that camera")
        return loaded

    # ------------------------------------------------------------------ scoring
    def _score_chunk(self, prepared: list[LoadedItem], include_maps: bool | str, defects: Any) -> Iterator[RuntimeItem]:
        ok = [p for p in prepared if p.error is None]
        done: dict[int, tuple[InferenceResult, float, Any]] = {}
        if ok:
            score = self._score_plain if self.tiled is None else self._score_tiled
            done = score(ok, include_maps, defects)
        for p in prepared:
            if p.error is not None:
                yield RuntimeItem(p.index, p.input, self.results.failure(p.error, p.source), p.ms)
            else:
                result, ms, found = done[p.index]
                yield RuntimeItem(p.index, p.input, replace(result, source=p.source), ms, found)

    def _score_plain(self, ok: list[LoadedItem], include_maps: bool | str, defects: Any) -> dict[int, tuple[InferenceResult, float, Any]]:
        """One engine batch for the whole chunk; an engine failure fails every item of it."""
        done: dict[int, tuple[InferenceResult, float, Any]] = {}
        t0 = time.perf_counter()
        try:
            scores, maps = self.run_batch(np.stack([p.value for p in ok]))  # type: ignore[misc]
        except EngineRunError as exc:
            share = (time.perf_counter() - t0) * 1e3 / len(ok)
            err = InferenceError(type(exc).__name__, str(exc), "inference")
            return {p.index: (self.results.failure(err), p.ms + share, None) for p in ok}
        share = (time.perf_counter() - t0) * 1e3 / len(ok)
        for j, p in enumerate(ok):
            t1 = time.perf_counter()
            result, found = self.results.finish(p.input, scores[j], p.orig_hw, model_map=lambda m=maps[j]: m,
                                                full_map=None, include_maps=include_maps, defects=defects)
            done[p.index] = (result, p.ms + share + (time.perf_counter() - t1) * 1e3, found)
        return done

    def _score_tiled(self, ok: list[LoadedItem], include_maps: bool | str, defects: Any) -> dict[int, tuple[InferenceResult, float, Any]]:
        """Tiles of the whole chunk through the engine (:mod:`.tile_scorer`), results built here."""
        tiled = self.tiled
        assert tiled is not None
        done: dict[int, tuple[InferenceResult, float, Any]] = {}
        scored = tiled.score(self.run_batch, ok, self.batch_size)
        for p in ok:
            t1 = time.perf_counter()
            item = scored[p.index]
            if item.error is not None:
                result, found = self.results.failure(item.error), None
            else:
                full = item.full_map
                result, found = self.results.finish(p.input, item.score, p.orig_hw, model_map=lambda f=full: tiled.model_map(f),
                                                    full_map=full, include_maps=include_maps, defects=defects)
            done[p.index] = (result, p.ms + item.engine_ms + (time.perf_counter() - t1) * 1e3, found)
        return done

    def defects_threshold(self, config: Any) -> tuple[float, dict[str, Any]]:
        """``(value, provenance)`` of the pixel threshold a defects ``config`` asks for."""
        return self.results.defects_threshold(config)

    def map_to_original(self, amap: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
        """A model-resolution map → float32 ``[H, W]`` at the original image size."""
        return map_to_original(self.preprocess, amap, orig_hw)

"""``Runtime``: score images (paths or declared numpy arrays) with one engine session.

Per-item failures never stop a batch: each becomes ``InferenceResult.failure`` with the stage
where it failed (``read``, ``decode``, ``preprocess``, ``inference``, ``postprocess``). Items
are grouped in fixed-size batches; engines with a static batch get the last batch padded by
repeating its last image. Preprocessing may run in ``num_workers`` threads (OpenCV releases
the GIL). With ``streams`` > 1 each batch is cut into pieces scored concurrently by the same
(thread-safe) session, ``streams`` calls at a time, each using its share of the intra-op
threads; ``micro_batch`` sets the images per call (default: the batch split evenly over the
streams). On a CPU this avoids the per-operator fork/join of one call spread over all cores
and keeps each call's activations small (throughput mode, see :mod:`.schedule`;
``streams=1`` keeps the lowest latency). One ``Runtime`` may be shared by several
threads: sessions that are not thread-safe are called under a lock, and results do not
depend on how many threads call ``infer``.

Bundles with a ``tiling`` block are scored tile by tile at the image's own resolution, with the
same code as the workbench (see :mod:`.tiled`); their maps are full-resolution blended maps.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol

import cv2
import numpy as np

from pyimgano_deploy.bundles.golden import GOLDEN_SPLIT
from pyimgano_deploy.inputs import DEFAULT_MAX_PIXELS, ImageFormat, ImageFormatError, Preprocess, as_image_list, parse_image_format
from pyimgano_deploy.inputs.loading import LoadedItem, Reading, load_item
from pyimgano_deploy.postprocess.maps import resize_map
from pyimgano_deploy.postprocess.thresholds import apply_threshold
from pyimgano_deploy.runtimes.batching import effective_batch_size, iter_chunks, pad_batch, split_even
from pyimgano_deploy.runtimes.errors import EngineRunError
from pyimgano_deploy.runtimes.results import InferenceError, InferenceResult
from pyimgano_deploy.runtimes.tiled import TiledScorer, bundle_tiling

_PREFETCH = 2  # chunks prepared ahead of the engine when num_workers > 0


class Session(Protocol):
    """What the runtime needs from an engine session (OnnxSession, TensorRTSession)."""

    kind: str
    thread_safe: bool
    static_batch: int | None
    providers: list[str]

    def run(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


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
        if streams < 1:
            raise ValueError(f"streams must be >= 1, got {streams}")
        if micro_batch is not None and micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1 or None, got {micro_batch}")
        if micro_batch is not None and getattr(session, "static_batch", None):
            raise ValueError(f"micro_batch does not apply to an engine with a static batch of {session.static_batch}")
        if streams > 1 and not getattr(session, "thread_safe", False):
            raise ValueError(
                f"streams={streams} needs a session that can run concurrently (ONNX Runtime); "
                f"this {getattr(session, 'kind', type(session).__name__)} session runs one batch at a time: use streams=1"
            )
        self.bundle = bundle
        self.session = session
        self.engine_info: dict[str, Any] = dict(engine_info or {})
        self.preprocess: Preprocess = bundle.preprocess
        calib = bundle.image_threshold
        self.threshold: float | None = None if calib is None else float(calib.value)
        self.batch_size = effective_batch_size(
            int(batch_size),
            static_batch=getattr(session, "static_batch", None),
            max_batch=getattr(session, "max_batch", None),
        )
        self.num_workers = int(num_workers)
        self.streams = int(streams)
        self.micro_batch = None if micro_batch is None else int(micro_batch)
        self._stream_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._lock = None if getattr(session, "thread_safe", False) else threading.Lock()
        self._thresholds: dict[Any, tuple[float, dict[str, Any]]] = {}  # defects config -> pixel threshold
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
        """Run preprocessed ``uint8 [B,h,w,3]`` through the engine (padding a static batch;
        cut into calls of ``micro_batch`` images, ``streams`` of them at a time, when either is set).

        Returns ``(score float32 [B], anomaly_map float32 [B,h,w])``; raises ``EngineRunError``
        when the engine fails or returns outputs of the wrong shape.
        """
        n = len(batch_u8)
        if self.micro_batch is not None:
            bounds = [(s, min(s + self.micro_batch, n)) for s in range(0, n, self.micro_batch)]
        else:
            bounds = split_even(n, self.streams)
        pieces = [batch_u8[s:e] for s, e in bounds]
        if self.streams > 1 and len(pieces) > 1:
            outputs = list(self._streams().map(self._run_engine, pieces))
        else:
            outputs = [self._run_engine(piece) for piece in pieces]
        if len(outputs) == 1:
            return outputs[0]
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def stop_streams(self) -> None:
        """Shut the stream threads down (they restart on the next batch); the session stays open."""
        with self._pool_lock:
            pool, self._stream_pool = self._stream_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _streams(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._stream_pool is None:
                self._stream_pool = ThreadPoolExecutor(self.streams, thread_name_prefix="pyimgano-stream")
            return self._stream_pool

    def _run_engine(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One engine call per static batch (or one for the whole piece)."""
        n = len(batch_u8)
        static = getattr(self.session, "static_batch", None)
        outputs: list[tuple[np.ndarray, np.ndarray]] = []
        step = static or n
        for start in range(0, n, step):
            part = batch_u8[start : start + step]
            feed = pad_batch(part, static) if static else part
            if self._lock is None:
                score, amap = self.session.run(feed)
            else:
                with self._lock:
                    score, amap = self.session.run(feed)
            score, amap = np.asarray(score), np.asarray(amap)
            if score.shape != (len(feed),) or amap.ndim != 3 or amap.shape[0] != len(feed):
                raise EngineRunError(
                    f"engine returned score {score.shape} and anomaly_map {amap.shape} "
                    f"for a batch of {len(feed)}; expected [B] and [B,H,W]"
                )
            outputs.append((score[: len(part)], amap[: len(part)]))
        return (
            np.concatenate([o[0] for o in outputs]).astype(np.float32, copy=False),
            np.concatenate([o[1] for o in outputs]).astype(np.float32, copy=False),
        )

    # ------------------------------------------------------------------ public API
    def infer(
        self,
        images: Any,
        *,
        input_format: str | ImageFormat | None = None,
        include_maps: bool = False,
        defects: Any = None,
        u16_max: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> list[InferenceResult]:
        """Score ``images``: a path, a list of paths and/or arrays, or one array / a batch
        array in the declared ``input_format``. One ``InferenceResult`` per input, in order:
        an element that is neither a path nor an array (``None``, say) is that item's error.

        ``u16_max`` is the full-scale value of 16-bit inputs (required for 16-bit files, never
        guessed); files over ``max_pixels`` (None: no limit) are refused from their header.

        ``defects``: a ``postprocess.defects.DefectsConfig`` to extract defect regions from
        each map (with the bundle's pixel threshold); ``result.defects`` is then the
        ``DefectsResult.to_record()`` dict (boxes also scaled to the original image).
        """
        stream = self.infer_iter(images, input_format=input_format, include_maps=include_maps, defects=defects,
                                 u16_max=u16_max, max_pixels=max_pixels)
        return [item.result for item in stream]

    def infer_iter(
        self,
        images: Any,
        *,
        input_format: str | ImageFormat | None = None,
        include_maps: bool = False,
        defects: Any = None,
        u16_max: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> Iterator[RuntimeItem]:
        """Like :meth:`infer`, but streams: consumes ``images`` (any iterable, e.g. a generator
        of paths) chunk by chunk and yields a :class:`RuntimeItem` per input, in order, so
        memory stays flat for big folders."""
        fmt = None if input_format is None else parse_image_format(input_format)
        if isinstance(images, (str, os.PathLike, np.ndarray, list, tuple)):
            items: Iterable[Any] = as_image_list(images, input_format=fmt)
        else:
            items = images
        reading = Reading(fmt, u16_max, max_pixels)
        for prepared in self._prepared_chunks(items, reading):
            yield from self._score_chunk(prepared, include_maps, defects)

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
    def _prepare(self, index: int, item: Any, reading: Reading) -> LoadedItem:
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
        return loaded

    def _prepared_chunks(self, items: Iterable[Any], reading: Reading) -> Iterator[list[LoadedItem]]:
        chunks = iter_chunks(enumerate(items), self.batch_size)
        if self.num_workers == 0:
            for chunk in chunks:
                yield [self._prepare(i, item, reading) for i, item in chunk]
            return
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="pyimgano-preprocess")
        try:
            pending: deque[list[Future[LoadedItem]]] = deque()
            for chunk in chunks:
                pending.append([pool.submit(self._prepare, i, item, reading) for i, item in chunk])
                if len(pending) > _PREFETCH:
                    yield [f.result() for f in pending.popleft()]
            while pending:
                yield [f.result() for f in pending.popleft()]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ scoring
    def _score_chunk(self, prepared: list[LoadedItem], include_maps: bool, defects: Any) -> Iterator[RuntimeItem]:
        ok = [p for p in prepared if p.error is None]
        done: dict[int, tuple[InferenceResult, float, Any]] = {}
        if ok and self.tiled is not None:
            done = self.tiled.score(self, ok, include_maps, defects)
        elif ok:
            t0 = time.perf_counter()
            try:
                scores, maps = self.run_batch(np.stack([p.value for p in ok]))  # type: ignore[misc]
            except EngineRunError as exc:
                share = (time.perf_counter() - t0) * 1e3 / len(ok)
                err = InferenceError(type(exc).__name__, str(exc), "inference")
                for p in ok:
                    done[p.index] = (InferenceResult.failure(err, self.threshold), p.ms + share, None)
            else:
                share = (time.perf_counter() - t0) * 1e3 / len(ok)
                for j, p in enumerate(ok):
                    t1 = time.perf_counter()
                    result, found = self._finish(p, scores[j], maps[j], include_maps, defects)
                    done[p.index] = (result, p.ms + share + (time.perf_counter() - t1) * 1e3, found)
        for p in prepared:
            if p.error is not None:
                yield RuntimeItem(p.index, p.input, InferenceResult.failure(p.error, self.threshold), p.ms)
            else:
                result, ms, found = done[p.index]
                yield RuntimeItem(p.index, p.input, result, ms, found)

    def _finish(
        self, p: LoadedItem, score: np.floating, amap: np.ndarray, include_maps: bool, defects: Any
    ) -> tuple[InferenceResult, Any]:
        """The result for one scored item, and the ``DefectsResult`` when defects were extracted."""
        value = float(score)
        if not math.isfinite(value):
            err = InferenceError("NonFiniteScore", f"engine returned score={value} for {p.input}", "inference")
            return InferenceResult.failure(err, self.threshold), None
        out_map, found = None, None
        if include_maps or defects is not None:
            if not np.all(np.isfinite(amap)):
                err = InferenceError("NonFiniteAnomalyMap", f"engine returned NaN/inf map values for {p.input}", "inference")
                return InferenceResult.failure(err, self.threshold), None
            try:
                if include_maps:
                    out_map = self.map_to_original(amap, p.orig_hw)  # type: ignore[arg-type]
                if defects is not None:
                    found = self._defects(amap, p.orig_hw, defects)  # type: ignore[arg-type]
            except (ValueError, cv2.error) as exc:
                err = InferenceError(type(exc).__name__, str(exc), "postprocess")
                return InferenceResult.failure(err, self.threshold), None
        result = InferenceResult(
            score=value,
            label=apply_threshold(value, self.threshold),
            threshold=self.threshold,
            anomaly_map=out_map,
            defects=None if found is None else found.to_record(),
        )
        return result, found

    def _defects(self, amap: np.ndarray, orig_hw: tuple[int, int], config: Any) -> Any:
        """``DefectsResult`` of one model-resolution map (boxes also scaled to ``orig_hw``)."""
        from pyimgano_deploy.postprocess.defects import extract_defects  # noqa: PLC0415 - only when asked

        return extract_defects(amap, config, pixel_threshold=self.defects_threshold(config)[0], image_size=orig_hw)

    def defects_threshold(self, config: Any) -> tuple[float, dict[str, Any]]:
        """``(value, provenance)`` of the pixel threshold ``config`` asks for, resolved once per
        config by the library's one resolver (``normal_quantile``: of the bundle's golden maps)."""
        from pyimgano_deploy.postprocess.defects import pixel_threshold_for_config  # noqa: PLC0415

        found = self._thresholds.get(config)
        if found is None:
            maps = self.bundle.load_golden()["anomaly_map"] if config.pixel_threshold_source == "normal_quantile" else None
            found = self._thresholds[config] = pixel_threshold_for_config(
                config, stored=self.bundle.pixel_threshold, normal_maps=maps, source_split=GOLDEN_SPLIT)
        return found

    def map_to_original(self, amap: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
        """A model-resolution map → float32 ``[H, W]`` at the original image size (bilinear).

        With a centre crop, the map is placed where the crop was taken in the resized image
        and the border that was cropped away (never scored) is filled with the map's minimum.
        """
        pre = self.preprocess
        if pre.center_crop is not None:
            top, left, ch, cw = pre.crop_box()
            inner = resize_map(amap, (ch, cw))
            canvas = np.full(pre.size, float(inner.min()), dtype=np.float32)
            canvas[top : top + ch, left : left + cw] = inner
            amap = canvas
        return resize_map(amap, (int(orig_hw[0]), int(orig_hw[1])))

"""``load_bundle``: verify a bundle, pick an engine for this machine, open it → ``Runtime``."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import onnxruntime as ort

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.reader import Bundle
from pyimgano_deploy.runtimes.errors import EngineLoadError
from pyimgano_deploy.runtimes.onnx_session import OnnxSession
from pyimgano_deploy.runtimes.runtime import Runtime, Session
from pyimgano_deploy.runtimes.selection import EngineChoice, select_engine
from pyimgano_deploy.runtimes.tensorrt_session import TensorRTSession, probe_tensorrt

_LOG = logging.getLogger(__name__)


def open_session(bundle: Bundle, choice: EngineChoice, *, intra_op_threads: int | None = None) -> Session:
    """Open the engine ``choice`` of ``bundle``; ``EngineLoadError`` when it cannot be opened."""
    path = bundle.file(str(choice.entry["file"]))
    if choice.kind == "tensorrt":
        session: Session = TensorRTSession(path)
    else:
        session = OnnxSession(path, providers=choice.providers, intra_op_threads=intra_op_threads)
    expected = bundle.preprocess.output_size
    got = getattr(session, "input_hw", None)
    if got is not None and tuple(got) != tuple(expected):
        raise EngineLoadError(
            f"{choice.entry['file']}: model input is {got[0]}x{got[1]} (HxW) but the bundle's "
            f"preprocessing produces {expected[0]}x{expected[1]}"
        )
    return session


def load_bundle(
    path: str | os.PathLike[str],
    *,
    device: str = "auto",
    engine: str = "auto",
    precision: str = "auto",
    batch_size: int = 8,
    intra_op_threads: int | None = None,
    providers: Sequence[Any] | None = None,
    num_workers: int = 0,
    verify_checksums: bool = True,
    streams: int = 1,
) -> Runtime:
    """Verify the bundle at ``path`` (``read_bundle``: schema, paths, checksums) before loading
    anything, choose an engine (see :mod:`pyimgano_deploy.runtimes.selection`), open it, and
    return a :class:`Runtime`. ``runtime.engine_info`` records the choice and the reasons.

    ``streams`` > 1 (ONNX Runtime only) cuts each batch into that many concurrent calls of
    one session, each with ``threads // streams`` intra-op threads (``threads`` =
    ``intra_op_threads`` or the CPU count): CPU throughput mode, see :class:`Runtime`.

    Raises ``BundleError`` subclasses for an invalid bundle (exit code 3/4), ``ValueError``
    for an unknown device/engine/precision or ``streams`` with a TensorRT engine, and
    :class:`EngineLoadError` (exit code 5) when no engine can run here.
    """
    bundle = read_bundle(path, verify_checksums=verify_checksums)
    return open_runtime(
        bundle,
        device=device,
        engine=engine,
        precision=precision,
        batch_size=batch_size,
        intra_op_threads=intra_op_threads,
        providers=providers,
        num_workers=num_workers,
        streams=streams,
    )


def stream_threads(intra_op_threads: int | None, streams: int) -> int | None:
    """Intra-op threads of the session serving ``streams`` concurrent calls (None: ORT's default)."""
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    if streams == 1:
        return intra_op_threads
    total = intra_op_threads if intra_op_threads is not None else (os.cpu_count() or 1)
    return max(1, int(total) // streams)


def open_runtime(
    bundle: Bundle,
    *,
    device: str = "auto",
    engine: str = "auto",
    precision: str = "auto",
    batch_size: int = 8,
    intra_op_threads: int | None = None,
    providers: Sequence[Any] | None = None,
    num_workers: int = 0,
    streams: int = 1,
) -> Runtime:
    """:func:`load_bundle` for an already verified :class:`Bundle`."""
    session_threads = stream_threads(intra_op_threads, streams)
    available = ort.get_available_providers()
    choice = select_engine(
        bundle.engines,
        device=device,
        engine=engine,
        precision=precision,
        providers=providers,
        available_providers=available,
        probe_tensorrt=probe_tensorrt,
    )
    if streams > 1 and choice.kind == "tensorrt":
        raise ValueError(f"streams={streams} applies to ONNX Runtime; the TensorRT engine {choice.entry.get('file')} runs one batch at a time: use streams=1 or engine='onnx'")
    try:
        session = open_session(bundle, choice, intra_op_threads=session_threads)
    except EngineLoadError as exc:
        if choice.kind != "tensorrt" or engine == "tensorrt":
            raise
        message = f"cannot open TensorRT engine {choice.entry.get('file')} ({exc}); falling back to ONNX Runtime"
        fallback = select_engine(
            bundle.engines,
            device=device,
            engine="onnx",
            precision=precision,
            providers=providers,
            available_providers=available,
        )
        fallback.reasons[:0] = [*choice.reasons, message]
        choice = fallback
        session = open_session(bundle, choice, intra_op_threads=session_threads)
    for reason in choice.reasons:
        (_LOG.warning if "falling back" in reason else _LOG.info)("engine selection: %s", reason)
    info = choice.info()
    info["session_providers"] = list(getattr(session, "providers", []))
    info["intra_op_threads"] = session_threads
    _LOG.info(
        "loaded %s with %s (%s, %s, %s)", bundle.root, info["file"], info["engine"], info["precision"], info["device"]
    )
    return Runtime(bundle, session, engine_info=info, batch_size=batch_size, num_workers=num_workers, streams=streams)

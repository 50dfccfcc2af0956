"""``load_bundle``: verify a bundle, pick an engine for this machine, open it → ``Runtime``."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Sequence

import onnxruntime as ort

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.bundles.environment import cpu_features
from pyimgano_deploy.bundles.errors import InvalidBundleError, format_problems
from pyimgano_deploy.bundles.reader import Bundle, engine_file_problems
from pyimgano_deploy.runtimes.errors import EngineLoadError
from pyimgano_deploy.runtimes.golden_check import SELF_TESTED_PRECISIONS, require_golden_parity
from pyimgano_deploy.runtimes.onnx_session import OnnxSession
from pyimgano_deploy.runtimes.runtime import Runtime
from pyimgano_deploy.runtimes.streams import ScheduledSession, Session
from pyimgano_deploy.runtimes.schedule import Schedule, candidate_schedules, images_per_second, synthetic_batch
from pyimgano_deploy.runtimes.selection import EngineChoice, select_engine
from pyimgano_deploy.runtimes.tensorrt_session import TensorRTSession, probe_tensorrt

_LOG = logging.getLogger(__name__)


def open_session(bundle: Bundle, choice: EngineChoice, *, intra_op_threads: int | None = None) -> Session:
    """Open the engine ``choice`` of ``bundle``; ``EngineLoadError`` when it cannot be opened here,
    ``InvalidBundleError`` when the model's input contradicts the manifest."""
    problems = engine_file_problems(bundle, choice.entry)
    if problems:
        raise InvalidBundleError(format_problems(f"{bundle.root}: invalid engine file", problems), problems=problems)
    path = bundle.file(str(choice.entry["file"]))
    if choice.kind == "tensorrt":
        session: Session = TensorRTSession(path)
    else:
        session = OnnxSession(path, providers=choice.providers, intra_op_threads=intra_op_threads)
    expected = bundle.preprocess.output_size
    got = getattr(session, "input_hw", None)
    if got is not None and tuple(got) != tuple(expected):
        raise InvalidBundleError(
            f"{choice.entry['file']}: model input is {got[0]}x{got[1]} (HxW) but the bundle's "
            f"preprocessing produces {expected[0]}x{expected[1]}"
        )
    return session


def load_bundle(
    path: str | os.PathLike[str],
    *,
    verify_checksums: bool = True,
    expected_digest: str | None = None,
    public_key: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Runtime:
    """Verify the bundle at ``path`` (``read_bundle``: schema, paths, checksums, content; the
    pinned ``expected_digest`` (``sha256:HEX``) and a ``bundle.sig`` verified with the PEM
    ``public_key`` when given) before loading anything, then :func:`open_runtime` it with
    ``options``: ``device``, ``engine``, ``precision`` (``"auto"``), ``batch_size`` (8),
    ``intra_op_threads``, ``providers``, ``num_workers`` (0), ``streams`` (1),
    ``micro_batch`` and ``self_test`` (True: an int8 engine is checked on the golden images
    first). ``runtime.engine_info`` records the engine choice and the reasons.

    Raises ``BundleError`` subclasses for an invalid bundle (exit code 3, 4 for a checksum or
    digest mismatch, 7 for a signature), ``ValueError`` for an unknown device/engine/precision
    or ``streams`` with a TensorRT engine, ``TypeError`` for an unknown option,
    :class:`EngineLoadError` (exit code 5) when no engine can run here, and its subclass
    ``EngineParityError`` (exit code 6) when an int8 engine fails its golden check here.
    """
    bundle = read_bundle(path, verify_checksums=verify_checksums, expected_digest=expected_digest, public_key=public_key)
    return open_runtime(bundle, **options)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def stream_threads(intra_op_threads: int | None, streams: int) -> int | None:
    """Intra-op threads of the session serving ``streams`` concurrent calls (None: ORT's default)."""
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    if streams == 1:
        return intra_op_threads
    total = intra_op_threads if intra_op_threads is not None else usable_cores()
    return max(1, int(total) // streams)


def _parse_streams(streams: int | str) -> int | None:
    """``"auto"`` → None (tune); an int ≥ 1 (or its string) → that int."""
    if isinstance(streams, str):
        if streams.strip().lower() == "auto":
            return None
        if not streams.strip().isdigit():
            raise ValueError(f"streams must be a positive integer or 'auto', got {streams!r}")
        streams = int(streams)
    if int(streams) < 1:
        raise ValueError(f"streams must be >= 1 or 'auto', got {streams}")
    return int(streams)


def tune_schedule(bundle: Bundle, choice: EngineChoice, *, threads: int, batch_size: int) -> tuple[Schedule, Session, list[dict[str, Any]]]:
    """Time every :func:`candidate_schedules` entry on a synthetic batch; return the fastest
    schedule, its open session (sessions are shared between candidates with the same thread
    count) and the table of measurements."""
    sample = synthetic_batch(batch_size, bundle.preprocess.output_size)
    sessions: dict[int | None, Session] = {threads: open_session(bundle, choice, intra_op_threads=threads)}
    static = getattr(sessions[threads], "static_batch", None) is not None
    table: list[dict[str, Any]] = []
    best: tuple[float, Schedule] | None = None
    for candidate in candidate_schedules(threads, batch_size, static_batch=static):
        if candidate.threads not in sessions:
            sessions[candidate.threads] = open_session(bundle, choice, intra_op_threads=candidate.threads)
        trial = ScheduledSession(sessions[candidate.threads], streams=candidate.streams, micro_batch=candidate.micro_batch)
        try:
            ips = images_per_second(trial.run, sample)
        finally:
            trial.stop()
        table.append({**candidate.to_dict(), "images_per_s": round(ips, 2)})
        if best is None or ips > best[0]:
            best = (ips, candidate)
    assert best is not None  # candidate_schedules always yields the one-call schedule
    chosen = best[1]
    for n, session in sessions.items():
        if n != chosen.threads and hasattr(session, "close"):
            session.close()
    return chosen, sessions[chosen.threads], table


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
    streams: int | str = 1,
    micro_batch: int | None = None,
    self_test: bool = True,
) -> Runtime:
    """Choose an engine of the verified ``bundle`` for this machine (see
    :mod:`pyimgano_deploy.runtimes.selection`), open it and return a :class:`Runtime`.

    An int8 engine is first checked on the bundle's golden images under the export's parity
    gate (:mod:`.golden_check`; ``engine_info["self_test"]`` holds the numbers), and refused
    with :class:`~pyimgano_deploy.runtimes.errors.EngineParityError` (exit code 6) when this
    CPU's integer kernels do not reproduce them. ``self_test=False`` skips it (``validate``
    runs the same gate as its own check).

    ``streams`` > 1 (ONNX Runtime only) scores each batch with that many concurrent calls of
    one session, each with ``threads // streams`` intra-op threads (``threads`` =
    ``intra_op_threads`` or the usable cores), ``micro_batch`` images per call: CPU
    throughput mode, see :mod:`.schedule`. ``streams="auto"`` times the candidate schedules
    for about a second and keeps the fastest (``engine_info["schedule"]`` has the table); on a
    GPU or TensorRT engine it means one stream.
    """
    n_streams = _parse_streams(streams)
    session_threads = stream_threads(intra_op_threads, n_streams or 1)
    # one selection rule for the first choice and the ONNX Runtime fallback below
    select = functools.partial(select_engine, bundle.engines, device=device, precision=precision, providers=providers,
                               available_providers=ort.get_available_providers())
    choice = select(engine=engine, probe_tensorrt=probe_tensorrt)
    if (n_streams or 1) > 1 and choice.kind == "tensorrt":
        raise ValueError(f"streams={streams} applies to ONNX Runtime; the TensorRT engine {choice.entry.get('file')} runs one batch at a time: use streams=1 or engine='onnx'")
    first = choice.providers[0] if choice.providers else "CPUExecutionProvider"
    on_cpu = choice.kind != "tensorrt" and (first if isinstance(first, str) else first[0]) == "CPUExecutionProvider"
    if n_streams is None and on_cpu:
        threads = intra_op_threads if intra_op_threads is not None else usable_cores()
        chosen, session, table = tune_schedule(bundle, choice, threads=threads, batch_size=batch_size)
        return _finish_runtime(bundle, choice, session, chosen, batch_size, num_workers, table, self_test)
    schedule = Schedule(n_streams or 1, micro_batch, session_threads)  # "auto" off the CPU: one stream
    try:
        session = open_session(bundle, choice, intra_op_threads=session_threads)
    except EngineLoadError as exc:
        if choice.kind != "tensorrt" or engine == "tensorrt":
            raise
        message = f"cannot open TensorRT engine {choice.entry.get('file')} ({exc}); falling back to ONNX Runtime"
        fallback = select(engine="onnx")
        fallback.reasons[:0] = [*choice.reasons, message]
        choice = fallback
        session = open_session(bundle, choice, intra_op_threads=session_threads)
    return _finish_runtime(bundle, choice, session, schedule, batch_size, num_workers, None, self_test)


def _finish_runtime(
    bundle: Bundle, choice: EngineChoice, session: Session, schedule: Schedule, batch_size: int,
    num_workers: int, tuned: list[dict[str, Any]] | None, self_test: bool,
) -> Runtime:
    for reason in choice.reasons:
        (_LOG.warning if "falling back" in reason else _LOG.info)("engine selection: %s", reason)
    info = choice.info()
    info["session_providers"] = list(getattr(session, "providers", []))
    info["intra_op_threads"] = schedule.threads
    info["schedule"] = {**schedule.to_dict(), "tuned": tuned}
    if tuned is not None:
        _LOG.info("throughput schedule: %s, the fastest of %d timed on this machine", schedule.describe(), len(tuned))
    _LOG.info(
        "loaded %s with %s (%s, %s, %s)", bundle.root, info["file"], info["engine"], info["precision"], info["device"]
    )
    runtime = Runtime(bundle, session, engine_info=info, batch_size=batch_size, num_workers=num_workers,
                      streams=schedule.streams, micro_batch=schedule.micro_batch)
    if self_test and info["precision"] in SELF_TESTED_PRECISIONS:
        try:
            report = require_golden_parity(runtime)
        except BaseException:
            runtime.close()
            raise
        runtime.engine_info["self_test"] = {**report.to_manifest(), "passed": True, "cpu_features": cpu_features()}
        _LOG.info("%s reproduces the golden outputs here: max |Δscore| %.3g (gate %.3g)",
                  info["file"], report.max_abs_score, report.tolerance["score_abs"])
    return runtime

r"""JSONL results: one record per input, each line written whole and flushed.

A run killed mid-write leaves at most one truncated last line; :func:`read_completed` drops it
(rewriting the file up to the last complete line), so a resumed run appends the missing
inputs without duplicates or gaps.

Every record names the ``bundle_digest`` that scored it and the input's ``resolved`` path
(symlinks and spelling resolved), which is what ``--resume`` matches on. File names are bytes
on POSIX and need not be UTF-8: such a name is written in an escaped form (each byte that is
not UTF-8 as ``\xNN``) and, losslessly, as base64 of its bytes in ``input_raw`` /
``resolved_raw``. The writer holds an exclusive lock on the file, so a second writer is
refused instead of tearing lines.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no advisory lock (documented in docs/TRUST.md)
    fcntl = None  # type: ignore[assignment]

import numpy as np

from pyimgano_deploy.runtimes.results import InferenceResult

SCHEMA_VERSION = "1.2"  # 1.1: bundle_digest, resolved, *_raw for names that are not UTF-8; 1.2: source


class OutputError(OSError):
    """The results file cannot be written (locked by another run, unwritable, disk full)."""


def text_and_raw(name: str) -> tuple[str, str | None]:
    r"""A file name as JSON-safe text, and base64 of its bytes when it is not valid UTF-8.

    Undecodable bytes arrive as surrogate escapes (``os.fsdecode``); the text shows them as
    ``\xNN`` and the base64 keeps them exactly.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return raw.decode("utf-8", "backslashreplace"), base64.b64encode(raw).decode("ascii")
    return name, None


def name_key(record: dict[str, Any], field: str) -> bytes | None:
    """The exact bytes of a record's file name ``field`` (``input`` or ``resolved``): its
    ``<field>_raw`` base64 when the name is not UTF-8, else the text; None when absent."""
    raw = record.get(f"{field}_raw")
    if isinstance(raw, str):
        return base64.b64decode(raw)
    text = record.get(field)
    return text.encode("utf-8") if isinstance(text, str) else None


def resume_key(record: dict[str, Any]) -> bytes | None:
    """The resolved path bytes a record was written for (None for array inputs / old records)."""
    return name_key(record, "resolved")


def path_key(resolved_path: str) -> bytes:
    """The key :func:`resume_key` gives for a record of the file at ``resolved_path``."""
    return os.fsencode(resolved_path)


def make_record(
    index: int,
    input_label: str,
    result: InferenceResult,
    *,
    timing_ms: float,
    anomaly_map: dict[str, Any] | None = None,
    bundle_digest: str | None = None,
    resolved_path: str | None = None,
    u16_max: int | None = None,
) -> dict[str, Any]:
    """The JSONL record for one input (ARCHITECTURE §3 "JSONL").

    ``anomaly_map`` is ``{path, shape, dtype}`` of a saved map, when one was saved;
    ``resolved_path`` the ``os.path.realpath`` of the file read (``resolved``); ``u16_max`` the
    16-bit full scale in force, when one was declared.
    """
    text, raw = text_and_raw(str(input_label))
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "index": int(index),
        "input": text,
        "status": "ok" if result.ok else "error",
        "score": None if result.score is None else float(result.score),
        "label": None if result.label is None else int(result.label),
        "threshold": None if result.threshold is None else float(result.threshold),
    }
    if raw is not None:
        record["input_raw"] = raw
    if resolved_path is not None:
        resolved, resolved_raw = text_and_raw(resolved_path)
        record["resolved"] = resolved
        if resolved_raw is not None:
            record["resolved_raw"] = resolved_raw
    if bundle_digest is not None:
        record["bundle_digest"] = bundle_digest
    if u16_max is not None:
        record["u16_max"] = int(u16_max)
    if result.source is not None:
        record["source"] = result.source.to_dict()
    if anomaly_map is not None:
        record["anomaly_map"] = dict(anomaly_map)
    if result.defects is not None:
        record["defects"] = result.defects
    if result.error is not None:
        record["error"] = result.error.to_dict()
    record["timing_ms"] = round(float(timing_ms), 3)
    return record


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return obj.as_posix()
    raise TypeError(f"cannot write {type(obj).__name__} to JSONL")


class JsonlWriter:
    """Append-only JSONL writer: each record is one ``write`` of one whole line, then a flush
    (and ``os.fsync`` when ``fsync=True``). ``append=False`` starts a new file — emptied only
    once the exclusive lock is held, so a second writer never truncates the first one's file;
    ``refuse_existing`` refuses (under the lock) a file that already holds anything. Every
    failure to open, lock or write is an :class:`OutputError` naming the file."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False, fsync: bool = False,
                 refuse_existing: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.count = 0
        try:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot open {self.path} for writing: {exc.strerror or exc}") from exc
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"{self.path} is being written by another run (it holds the file's lock); "
                              "wait for it, or write to another --save-jsonl") from None
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        if refuse_existing and os.fstat(fd).st_size > 0:
            os.close(fd)
            raise OutputError(f"{self.path} already holds results; pass --resume to continue it or --overwrite to replace it")
        try:
            if not append and os.path.isfile(self.path):
                os.ftruncate(fd, 0)
        except OSError as exc:
            os.close(fd)
            raise OutputError(f"cannot empty {self.path}: {exc.strerror or exc}") from exc
        self._fh = os.fdopen(fd, "ab")

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, default=_jsonable, ensure_ascii=False) + "\n"
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:  # a surrogate-escaped name left in a nested field: \u-escape it, losslessly
            data = (json.dumps(record, allow_nan=False, default=_jsonable) + "\n").encode("ascii")
        try:
            self._fh.write(data)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write results to {self.path}: {exc.strerror or exc}") from exc
        self.count += 1

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError as exc:  # the last buffered bytes could not be written
                raise OutputError(f"cannot write results to {self.path}: {exc.strerror or exc}") from exc

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last_line_start(fh: Any, end: int) -> int:
    """Offset just after the last ``\n`` before ``end`` (0 when there is none); reads backwards."""
    pos = end
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        fh.seek(pos)
        found = fh.read(step).rfind(b"\n")
        if found != -1:
            return pos + found + 1
    return 0


def repair_tail(path: str | os.PathLike[str]) -> int:
    """Drop a truncated last line (no trailing newline, or not valid JSON); return bytes removed.

    Only the tail is read, so this is cheap on big files. Invalid JSON before the last line is
    not a kill mid-write; :func:`iter_records` reports it.
    """
    p = Path(path)
    if not p.exists():
        return 0
    size = p.stat().st_size
    if size == 0:
        return 0
    with open(p, "r+b") as fh:
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            keep = _last_line_start(fh, size)
        else:
            start = _last_line_start(fh, size - 1)
            fh.seek(start)
            last = fh.read(size - start)
            keep = size if (not last.strip() or _parses(last)) else start
        if keep < size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return size - keep


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def iter_records(path: str | os.PathLike[str], *, tolerate_torn_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file, in order; blank lines ignored; ``ValueError`` names a bad line.

    ``tolerate_torn_tail`` skips a last line without its newline (a run killed mid-write), for
    reading a file before deciding whether to touch it."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if tolerate_torn_tail and not raw.endswith(b"\n"):
                return
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: line {lineno} is not valid JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            yield record


def read_records(path: str | os.PathLike[str], *, repair: bool = True) -> list[dict[str, Any]]:
    """All complete records (after :func:`repair_tail` when ``repair``); [] for a missing file."""
    if not Path(path).exists():
        return []
    if repair:
        repair_tail(path)
    return list(iter_records(path))


def read_completed(path: str | os.PathLike[str], *, repair: bool = True) -> set[str]:
    """The ``input`` of every record already in ``path`` (ok or error); empty for a missing file.

    With ``repair`` (default) a truncated last line left by a kill is removed from the file
    first, so appending new records afterwards yields a clean file.
    """
    if not Path(path).exists():
        return set()
    if repair:
        repair_tail(path)
    return {str(r["input"]) for r in iter_records(path) if "input" in r}

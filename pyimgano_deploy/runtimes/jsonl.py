"""JSONL results: one record per input, each line written whole and flushed.

A run killed mid-write leaves at most one truncated last line; :func:`read_completed` drops it
(rewriting the file up to the last complete line), so a resumed run appends the missing
inputs without duplicates or gaps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pyimgano_deploy.runtimes.results import InferenceResult

SCHEMA_VERSION = "1.0"


def make_record(
    index: int,
    input_label: str,
    result: InferenceResult,
    *,
    timing_ms: float,
    anomaly_map: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSONL record for one input (ARCHITECTURE §3 "JSONL").

    ``anomaly_map`` is ``{path, shape, dtype}`` of a saved map, when one was saved.
    """
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "index": int(index),
        "input": str(input_label),
        "status": "ok" if result.ok else "error",
        "score": None if result.score is None else float(result.score),
        "label": None if result.label is None else int(result.label),
        "threshold": None if result.threshold is None else float(result.threshold),
    }
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
    (and ``os.fsync`` when ``fsync=True``). ``append=False`` starts a new file."""

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab" if append else "wb")  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=False, default=_jsonable, ensure_ascii=False) + "\n"
        self._fh.write(line.encode("utf-8"))
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.count += 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

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


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file, in order; blank lines ignored; ``ValueError`` names a bad line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
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

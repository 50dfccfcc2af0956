"""JSONL records, whole-line writes and resume after a kill mid-write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyimgano_deploy.runtimes.jsonl import JsonlWriter, make_record, read_completed, read_records, repair_tail
from pyimgano_deploy.runtimes.results import InferenceError, InferenceResult


def _ok(i: int) -> InferenceResult:
    return InferenceResult(score=float(np.float32(0.1 * i)), label=int(i % 2), threshold=0.25, anomaly_map=None)


def test_record_fields() -> None:
    rec = make_record(3, "a/b.png", _ok(3), timing_ms=1.23456, anomaly_map={"path": "m/000003_b.npy", "shape": [4, 5], "dtype": "float32"})
    assert rec["schema_version"] == "1.2" and rec["index"] == 3 and rec["input"] == "a/b.png"
    assert rec["status"] == "ok" and rec["label"] == 1 and rec["threshold"] == 0.25
    assert rec["anomaly_map"]["shape"] == [4, 5] and rec["timing_ms"] == 1.235
    assert "error" not in rec
    err = InferenceResult.failure(InferenceError("ImageReadError", "bad", "decode"), threshold=0.25)
    rec = make_record(4, "c.png", err, timing_ms=0.5)
    assert rec["status"] == "error" and rec["score"] is None and rec["label"] is None
    assert rec["error"] == {"type": "ImageReadError", "message": "bad", "stage": "decode"}


def test_writer_writes_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path, fsync=True) as writer:
        for i in range(3):
            writer.write(make_record(i, f"{i}.png", _ok(i), timing_ms=1.0))
            assert path.read_bytes().endswith(b"\n")  # flushed after every record
    lines = path.read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]
    with pytest.raises(ValueError):
        with JsonlWriter(tmp_path / "nan.jsonl") as writer:
            writer.write({"score": float("nan")})


def test_resume_after_kill_mid_write(tmp_path: Path) -> None:
    inputs = [f"img{i}.png" for i in range(10)]
    path = tmp_path / "out.jsonl"
    with JsonlWriter(path) as writer:
        for i in range(6):
            writer.write(make_record(i, inputs[i], _ok(i), timing_ms=1.0))
    data = path.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1 + 17  # kill 17 bytes into the 6th line
    path.write_bytes(data[:cut])

    done = read_completed(path)
    assert done == set(inputs[:5])
    assert path.read_bytes().endswith(b"\n")  # the truncated tail was dropped
    with JsonlWriter(path, append=True) as writer:
        for i, name in enumerate(inputs):
            if name not in done:
                writer.write(make_record(i, name, _ok(i), timing_ms=1.0))
    records = read_records(path)
    assert sorted(r["index"] for r in records) == list(range(10))
    assert len({r["input"] for r in records}) == 10


def test_repair_tail_cases(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    assert repair_tail(path) == 0 and read_completed(path) == set()
    path.write_bytes(b'{"input": "a"}\n{"input": "b"')
    assert repair_tail(path) == len(b'{"input": "b"')
    path.write_bytes(b'{"input": "a"}\n{"inp\n')  # complete line but not JSON: also a torn tail
    assert read_completed(path) == {"a"}
    assert path.read_bytes() == b'{"input": "a"}\n'
    path.write_bytes(b'{"input": "a"}\nnot json\n{"input": "c"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_completed(path)
    path.write_bytes(b'{"input": "only, no newline"')
    assert read_completed(path) == set() and path.read_bytes() == b""

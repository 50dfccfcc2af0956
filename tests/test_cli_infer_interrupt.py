"""infer stopped by SIGINT or SIGTERM: the record being written is finished, the summary says what
is left, the exit code is 128 + the signal, and --resume scores the rest."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import jsonl_records, run_cli

from pyimgano_deploy.runtimes.jsonl import JsonlWriter


def _signal_after(monkeypatch: pytest.MonkeyPatch, n: int, signum: int, times: int = 1) -> None:
    """Send ``signum`` to this process ``times`` times right after the ``n``-th record is written."""
    write, count = JsonlWriter.write, [0]

    def write_then_signal(self: JsonlWriter, record: dict) -> None:
        write(self, record)
        count[0] += 1
        if count[0] == n:
            for _ in range(times):
                os.kill(os.getpid(), signum)

    monkeypatch.setattr(JsonlWriter, "write", write_then_signal)


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    line = tmp_path / "line"
    line.mkdir()
    for i, image in enumerate(random_images(6, 40, 48, seed=2)):
        assert cv2.imwrite(str(line / f"{i}.png"), image)
    return build_tiny_bundle(tmp_path / "b"), line


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_after_the_record_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              signum: int) -> None:
    bundle, line = _setup(tmp_path)
    out = tmp_path / "r.jsonl"
    args = ("infer", "--bundle", str(bundle), "--input", str(line), "--save-jsonl", str(out), "--batch-size", "2")
    _signal_after(monkeypatch, 3, signum)
    code, stdout, _ = run_cli(*args, "--json", "--save-parquet", str(tmp_path / "r.parquet"))
    summary = json.loads(stdout)
    assert code == 128 + signum and not summary["ok"]
    assert summary["interrupted"] == {"signal": signal.Signals(signum).name, "remaining": 3} and summary["processed"] == 3
    assert [r["index"] for r in jsonl_records(out)] == [0, 1, 2]
    assert summary["parquet"] is None and not (tmp_path / "r.parquet").exists()  # a table is of a complete run
    monkeypatch.undo()
    code, stdout, err = run_cli(*args, "--resume", "--json")
    assert code == 0, err
    assert json.loads(stdout)["processed"] == 3 and json.loads(stdout)["interrupted"] is None
    assert sorted(r["index"] for r in jsonl_records(out)) == list(range(6))


def test_the_text_summary_says_how_to_continue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, line = _setup(tmp_path)
    _signal_after(monkeypatch, 1, signal.SIGINT)
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(line), "--save-jsonl", str(tmp_path / "r.jsonl"))
    assert code == 130 and "INTERRUPTED by SIGINT: 5 input(s) not scored" in err and "--resume" in err


def test_a_second_signal_stops_at_once_and_keeps_the_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, line = _setup(tmp_path)
    out = tmp_path / "r.jsonl"
    _signal_after(monkeypatch, 2, signal.SIGINT, times=2)
    code, _, _ = run_cli("infer", "--bundle", str(bundle), "--input", str(line), "--save-jsonl", str(out))
    assert code == 1  # click's Abort: no summary
    assert [r["index"] for r in jsonl_records(out)] == [0, 1]

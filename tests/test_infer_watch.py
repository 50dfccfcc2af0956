"""``infer --watch``: a hot folder scored as files arrive, each once complete, each path once."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import jsonl_records, run_cli

from pyimgano_deploy.runtimes.folder_watch import FolderWatch
from pyimgano_deploy.runtimes.jsonl import path_key

_FAST = ("--watch", "--watch-settle", "0.3", "--watch-poll", "0.05")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b")


def _png(seed: int) -> bytes:
    return cv2.imencode(".png", random_images(1, 36, 44, seed=seed)[0])[1].tobytes()


def _write_slowly(path: Path, data: bytes, pieces: int = 6, pause_s: float = 0.1) -> None:
    """Write ``data`` in ``pieces`` appends, as a camera writing over the network might."""
    step = -(-len(data) // pieces)
    with open(path, "wb") as fh:
        for start in range(0, len(data), step):
            fh.write(data[start:start + step])
            fh.flush()
            time.sleep(pause_s)


def test_a_file_being_written_is_read_only_once_complete(bundle_dir: Path, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    hot.mkdir()
    data = _png(1)
    writer = threading.Timer(0.3, _write_slowly, args=(hot / "late.png", data), kwargs={"pause_s": 0.05})
    writer.start()
    out = tmp_path / "w.jsonl"
    # appends every 0.05 s against a settle time of 0.8 s: a busy machine still cannot make it look complete
    code, stdout, err = run_cli("infer", "--bundle", str(bundle_dir), "--input", str(hot), "--save-jsonl", str(out), "--watch",
                                "--watch-settle", "0.8", "--watch-poll", "0.05", "--watch-idle-exit", "1.5", "--json")
    writer.join()
    assert code == 0, err
    (record,) = jsonl_records(out)
    assert record["status"] == "ok" and record["source"]["size_bytes"] == len(data)  # never a truncated read
    summary = json.loads(stdout)
    assert summary["processed"] == 1 and summary["watch"]["ended_by"] == "idle" and summary["watch"]["settle_s"] == 0.8


def test_an_empty_folder_is_watched_not_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "hot").mkdir()
    out = tmp_path / "w.jsonl"
    code, stdout, err = run_cli("infer", "--bundle", str(bundle_dir), "--input", str(tmp_path / "hot"), "--save-jsonl", str(out),
                                *_FAST, "--watch-idle-exit", "0.3", "--json")
    assert code == 0, err
    assert json.loads(stdout)["images"] == 0 and out.read_bytes() == b""


def test_a_watch_reports_its_scoring_rate_apart_from_its_waiting(bundle_dir: Path, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    hot.mkdir()
    (hot / "a.png").write_bytes(_png(20))
    code, stdout, err = run_cli("infer", "--bundle", str(bundle_dir), "--input", str(hot), "--save-jsonl", str(tmp_path / "w.jsonl"),
                                *_FAST, "--watch-idle-exit", "0.6", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert s["processed"] == 1 and 0 < s["watch"]["scoring_s"] < s["elapsed_s"] - 0.6  # settle and idle time are waiting
    assert s["watch"]["images_per_s_scoring"] > s["images_per_s"]


def test_a_watch_resumes_after_the_recorded_inputs(bundle_dir: Path, tmp_path: Path) -> None:
    hot = tmp_path / "hot"
    hot.mkdir()
    for i in range(2):
        (hot / f"old{i}.png").write_bytes(_png(10 + i))
    out = tmp_path / "w.jsonl"
    base = ("infer", "--bundle", str(bundle_dir), "--input", str(hot), "--save-jsonl", str(out))
    assert run_cli(*base)[0] == 0
    (hot / "new.png").write_bytes(_png(12))
    code, stdout, err = run_cli(*base, "--resume", *_FAST, "--watch-idle-exit", "0.5", "--json")
    assert code == 0, err
    records = jsonl_records(out)
    assert [(r["index"], Path(r["input"]).name) for r in records] == [(0, "old0.png"), (1, "old1.png"), (2, "new.png")]
    assert json.loads(stdout)["resumed_skipped"] == 2


def test_a_path_that_changes_after_scoring_is_reported_not_rescored(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png(20))
    watch = FolderWatch([str(tmp_path)], settle_s=0.1, poll_s=0.02, idle_exit_s=0.4)
    taken = []
    for ready in watch.rounds(set()):
        taken += [Path(p).name for p, _ in ready]
        (tmp_path / "a.png").write_bytes(_png(21))  # the camera reuses the name
        (tmp_path / "notes.txt").write_text("x")
    assert taken == ["a.png"] and [Path(p).name for p in watch.changed] == ["a.png"] and watch.unscored == 1
    assert [Path(p).name for p in watch.plan.skipped] == ["notes.txt"]  # reported once, however many scans saw it


def test_stop_ends_the_watch_from_another_thread(tmp_path: Path) -> None:
    watch = FolderWatch([str(tmp_path)], settle_s=0.1, poll_s=0.05)
    threading.Timer(0.2, watch.stop).start()
    start = time.monotonic()
    assert list(watch.rounds(set())) == []
    assert time.monotonic() - start < 5 and watch.ended_by == "stopped"


@pytest.mark.parametrize(("extra", "message"), [
    (("--watch-poll", "0.5"), "--watch-poll describes a watch; add --watch"),
    (("--watch", "--ray-address", "local"), "does not run on Ray"),
    (("--watch", "--watch-settle", "0"), "--watch-settle"),
])
def test_watch_options_that_cannot_work_are_usage_errors(bundle_dir: Path, tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    code, _, err = run_cli("infer", "--bundle", str(bundle_dir), "--input", str(tmp_path), "--save-jsonl", str(tmp_path / "u.jsonl"), *extra)
    assert code == 2 and message in err


def test_an_unchanged_folder_is_not_walked_again_until_something_moves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    hot = tmp_path / "hot"
    hot.mkdir()
    (hot / "a.png").write_bytes(_png(30))
    past = time.time() - 100
    os.utime(hot, (past, past))  # quiet for a while: its mtime can be trusted
    scans = []
    original = FolderWatch._scan
    monkeypatch.setattr(FolderWatch, "_scan", lambda self, *a: scans.append(1) or original(self, *a))
    watch = FolderWatch([str(hot)], settle_s=0.05, poll_s=0.02, idle_exit_s=0.5)
    taken = []
    for ready in watch.rounds(set()):
        taken += [Path(p).name for p, _ in ready]
        if len(taken) == 1:
            os.utime(hot, (past, past))  # a.png settled: quiet again
            n_before = len(scans)
    assert taken == ["a.png"]
    assert len(scans) == n_before  # about 25 polls after a.png, not one walk

    (hot / "b.png").write_bytes(_png(31))  # a new entry moves the folder's mtime
    watch = FolderWatch([str(hot)], settle_s=0.05, poll_s=0.02, idle_exit_s=0.3)
    done = {path_key(os.path.realpath(hot / "a.png"))}
    assert [Path(p).name for ready in watch.rounds(done) for p, _ in ready] == ["b.png"]


def test_sigterm_ends_the_watch_with_its_records_and_summary(bundle_dir: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    hot = tmp_path / "hot"
    hot.mkdir()
    (hot / "a.png").write_bytes(_png(40))
    out = tmp_path / "w.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pyimgano_deploy.cli", "infer", "--bundle", str(bundle_dir), "--input", str(hot),
                             "--save-jsonl", str(out), *_FAST, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.read_bytes().endswith(b"\n")) and time.monotonic() < deadline:
        time.sleep(0.05)  # until a.png is recorded
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["watch"]["ended_by"] == "stopped"
    assert [Path(r["input"]).name for r in jsonl_records(out)] == ["a.png"]


def test_a_recorded_name_that_reappears_is_reported_not_skipped_silently(tmp_path: Path) -> None:
    import os

    archived = tmp_path / "a.png"
    done = {path_key(os.path.realpath(archived))}  # scored by an earlier run, then moved out of the folder
    watch = FolderWatch([str(tmp_path)], settle_s=0.05, poll_s=0.02, idle_exit_s=0.6)
    threading.Timer(0.15, archived.write_bytes, args=(_png(50),)).start()  # a new image under the old name
    assert list(watch.rounds(done)) == []
    assert [Path(p).name for p in watch.changed] == ["a.png"]

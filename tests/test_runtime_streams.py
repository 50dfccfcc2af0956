"""``streams``: one batch cut into concurrent calls of the same ONNX Runtime session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, random_images
from click.testing import CliRunner

from pyimgano_deploy.bundles import read_bundle
from pyimgano_deploy.cli import main
from pyimgano_deploy.runtimes import Runtime, load_bundle
from pyimgano_deploy.runtimes.batching import split_even
from pyimgano_deploy.runtimes.loader import stream_threads


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b", size=(32, 40))


@pytest.mark.parametrize(("n", "parts", "want"), [
    (8, 2, [(0, 4), (4, 8)]),
    (5, 3, [(0, 2), (2, 4), (4, 5)]),
    (2, 4, [(0, 1), (1, 2)]),
    (0, 2, []),
])
def test_split_even(n: int, parts: int, want: list[tuple[int, int]]) -> None:
    assert split_even(n, parts) == want


def test_streams_share_the_threads() -> None:
    assert stream_threads(4, 2) == 2 and stream_threads(1, 4) == 1 and stream_threads(3, 1) == 3
    assert stream_threads(None, 2) == max(1, (os.cpu_count() or 1) // 2)
    with pytest.raises(ValueError, match="streams"):
        stream_threads(2, 0)


@pytest.mark.parametrize("streams", [2, 3])
def test_streams_give_the_same_results_as_one_call(bundle_dir: Path, streams: int) -> None:
    images = random_images(7, 32, 40, seed=4)
    with load_bundle(bundle_dir, batch_size=5, intra_op_threads=2) as one:
        want = one.infer(images, input_format="rgb_u8_hwc", include_maps=True)
    with load_bundle(bundle_dir, batch_size=5, intra_op_threads=2, streams=streams) as many:
        got = many.infer(images, input_format="rgb_u8_hwc", include_maps=True)
        assert many.engine_info["streams"] == streams and many.engine_info["intra_op_threads"] == max(1, 2 // streams)
        assert many.engine._pool is not None  # the batches really went through the stream pool
    assert many.engine._pool is None  # close() shut it down
    for a, b in zip(got, want):
        assert a.ok and a.score == pytest.approx(b.score, rel=1e-6, abs=1e-6) and a.label == b.label
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-6, atol=1e-6)


class _SerialSession:
    kind = "tensorrt"
    thread_safe = False
    static_batch = None

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(batch), np.float32), np.zeros((len(batch), *batch.shape[1:3]), np.float32)


def test_streams_refused_for_a_session_that_runs_one_batch_at_a_time(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="streams=2 needs a session that can run concurrently.*tensorrt"):
        Runtime(read_bundle(bundle_dir), _SerialSession(), streams=2)


def test_cli_infer_streams(bundle_dir: Path, tmp_path: Path) -> None:
    for i, rgb in enumerate(random_images(5, 36, 44, seed=30)):
        assert cv2.imwrite(str(tmp_path / f"im{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    outs = {}
    for streams in (1, 2):
        jsonl = tmp_path / f"out{streams}.jsonl"
        res = CliRunner().invoke(main, ["infer", "--bundle", str(bundle_dir), "--input", str(tmp_path), "--save-jsonl", str(jsonl),
                                        "--threads", "2", "--streams", str(streams), "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["engine"]["streams"] == streams
        outs[streams] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["input"] for r in outs[1]] == [r["input"] for r in outs[2]]
    np.testing.assert_allclose([r["score"] for r in outs[2]], [r["score"] for r in outs[1]], rtol=1e-6)


def test_candidate_schedules() -> None:
    from pyimgano_deploy.runtimes.schedule import Schedule, candidate_schedules

    assert candidate_schedules(2, 8) == [Schedule(1, None, 2), Schedule(2, 1, 1), Schedule(2, 2, 1), Schedule(2, None, 1)]
    assert candidate_schedules(4, 8, static_batch=True) == [Schedule(1, None, 4), Schedule(4, None, 1)]
    assert candidate_schedules(1, 8) == [Schedule(1, None, 1)] and candidate_schedules(4, 1) == [Schedule(1, None, 4)]


def test_streams_auto_keeps_the_fastest_timed_schedule(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyimgano_deploy.runtimes.schedule as schedule

    monkeypatch.setattr(schedule, "TUNE_SECONDS", 0.01)
    images = random_images(6, 32, 40, seed=6)
    with load_bundle(bundle_dir, batch_size=4, intra_op_threads=2) as one:
        want = one.infer(images, input_format="rgb_u8_hwc")
    with load_bundle(bundle_dir, batch_size=4, intra_op_threads=2, streams="auto") as tuned:
        sched = tuned.engine_info["schedule"]
        got = tuned.infer(images, input_format="rgb_u8_hwc")
    table = sched["tuned"]
    assert len(table) == 3 and all(row["images_per_s"] > 0 for row in table)
    best = max(table, key=lambda row: row["images_per_s"])
    assert (sched["streams"], sched["micro_batch"], sched["threads"]) == (best["streams"], best["micro_batch"], best["threads"])
    assert (tuned.streams, tuned.micro_batch) == (best["streams"], best["micro_batch"])
    assert [r.score for r in got] == pytest.approx([r.score for r in want], rel=1e-6, abs=1e-6)


def test_micro_batches_run_as_separate_calls(bundle_dir: Path) -> None:
    images = random_images(5, 32, 40, seed=7)
    with load_bundle(bundle_dir, batch_size=5) as one, load_bundle(bundle_dir, batch_size=5, streams=2, micro_batch=2) as micro:
        calls: list[int] = []
        run = micro.session.run
        micro.session.run = lambda feed: (calls.append(len(feed)), run(feed))[1]  # type: ignore[method-assign]
        got, want = micro.run_batch(images), one.run_batch(images)
    assert sorted(calls) == [1, 2, 2]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("value", "match"), [("fast", "positive integer or 'auto'"), ("0", ">= 1")])
def test_bad_streams_value_is_refused(bundle_dir: Path, value: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_bundle(bundle_dir, streams=value)


def test_cli_bad_streams_is_a_usage_error(bundle_dir: Path, tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    assert cv2.imwrite(str(img), random_images(1, 32, 40)[0])
    res = CliRunner().invoke(main, ["infer", "--bundle", str(bundle_dir), "--input", str(img), "--save-jsonl", str(tmp_path / "o.jsonl"), "--streams", "many"])
    assert res.exit_code == 2 and "positive integer or 'auto'" in res.output


def test_micro_batch_refused_for_a_static_batch_engine(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "static", static_batch=3)
    with pytest.raises(ValueError, match="static batch of 3"):
        load_bundle(bundle, micro_batch=1)

"""Ray Data inference (`infer --ray-address`, `scale.ray_infer`) against the local runtime, on a
local Ray instance with 2 CPUs started once for the module. Skipped without the `ray` extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import jsonl_records, run_cli

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'pyimgano-deploy[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'pyimgano-deploy[ray]')")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    for i in range(19):
        rgb = random_images(1, 30 + i, 44, seed=40 + i)[0]
        assert cv2.imwrite(str(root / f"im{i:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (root / "im07_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (root / "im11_empty.jpg").write_bytes(b"")
    return root


def _comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "timing_ms"} for r in records]


def _assert_same_results(ray_records: list[dict], local_records: list[dict]) -> None:
    assert [r["index"] for r in ray_records] == list(range(len(local_records)))
    for got, want in zip(ray_records, local_records):
        assert (got["input"], got["status"], got["label"], got.get("error")) == (want["input"], want["status"], want["label"], want.get("error"))
        assert got.get("source") == want.get("source")  # the same bytes named, whichever machine read them
        if want["score"] is not None:
            assert abs(got["score"] - want["score"]) <= 1e-5 * max(1.0, abs(want["score"]))


@pytest.fixture(scope="module")
def local_run(bundle: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    code, _, _ = run_cli("infer", "--bundle", str(bundle), "--input", str(images), "--save-jsonl", str(out), "--max-errors", "2")
    assert code == 0
    return jsonl_records(out)


def test_ray_infer_cli_equals_the_local_run(local_ray, bundle: Path, images: Path, local_run: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "ray.jsonl"
    code, stdout, _ = run_cli("infer", "--bundle", str(bundle), "--input", str(images), "--save-jsonl", str(out),
                              "--ray-address", "local", "--ray-actors", "2", "--batch-size", "4", "--json")
    summary = json.loads(stdout)
    assert code == 1 and summary["errors"] == 2 and summary["images"] == 21  # two bad files, --max-errors 0
    assert summary["engine"]["ray"] == {"address": "local", "actors": 2, "cpus_per_actor": 1}
    records = jsonl_records(out)
    _assert_same_results(records, local_run)
    bad = {Path(r["input"]).name: r["error"]["stage"] for r in records if r["status"] == "error"}
    assert bad == {"im07_broken.png": "decode", "im11_empty.jpg": "read"}
    assert all(r["bundle_digest"] == summary["bundle_digest"] for r in records)


def test_ray_driver_messages_stay_off_the_json_stdout(local_ray, bundle: Path, images: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's driver prints cluster errors on stdout from a thread (``print_to_stdstream`` with
    is_err False, what ``listen_error_messages`` calls); one printed mid-run must go to stderr."""
    from ray._private import worker as ray_worker

    from pyimgano_deploy.scale.ray_data import RayRuntime

    original = RayRuntime.infer_iter

    def noisy(self, *args, **kwargs):
        ray_worker.print_to_stdstream({"lines": ["A worker died or was killed (test)"], "pid": "raylet", "is_err": False},
                                      ignore_prefix=False)
        yield from original(self, *args, **kwargs)

    monkeypatch.setattr(RayRuntime, "infer_iter", noisy)
    code, stdout, stderr = run_cli("infer", "--bundle", str(bundle), "--input", str(images), "--save-jsonl",
                                   str(tmp_path / "r.jsonl"), "--ray-address", "local", "--max-errors", "2", "--json")
    assert code == 0 and json.loads(stdout)["processed"] == 21
    assert "A worker died or was killed (test)" in stderr


def test_ray_resume_completes_a_partial_file(local_ray, bundle: Path, images: Path, local_run: list[dict], tmp_path: Path) -> None:
    out = tmp_path / "ray.jsonl"
    full = [json.dumps(r) for r in local_run]
    out.write_text("\n".join(full[:8]) + "\n" + full[8][:15])  # 8 records and a torn ninth line
    code, stdout, _ = run_cli("infer", "--bundle", str(bundle), "--input", str(images), "--save-jsonl", str(out),
                              "--ray-address", "local", "--resume", "--max-errors", "2", "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["resumed_skipped"] == 8 and summary["processed"] == 13
    _assert_same_results(jsonl_records(out), local_run)


def test_ray_infer_api_returns_records_and_writes_parquet(local_ray, bundle: Path, images: Path, local_run: list[dict], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from pyimgano_deploy.scale import ray_infer

    records = ray_infer(bundle, [images], actors=1, batch_size=8)
    _assert_same_results(records, local_run)
    summary = ray_infer(bundle, [images], actors=2, save_jsonl=tmp_path / "r.jsonl", save_parquet=tmp_path / "r.parquet")
    assert summary["processed"] == 21 and summary["errors"] == 2 and summary["parquet"]["rows"] == 21
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert [row["index"] for row in table] == list(range(21))
    assert [row["score"] for row in table] == [r["score"] for r in jsonl_records(tmp_path / "r.jsonl")]
    assert {row["error_stage"] for row in table if row["status"] == "error"} == {"decode", "read"}


def test_a_pinned_digest_that_does_not_match_is_refused_before_ray_starts(bundle: Path, images: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(images), "--save-jsonl", str(tmp_path / "o.jsonl"),
                           "--ray-address", "local", "--expect-digest", "sha256:" + "0" * 64)
    assert code == 4 and "digest" in err


def test_local_session_options_are_refused_with_ray(bundle: Path, images: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(images), "--save-jsonl", str(tmp_path / "o.jsonl"),
                           "--ray-address", "local", "--threads", "2")
    assert code == 2 and "--ray-cpus-per-actor" in err
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(images), "--save-jsonl", str(tmp_path / "o.jsonl"),
                           "--ray-address", "nowhere")
    assert code == 2 and "ray://HOST:PORT" in err


def test_the_core_runtime_never_imports_ray() -> None:
    code = "import sys, pyimgano_deploy.runtimes, pyimgano_deploy.cli, pyimgano_deploy.scale; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"

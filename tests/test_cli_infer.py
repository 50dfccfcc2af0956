"""`pyimgano-deploy infer` through click's CliRunner on a real tiny bundle."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, random_images
from click.testing import CliRunner

from pyimgano_deploy.cli import main


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b")


def _make_images(root: Path, n: int = 5) -> list[Path]:
    (root / "sub").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rgb = random_images(1, 30 + 3 * i, 44, seed=20 + i)[0]
        path = root / ("sub" if i % 2 else ".") / f"im{i}.png"
        assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _infer(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["infer", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_directory_with_corrupt_file_and_max_errors(bundle_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    _make_images(images)
    (images / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (images / "readme.md").write_text("not an image")
    out = tmp_path / "out.jsonl"
    code, _, err = _infer("--bundle", str(bundle_dir), "--input", str(images), "--save-jsonl", str(out))
    assert code == 1
    records = _records(out)
    assert len(records) == 6 and [r["index"] for r in records] == list(range(6))
    assert [r["input"] for r in records] == sorted((r["input"] for r in records), key=lambda s: Path(s).as_posix())
    bad = [r for r in records if r["status"] == "error"]
    assert len(bad) == 1 and bad[0]["input"].endswith("broken.png")
    assert bad[0]["error"]["stage"] == "decode" and bad[0]["score"] is None
    ok = [r for r in records if r["status"] == "ok"]
    assert all(isinstance(r["score"], float) and r["label"] in (0, 1) and r["threshold"] is not None for r in ok)
    assert "readme.md" in err and "errors: 1" in err

    code, stdout, _ = _infer(
        "--bundle", str(bundle_dir), "--input", str(images), "--save-jsonl", str(out), "--max-errors", "1", "--json",
        "--overwrite",
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["images"] == 6 and summary["errors"] == 1 and summary["ok"] is True
    assert [Path(p).name for p in summary["skipped_files"]] == ["readme.md"]
    assert summary["anomalies"] == sum(r["label"] == 1 for r in ok)


def test_save_maps_glob_list_and_explicit_bad_extension(bundle_dir: Path, tmp_path: Path) -> None:
    paths = _make_images(tmp_path / "imgs", n=3)
    notes = tmp_path / "notes.dat"
    notes.write_text("x")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images\n{paths[1]}\n\n{notes}\n")
    out, maps = tmp_path / "out.jsonl", tmp_path / "maps"
    code, stdout, _ = _infer(
        "--bundle", str(bundle_dir), "--input", str(tmp_path / "imgs" / "*.png"), "--input", f"@{listing}",
        "--save-jsonl", str(out), "--save-maps", str(maps), "--batch-size", "2", "--num-workers", "2",
        "--threads", "1", "--engine", "onnx", "--precision", "fp32", "--json",
    )
    assert code == 1  # the explicit .dat file is an error record
    records = _records(out)
    assert [Path(r["input"]).name for r in records] == ["im0.png", "im2.png", "im1.png", "notes.dat"]
    assert records[-1]["status"] == "error" and records[-1]["error"]["type"] == "UnsupportedImageType"
    for rec in records[:3]:
        saved = np.load(rec["anomaly_map"]["path"], allow_pickle=False)
        h, w = cv2.imread(rec["input"]).shape[:2]
        assert saved.dtype == np.float32 and saved.shape == (h, w) == tuple(rec["anomaly_map"]["shape"])
        assert Path(rec["anomaly_map"]["path"]).name == f"{rec['index']:06d}_{Path(rec['input']).stem}.npy"
    assert "anomaly_map" not in records[-1]
    assert json.loads(stdout)["engine"]["engine"] == "onnxruntime"


def test_summary_lists_failed_inputs_and_a_mistyped_path_is_not_found(bundle_dir: Path, tmp_path: Path) -> None:
    _make_images(tmp_path / "imgs", n=2)
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    args = ["--bundle", str(bundle_dir), "--input", str(tmp_path / "imgs"), "--input", str(tmp_path / "imgs_typo"),
            "--save-jsonl", str(out)]
    code, _, err = _infer(*args)
    assert code == 1
    missing = [r for r in _records(out) if r["input"].endswith("imgs_typo")]
    assert len(missing) == 1 and missing[0]["error"]["type"] == "FileNotFoundError"
    assert "no such file or directory" in missing[0]["error"]["message"]
    assert "failed 2 input(s):" in err
    assert "empty.png' is empty (0 bytes) [read]" in err and "imgs_typo': no such file or directory [read]" in err

    code, stdout, _ = _infer(*args, "--json", "--overwrite")
    failed = json.loads(stdout)["first_errors"]
    assert [(Path(e["input"]).name, e["type"], e["stage"]) for e in failed] == [
        ("empty.png", "EmptyFile", "read"), ("imgs_typo", "FileNotFoundError", "read")]


def test_summary_caps_the_failed_list_and_points_to_the_records(bundle_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import pyimgano_deploy.cli.infer_cmd as infer_cmd

    monkeypatch.setattr(infer_cmd, "LIST_LIMIT", 2)
    for i in range(3):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        (tmp_path / "imgs" / f"e{i}.png").write_bytes(b"")
    out = tmp_path / "out.jsonl"
    code, _, err = _infer("--bundle", str(bundle_dir), "--input", str(tmp_path / "imgs"), "--save-jsonl", str(out))
    assert code == 1 and "failed 3 input(s); the first 2 of this run:" in err
    assert "e1.png" in err and "e2.png" not in err and f'status "error" in {out.as_posix()}' in err


def test_resume_completes_without_duplicates_or_gaps(bundle_dir: Path, tmp_path: Path) -> None:
    _make_images(tmp_path / "imgs", n=5)
    out = tmp_path / "out.jsonl"
    args = ["--bundle", str(bundle_dir), "--input", str(tmp_path / "imgs"), "--save-jsonl", str(out)]
    assert _infer(*args)[0] == 0
    full = _records(out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][:25])  # killed while writing the 3rd record
    code, stdout, _ = _infer(*args, "--resume", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["processed"] == 3 and summary["resumed_skipped"] == 2
    resumed = _records(out)
    assert sorted(r["index"] for r in resumed) == list(range(5))
    assert {r["input"]: r["score"] for r in resumed} == {r["input"]: r["score"] for r in full}


def test_no_image_found_names_the_skipped_files_and_the_extensions_read(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part.raw").write_bytes(b"x")
    code, _, err = _infer("--bundle", str(bundle_dir), "--input", str(tmp_path / "in"), "--save-jsonl", str(tmp_path / "o.jsonl"))
    assert code == 1 and "1 file(s) skipped" in err and "(part.raw)" in err and ".png" in err


def test_usage_and_bundle_errors(bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    code, _, err = _infer("--bundle", str(tmp_path / "nope"), "--input", str(tmp_path), "--save-jsonl", str(out))
    assert code == 1 and "no image files found in --input" in err
    img = _make_images(tmp_path / "imgs", n=1)[0]
    code, _, err = _infer("--bundle", str(tmp_path / "nope"), "--input", str(img), "--save-jsonl", str(out))
    assert code == 3 and "invalid bundle" in err  # the bundle's own problems use validate's exit codes
    code, _, _ = _infer("--bundle", str(bundle_dir), "--input", str(img), "--save-jsonl", str(out), "--engine", "x")
    assert code == 2

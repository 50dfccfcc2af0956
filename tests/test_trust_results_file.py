"""``infer``'s results file is never lost, torn or mixed: lock, resume by resolved path and by
bundle digest, a refused overwrite, clean errors for an unwritable output, separate exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest

from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import jsonl_records, run_cli
from pyimgano_deploy.runtimes.jsonl import JsonlWriter, OutputError


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return build_tiny_bundle(root / "a", seed=0), build_tiny_bundle(root / "b", seed=1, threshold_quantile=0.25)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "many"
    folder.mkdir()
    for i, img in enumerate(random_images(5, 32, 40, seed=4)):
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    return folder


def _infer(*args: str) -> tuple[int, str, str]:
    return run_cli("infer", *args)


_records = jsonl_records


def test_every_record_names_the_bundle_digest_and_resolved_path(bundles: tuple[Path, Path], images: Path, tmp_path: Path) -> None:
    from pyimgano_deploy.bundles import read_bundle

    out = tmp_path / "o.jsonl"
    assert _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", str(out))[0] == 0
    digest = read_bundle(bundles[0]).digest
    records = _records(out)
    assert {r["bundle_digest"] for r in records} == {digest}
    assert all(r["resolved"] == os.path.realpath(r["input"]) for r in records)


def test_resume_with_another_spelling_records_nothing_twice(bundles: tuple[Path, Path], images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o.jsonl"
    monkeypatch.chdir(tmp_path)
    assert _infer("--bundle", str(bundles[0]), "--input", "./many", "--save-jsonl", str(out))[0] == 0
    code, stdout, _ = _infer("--bundle", str(bundles[0]), "--input", str(images.resolve()), "--save-jsonl", str(out), "--resume", "--json")
    assert code == 0 and json.loads(stdout)["processed"] == 0 and len(_records(out)) == 5


def test_resume_refuses_a_file_of_another_bundle_and_changes_nothing(bundles: tuple[Path, Path], images: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    assert _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", str(out))[0] == 0
    with open(out, "ab") as fh:
        fh.write(b'{"torn": ')  # a torn tail must survive too: nothing in the file is touched
    before = out.read_bytes()
    code, _, err = _infer("--bundle", str(bundles[1]), "--input", str(images), "--save-jsonl", str(out), "--resume")
    assert code == 8 and "another bundle" in err and out.read_bytes() == before


def test_existing_results_are_not_overwritten_without_asking(bundles: tuple[Path, Path], images: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    assert _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", str(out))[0] == 0
    before = out.read_bytes()
    code, _, err = _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", str(out))
    assert code == 8 and "--resume" in err and "--overwrite" in err and out.read_bytes() == before


def test_second_writer_is_refused_while_the_first_holds_the_file(bundles: tuple[Path, Path], images: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    with JsonlWriter(out) as first:
        first.write({"index": 0, "input": "held"})
        code, _, err = _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", str(out), "--overwrite")
        assert code == 8 and "another run" in err
        with pytest.raises(OutputError, match="another run"):
            JsonlWriter(out, append=True)
    assert _records(out) == [{"index": 0, "input": "held"}]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_unwritable_output_is_a_one_line_error(bundles: tuple[Path, Path], images: Path, tmp_path: Path) -> None:
    code, _, err = _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", "/dev/full")
    assert code == 8 and "No space left on device" in err and "Traceback" not in err
    blocked = tmp_path / "file"
    blocked.write_text("x")
    code, _, err = _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", str(blocked / "o.jsonl"))
    assert code == 8 and "cannot open" in err


def test_infer_exit_codes_follow_validate(bundles: tuple[Path, Path], images: Path, tmp_path: Path) -> None:
    import shutil

    from bundle_factory import rewrite_manifest

    out = tmp_path / "o.jsonl"
    broken = tmp_path / "broken"
    shutil.copytree(bundles[0], broken)
    data = bytearray((broken / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (broken / "model.onnx").write_bytes(bytes(data))
    assert _infer("--bundle", str(broken), "--input", str(images), "--save-jsonl", str(out))[0] == 4
    rewrite_manifest(broken, lambda m: m["engines"][0].update(file="golden.npz"))
    assert _infer("--bundle", str(broken), "--input", str(images), "--save-jsonl", str(out))[0] == 3
    code, _, err = _infer("--bundle", str(bundles[0]), "--input", str(images), "--save-jsonl", str(out), "--engine", "tensorrt")
    assert code == 5 and not out.exists()


def test_writer_refuses_a_file_that_filled_up_before_it_took_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    out.write_text('{"index": 0}\n')
    with pytest.raises(OutputError, match="already holds results"):
        JsonlWriter(out, refuse_existing=True)
    assert out.read_text() == '{"index": 0}\n'

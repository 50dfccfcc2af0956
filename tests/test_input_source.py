"""Every record names its input's content: sha256, encoding and stored pixels (JSONL ``source``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, random_images
from click.testing import CliRunner

from pyimgano_deploy.cli import main
from pyimgano_deploy.inputs import read_image
from pyimgano_deploy.inputs.reader import read_image_source
from pyimgano_deploy.inputs.source_info import encoding_of
from pyimgano_deploy.runtimes import load_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b")


def _bgr(seed: int = 0) -> np.ndarray:
    return cv2.cvtColor(random_images(1, 36, 52, seed=seed)[0], cv2.COLOR_RGB2BGR)


def _infer(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["infer", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(("head", "name"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "png"), (b"\xff\xd8\xff\xe0", "jpeg"), (b"BM\x00\x00", "bmp"),
    (b"II*\x00\x08", "tiff"), (b"MM\x00*\x00", "tiff"), (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp"), (b"GIF89a", None),
])
def test_encoding_comes_from_the_signature(head: bytes, name: str | None) -> None:
    assert encoding_of(head) == name


def test_file_source_pins_the_bytes_and_the_stored_pixels(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(_bgr(), cv2.COLOR_BGR2GRAY))
    image, source = read_image_source(path)
    assert np.array_equal(image, read_image(path)) and image.shape == (36, 52, 3)
    assert source.to_dict() == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size_bytes": path.stat().st_size,
                                "encoding": "png", "width": 52, "height": 36, "channels": 1, "bit_depth": 8, "grey": True}


def test_infer_records_name_content_not_just_the_path(bundle_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    assert cv2.imwrite(str(images / "a.jpg"), _bgr(1))
    (images / "b.png").write_bytes((images / "a.jpg").read_bytes())  # a JPEG named .png: decoded, and recorded, as JPEG
    assert cv2.imwrite(str(images / "c.png"), cv2.cvtColor(_bgr(2), cv2.COLOR_BGR2BGRA))
    out = tmp_path / "out.jsonl"
    code, _ = _infer("--bundle", str(bundle_dir), "--input", str(images), "--save-jsonl", str(out))
    assert code == 0
    records = {Path(r["input"]).name: r for r in _records(out)}
    assert all(r["schema_version"] == "1.2" for r in records.values())
    a, b, c = (records[n]["source"] for n in ("a.jpg", "b.png", "c.png"))
    assert a["sha256"] == b["sha256"] == hashlib.sha256((images / "a.jpg").read_bytes()).hexdigest()
    assert a["encoding"] == b["encoding"] == "jpeg" and records["a.jpg"]["score"] == records["b.png"]["score"]
    assert (c["encoding"], c["channels"], c["width"], c["height"], c["grey"]) == ("png", 4, 52, 36, False)


def test_an_undecodable_file_is_named_by_its_bytes_alone(bundle_dir: Path, tmp_path: Path) -> None:
    bad, empty = tmp_path / "bad.png", tmp_path / "empty.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    empty.write_bytes(b"")
    out = tmp_path / "out.jsonl"
    code, _ = _infer("--bundle", str(bundle_dir), "--input", str(tmp_path), "--save-jsonl", str(out), "--max-errors", "2")
    records = {Path(r["input"]).name: r for r in _records(out)}
    assert code == 0 and all(r["status"] == "error" for r in records.values())
    assert records["bad.png"]["source"] == {"sha256": hashlib.sha256(bad.read_bytes()).hexdigest(), "size_bytes": 28,
                                            "encoding": "png"}  # no pixels: none were decoded
    assert "source" not in records["empty.png"]  # refused before any byte was read


def test_array_inputs_record_their_declared_format(bundle_dir: Path) -> None:
    chw = np.ascontiguousarray(random_images(1, 30, 40, seed=3)[0].transpose(2, 0, 1), dtype=np.float32) / 255
    with load_bundle(bundle_dir) as runtime:
        (result,) = runtime.infer(chw, input_format="rgb_f32_chw")
    assert result.ok and result.source is not None
    assert result.source.to_dict() == {"input_format": "rgb_f32_chw", "width": 40, "height": 30, "channels": 3, "bit_depth": 32,
                                       "grey": False}


def test_resume_refuses_inputs_whose_file_changed_since_scoring(bundle_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    for i in range(2):
        assert cv2.imwrite(str(images / f"im{i}.png"), _bgr(10 + i))
    out = tmp_path / "out.jsonl"
    args = ("--bundle", str(bundle_dir), "--input", str(images), "--save-jsonl", str(out))
    assert _infer(*args)[0] == 0
    before = out.read_bytes()
    assert cv2.imwrite(str(images / "im1.png"), cv2.resize(_bgr(12), (80, 60)))  # same name, other image
    code, err = _infer(*args, "--resume")
    assert code == 8 and "im1.png" in err and "changed after they were scored" in err
    assert out.read_bytes() == before  # nothing appended, nothing repaired


def test_resume_check_sha256_catches_a_rewrite_at_the_same_size(bundle_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    path = images / "im0.png"
    assert cv2.imwrite(str(path), _bgr(30))
    out = tmp_path / "out.jsonl"
    args = ("--bundle", str(bundle_dir), "--input", str(images), "--save-jsonl", str(out))
    assert _infer(*args)[0] == 0
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    assert _infer(*args, "--resume")[0] == 0  # the default check is size: nothing to do
    code, err = _infer(*args, "--resume", "--resume-check", "sha256")
    assert code == 8 and "im0.png" in err and "sha256 differs" in err


def test_resume_check_without_resume_is_a_usage_error(bundle_dir: Path, tmp_path: Path) -> None:
    code, err = _infer("--bundle", str(bundle_dir), "--input", str(tmp_path), "--save-jsonl", str(tmp_path / "o.jsonl"),
                       "--resume-check", "sha256")
    assert code == 2 and "--resume-check applies to --resume only" in err


def test_resume_goes_on_when_recorded_files_are_unchanged(bundle_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    assert cv2.imwrite(str(images / "im0.png"), _bgr(20))
    out = tmp_path / "out.jsonl"
    args = ("--bundle", str(bundle_dir), "--input", str(images), "--save-jsonl", str(out))
    assert _infer(*args)[0] == 0
    assert cv2.imwrite(str(images / "im1.png"), _bgr(21))
    assert _infer(*args, "--resume")[0] == 0
    assert [Path(r["input"]).name for r in _records(out)] == ["im0.png", "im1.png"]


def test_parquet_has_the_source_columns(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="pyarrow is the parquet extra (pip install 'pyimgano-deploy[ray]')")
    from pyimgano_deploy.scale.parquet_out import flat_row

    row = flat_row({"index": 0, "status": "ok", "source": {"sha256": "ab", "size_bytes": 9, "encoding": "png", "width": 4,
                                                             "height": 3, "channels": 1, "bit_depth": 16}})
    assert (row["source_sha256"], row["source_size_bytes"], row["source_bit_depth"], row["source_input_format"]) == ("ab", 9, 16, None)


class _ConstantDetector:
    """The eager API's detector surface and nothing else: scores every image 1.0."""

    threshold = None
    batch_size = 2

    @staticmethod
    def preprocess(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (8, 8))

    @staticmethod
    def predict_batch(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(len(batch), np.float32), np.zeros((len(batch), 8, 8), np.float32)


def test_eager_infer_results_carry_the_source_too(tmp_path: Path) -> None:
    from pyimgano_deploy.inference import infer

    path = tmp_path / "a.bmp"
    assert cv2.imwrite(str(path), _bgr(30))
    file_result, array_result = infer(_ConstantDetector(), [str(path), np.zeros((5, 7), np.uint8)], input_format="gray_u8_hw")
    assert file_result.source.encoding == "bmp" and file_result.source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert array_result.source.to_dict() == {"input_format": "gray_u8_hw", "width": 7, "height": 5, "channels": 1, "bit_depth": 8,
                                             "grey": True}


def test_resume_refuses_a_corrupt_file_that_was_replaced(bundle_dir: Path, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    (images / "im0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # half-written by a camera, say
    out = tmp_path / "out.jsonl"
    args = ("--bundle", str(bundle_dir), "--input", str(images), "--save-jsonl", str(out))
    assert _infer(*args, "--max-errors", "1")[0] == 0
    assert cv2.imwrite(str(images / "im0.png"), _bgr(40))  # now complete: its error record is about bytes that are gone
    code, err = _infer(*args, "--resume")
    assert code == 8 and "im0.png" in err

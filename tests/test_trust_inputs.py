"""Inputs are never lost or guessed: strict decoding, a header pixel limit, 16-bit ranges,
file names that are not UTF-8, symlinked folders, and invalid elements of the numpy API."""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import jsonl_records, run_cli
from pyimgano_deploy.inputs import ImageReadError, decode_image, read_image
from pyimgano_deploy.runtimes import load_bundle
from pyimgano_deploy.runtimes.sources import expand_inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "b")


def _infer(*args: str) -> tuple[int, str, str]:
    return run_cli("infer", *args)


_records = jsonl_records


def _jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (40, 48)) -> Path:
    ok, buf = cv2.imencode(".jpg", random_images(1, *size, seed=seed)[0], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _corrupt_middle(path: Path) -> Path:
    """Damage the entropy-coded data, keeping the end-of-image marker. (JPEG has no checksum:
    a small overwrite can still decode as valid Huffman codes, which no decoder can detect.)"""
    data = bytearray(path.read_bytes())
    sos = data.find(b"\xff\xda")
    mid = (sos + len(data)) // 2
    data[mid : mid + 200] = b"\x55" * 200
    path.write_bytes(bytes(data))
    return path


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _png_bomb(path: Path, side: int = 20000) -> Path:
    """A ~1 kB PNG whose header declares side x side RGB pixels (1.2 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------- strict decoding
def test_jpeg_with_corrupt_entropy_data_is_a_decode_error(tmp_path: Path) -> None:
    path = _corrupt_middle(_jpeg(tmp_path / "c.jpg", size=(128, 128)))
    assert cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV would score it
    with pytest.raises(ImageReadError, match="corrupt JPEG data"):
        read_image(path)


def test_corrupt_jpeg_in_infer_is_an_error_record(tiny: Path, tmp_path: Path) -> None:
    good, bad = _jpeg(tmp_path / "a.jpg"), _corrupt_middle(_jpeg(tmp_path / "b.jpg", size=(128, 128)))
    out = tmp_path / "o.jsonl"
    code, _, _ = _infer("--bundle", str(tiny), "--input", str(good), "--input", str(bad), "--save-jsonl", str(out))
    records = _records(out)
    assert code == 1 and [r["status"] for r in records] == ["ok", "error"]
    assert records[1]["error"]["stage"] == "decode" and records[1]["score"] is None


def test_strict_jpeg_decode_equals_opencv_on_a_clean_file(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "a.jpg")
    ours = read_image(path)
    theirs = cv2.cvtColor(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(ours, theirs)


def test_png_with_a_bad_crc_is_a_decode_error(tmp_path: Path) -> None:
    ok, buf = cv2.imencode(".png", random_images(1, 16, 16)[0])
    data = bytearray(buf.tobytes())
    idat = data.find(b"IDAT")
    data[idat + 6] ^= 0xFF  # a byte of the compressed data: the chunk's CRC no longer matches
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="CRC mismatch in chunk b'IDAT'"):
        read_image(path)


# ----------------------------------------------------------------------------- size limit
def test_pixel_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    path = _png_bomb(tmp_path / "bomb.png")
    assert path.stat().st_size < 2000
    with pytest.raises(ImageReadError, match="20000x20000 = 400000000 pixels, more than max_pixels"):
        read_image(path)


def test_pixel_bomb_in_infer_is_an_error_record_at_bounded_memory(tiny: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc/self/status (Linux) to read the peak RSS")
    bomb, out = _png_bomb(tmp_path / "bomb.png"), tmp_path / "o.jsonl"
    # VmHWM is the peak RSS of this process image (ru_maxrss would carry the parent's over exec)
    code = (
        "import re, sys; from pyimgano_deploy.cli import main\n"
        "try:\n    main.main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit as e:\n    pass\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    done = subprocess.run([sys.executable, "-c", code, "infer", "--bundle", str(tiny), "--input", str(bomb),
                           "--save-jsonl", str(out)], capture_output=True, text=True, timeout=120)
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    record = _records(out)[0]
    assert record["status"] == "error" and record["error"]["stage"] == "decode" and "max_pixels" in record["error"]["message"]
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib} KiB"


def test_max_pixels_is_a_cli_option(tiny: Path, tmp_path: Path) -> None:
    path, out = _jpeg(tmp_path / "a.jpg"), tmp_path / "o.jsonl"
    code, _, _ = _infer("--bundle", str(tiny), "--input", str(path), "--save-jsonl", str(out), "--max-pixels", "100")
    assert code == 1 and "max_pixels=100" in _records(out)[0]["error"]["message"]
    code, _, _ = _infer("--bundle", str(tiny), "--input", str(path), "--save-jsonl", str(out), "--max-pixels", "0", "--overwrite")
    assert code == 0


# ----------------------------------------------------------------------------- 16-bit
def test_16bit_file_needs_u16_max_and_records_it(tiny: Path, tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 3))
    with pytest.raises(ImageReadError, match="never guessed"):
        read_image(path)
    out = tmp_path / "o.jsonl"
    code, _, _ = _infer("--bundle", str(tiny), "--input", str(path), "--save-jsonl", str(out))
    assert code == 1 and "--u16-max" in _records(out)[0]["error"]["message"]
    code, _, _ = _infer("--bundle", str(tiny), "--input", str(path), "--save-jsonl", str(out), "--u16-max", "4095", "--overwrite")
    record = _records(out)[0]
    assert code == 0 and record["status"] == "ok" and record["u16_max"] == 4095
    with load_bundle(tiny) as rt:
        a, b = rt.infer([path], u16_max=4095)[0].score, rt.infer([path], u16_max=65535)[0].score
    assert a == pytest.approx(record["score"], rel=1e-6) and a != b


# ----------------------------------------------------------------------------- names and folders
def test_file_name_that_is_not_utf8_is_recorded_losslessly_and_resumes(tiny: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    raw_name = b"b_\xff.jpg"
    _jpeg(folder / "a.jpg")
    _jpeg(Path(os.fsdecode(os.path.join(os.fsencode(folder), raw_name))), seed=2)
    _jpeg(folder / "c.jpg", seed=3)
    out = tmp_path / "o.jsonl"
    code, _, _ = _infer("--bundle", str(tiny), "--input", str(folder), "--save-jsonl", str(out))
    records = _records(out)
    assert code == 0 and len(records) == 3 and all(r["status"] == "ok" for r in records)
    odd = records[1]
    assert odd["input"].endswith("b_\\xff.jpg")
    assert base64.b64decode(odd["input_raw"]).endswith(raw_name) and base64.b64decode(odd["resolved_raw"]).endswith(raw_name)
    code, stdout, _ = _infer("--bundle", str(tiny), "--input", str(folder), "--save-jsonl", str(out), "--resume", "--json")
    assert code == 0 and json.loads(stdout)["processed"] == 0 and len(_records(out)) == 3


def test_symlinked_sub_folder_is_followed_and_a_loop_is_reported(tmp_path: Path) -> None:
    real, scan = tmp_path / "real", tmp_path / "scan"
    real.mkdir()
    scan.mkdir()
    _jpeg(real / "x.jpg")
    _jpeg(scan / "y.jpg")
    os.symlink(real, scan / "linked")
    os.symlink(scan, scan / "loop")
    plan = expand_inputs([str(scan)])
    assert sorted(Path(p).name for p in plan.items) == ["x.jpg", "y.jpg"]
    assert [Path(p).name for p in plan.loops] == ["loop"]


def test_same_file_spelled_twice_is_one_input(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "a.jpg")
    plan = expand_inputs([str(path), str(tmp_path / "." / "a.jpg")])
    assert len(plan.items) == 1


# ----------------------------------------------------------------------------- numpy API
def test_runtime_invalid_element_is_a_per_item_error(tiny: Path) -> None:
    img = random_images(1, 32, 40)[0]
    with load_bundle(tiny) as rt:
        results = rt.infer([img, None, img], input_format="rgb_u8_hwc")
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.stage == "read" and "None" in results[1].error.message and results[1].score is None
    assert results[0].score == results[2].score


def test_runtime_and_eager_reject_batch_size_below_1(tiny: Path) -> None:
    from pyimgano_deploy.inference import infer
    from pyimgano_deploy.models import create_model

    with pytest.raises(ValueError, match="batch_size"):
        load_bundle(tiny, batch_size=0)
    det = create_model("vision_padim", pretrained=False, image_size=32, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        infer(det, [random_images(1, 32, 32)[0]], input_format="rgb_u8_hwc", batch_size=0)


def test_eager_invalid_element_is_a_per_item_error(tmp_path: Path) -> None:
    from pyimgano_deploy.inference import infer
    from pyimgano_deploy.models import create_model

    imgs = list(random_images(4, 32, 32))
    det = create_model("vision_padim", pretrained=False, image_size=32, progress=False).fit(imgs, input_format="rgb_u8_hwc")
    results = infer(det, [imgs[0], None, imgs[1]], input_format="rgb_u8_hwc")
    assert [r.ok for r in results] == [True, False, True] and results[1].score is None


def test_decode_image_reads_bytes_like_a_file(tmp_path: Path) -> None:
    path = _jpeg(tmp_path / "a.jpg")
    np.testing.assert_array_equal(decode_image(path.read_bytes(), name="a"), read_image(path))
    with pytest.raises(ImageReadError, match="empty"):
        decode_image(b"", name="nothing")

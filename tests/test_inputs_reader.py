"""read_image / read_mask on real encoded files, good and bad."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pyimgano_deploy.inputs import IMAGE_EXTENSIONS, ImageReadError, read_image, read_mask


def _rgb(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray, ext: str | None = None, params: list[int] | None = None) -> Path:
    ok, buf = cv2.imencode(ext or path.suffix, array, params or [])
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def _smooth_rgb(h: int = 64, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256], axis=2).astype(np.uint8)


def test_extensions():
    assert IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def test_rgb_png_round_trip(tmp_path):
    rgb = _rgb()
    path = _write(tmp_path / "a.png", np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV writes BGR
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(read_image(str(path)), rgb)


def test_bmp_and_lossless_webp(tmp_path):
    rgb = _rgb(16, 20)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image(_write(tmp_path / "a.bmp", bgr)), rgb)
    webp = _write(tmp_path / "a.webp", bgr, params=[cv2.IMWRITE_WEBP_QUALITY, 101])
    np.testing.assert_array_equal(read_image(webp), rgb)


def test_gray_png_is_replicated(tmp_path):
    gray = _rgb()[:, :, 0].copy()
    out = read_image(_write(tmp_path / "g.png", gray))
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_png_drops_alpha(tmp_path):
    rgb = _rgb()
    alpha = np.zeros((24, 32, 1), np.uint8)  # fully transparent: colour must survive unchanged
    bgra = np.concatenate([rgb[:, :, ::-1], alpha], axis=2)
    out = read_image(_write(tmp_path / "rgba.png", bgra))
    assert out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_reads_close_to_source(tmp_path):
    rgb = _smooth_rgb()
    path = _write(tmp_path / "a.jpg", np.ascontiguousarray(rgb[:, :, ::-1]), params=[cv2.IMWRITE_JPEG_QUALITY, 98])
    out = read_image(path)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 4  # channel order is right


def test_jpeg_with_trailing_bytes_after_eoi_is_accepted(tmp_path):
    rgb = _smooth_rgb(32, 32)
    path = _write(tmp_path / "a.jpg", np.ascontiguousarray(rgb[:, :, ::-1]))
    path.write_bytes(path.read_bytes() + b"\x00" * 16)
    assert read_image(path).shape == (32, 32, 3)


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
def test_16bit_gray(tmp_path, ext):
    values = (np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) * 85).astype(np.uint16)
    out = read_image(_write(tmp_path / f"g16{ext}", values), u16_max=65535)
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 2], expected)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16bit_colour_scaled_with_u16_max(tmp_path, ext):
    rgb8 = _rgb(8, 10)
    rgb12 = (rgb8.astype(np.uint16) * 4095 // 255).astype(np.uint16)  # 12-bit data
    rgb12[0, 0] = (4095, 0, 1)
    path = _write(tmp_path / f"c16{ext}", np.ascontiguousarray(rgb12[:, :, ::-1]))
    out = read_image(path, u16_max=4095)
    expected = np.rint(rgb12.astype(np.float64) * 255 / 4095).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0].tolist() == [255, 0, 0]
    # 12-bit data read as full 16-bit range is darker but still valid.
    assert read_image(path, u16_max=65535).max() <= 16


def test_16bit_value_above_u16_max_names_path(tmp_path):
    values = np.full((4, 4), 5000, np.uint16)
    path = _write(tmp_path / "over.png", values)
    with pytest.raises(ImageReadError) as info:
        read_image(path, u16_max=4095)
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and "u16_max=4095" in str(info.value)


def test_float_tiff_is_refused(tmp_path):
    path = _write(tmp_path / "f.tiff", np.zeros((4, 4), np.float32))
    with pytest.raises(ImageReadError, match="unsupported pixel type float32"):
        read_image(path)


def test_non_ascii_path_with_spaces(tmp_path):
    rgb = _rgb(8, 8)
    path = _write(tmp_path / "dossier é 日本" / "ïmage (1) ü.png", np.ascontiguousarray(rgb[:, :, ::-1]))
    np.testing.assert_array_equal(read_image(path), rgb)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 3:6] = 255
    mpath = _write(tmp_path / "dossier é 日本" / "måsk 1.png", mask)
    assert read_mask(mpath).sum() == 6


# ---------------------------------------------------------------- failures


def _assert_read_error(path: Path, fragment: str) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(path)
    assert str(path) in str(err)
    assert fragment in str(err), str(err)
    with pytest.raises(ImageReadError):
        read_mask(path)
    return err


def test_missing_file(tmp_path):
    _assert_read_error(tmp_path / "nope.png", "not found")


def test_directory(tmp_path):
    (tmp_path / "d.png").mkdir()
    _assert_read_error(tmp_path / "d.png", "directory")


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    _assert_read_error(tmp_path / "e.png", "empty")


def test_text_file_with_png_extension(tmp_path):
    (tmp_path / "t.png").write_text("this is not an image\n")
    _assert_read_error(tmp_path / "t.png", "could not decode")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tiff"])
def test_corrupt_bytes(tmp_path, ext):
    rng = np.random.default_rng(3)
    (tmp_path / f"c{ext}").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    _assert_read_error(tmp_path / f"c{ext}", "")


def test_png_with_garbage_after_signature(tmp_path):
    (tmp_path / "g.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x01" * 40)
    _assert_read_error(tmp_path / "g.png", "PNG")


@pytest.mark.parametrize("cut", ["half", "iend"])
def test_truncated_png(tmp_path, cut):
    data = _write(tmp_path / "full.png", _rgb()).read_bytes()
    data = data[: len(data) // 2] if cut == "half" else data[:-12]  # -12: exactly the IEND chunk
    (tmp_path / "t.png").write_bytes(data)
    _assert_read_error(tmp_path / "t.png", "truncated PNG")


@pytest.mark.parametrize("cut", [2, 200, "half"])
def test_truncated_jpeg(tmp_path, cut):
    data = _write(tmp_path / "full.jpg", _smooth_rgb()).read_bytes()
    data = data[: len(data) // 2] if cut == "half" else data[:-cut]
    (tmp_path / "t.jpg").write_bytes(data)
    _assert_read_error(tmp_path / "t.jpg", "truncated JPEG")


def test_truncated_tiff_is_an_error_without_a_python_warning(tmp_path, recwarn):
    data = _write(tmp_path / "full.tiff", _rgb()).read_bytes()
    (tmp_path / "t.tiff").write_bytes(data[: len(data) // 3])  # cuts into the metadata Pillow parses on open
    _assert_read_error(tmp_path / "t.tiff", "")
    assert [str(w.message) for w in recwarn] == []


# ---------------------------------------------------------------- masks


def test_mask_gray_any_nonzero_is_one(tmp_path):
    mask = np.zeros((8, 9), np.uint8)
    mask[1, 1] = 1
    mask[2, 2] = 128
    mask[3, 3] = 255
    out = read_mask(_write(tmp_path / "m.png", mask))
    assert out.dtype == np.uint8 and out.shape == (8, 9) and out.flags.c_contiguous
    assert set(np.unique(out).tolist()) == {0, 1}
    np.testing.assert_array_equal(out, (mask != 0).astype(np.uint8))


def test_mask_colour_takes_max_over_channels(tmp_path):
    mask = np.zeros((6, 7, 3), np.uint8)
    mask[0, 0] = (0, 0, 255)  # only red
    mask[1, 1] = (9, 0, 0)  # only blue
    mask[2, 2] = (255, 255, 255)
    out = read_mask(_write(tmp_path / "mc.png", mask))
    assert out.shape == (6, 7)
    assert out.sum() == 3 and out[0, 0] == out[1, 1] == out[2, 2] == 1


def test_mask_rgba_ignores_alpha(tmp_path):
    mask = np.zeros((5, 5, 4), np.uint8)
    mask[..., 3] = 255  # opaque everywhere but black
    mask[4, 4, :3] = 200
    out = read_mask(_write(tmp_path / "ma.png", mask))
    assert out.sum() == 1 and out[4, 4] == 1


def test_mask_16bit(tmp_path):
    mask = np.zeros((5, 5), np.uint16)
    mask[0, :] = 1
    mask[1, :] = 65535
    out = read_mask(_write(tmp_path / "m16.png", mask))
    assert out.dtype == np.uint8 and out.sum() == 10

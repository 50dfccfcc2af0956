"""Runtime.infer on a real tiny bundle: parity with torch, labels, maps, bad inputs, threads."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, random_images, torch_reference

from pyimgano_deploy.inputs import Preprocess, read_image
from pyimgano_deploy.runtimes import InferenceResult, Runtime, load_bundle
from pyimgano_deploy.runtimes.errors import EngineRunError

TOL = 1e-5


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "b", size=(32, 40))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six PNG/JPEG-free images of assorted sizes (none equal to the model's 32x40)."""
    root = tmp_path_factory.mktemp("images")
    sizes = [(50, 60), (37, 45), (64, 64), (32, 41), (90, 70), (48, 100)]
    for i, (h, w) in enumerate(sizes):
        rgb = random_images(1, h, w, seed=10 + i)[0]
        assert cv2.imwrite(str(root / f"img{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


def _expected(paths: list[Path], pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    return torch_reference(pre.batch([read_image(p) for p in paths]))


def test_paths_match_torch(bundle_dir: Path, image_dir: Path) -> None:
    paths = sorted(image_dir.glob("*.png"))
    rt = load_bundle(bundle_dir, batch_size=4)
    results = rt.infer([str(p) for p in paths])
    want_score, _ = _expected(paths, rt.preprocess)
    assert [r.ok for r in results] == [True] * len(paths)
    got = np.array([r.score for r in results])
    assert np.max(np.abs(got - want_score)) < TOL
    assert rt.engine_info["engine"] == "onnxruntime" and rt.engine_info["precision"] == "fp32"


def test_arrays_match_torch_and_formats(bundle_dir: Path) -> None:
    rt = load_bundle(bundle_dir, batch_size=3)
    rgb = random_images(5, 32, 40, seed=3)
    want_score, want_map = torch_reference(rgb)
    res_batch = rt.infer(rgb, input_format="rgb_u8_hwc", include_maps=True)
    res_bgr = rt.infer([im[:, :, ::-1].copy() for im in rgb], input_format="bgr_u8_hwc")
    for i, (a, b) in enumerate(zip(res_batch, res_bgr)):
        assert abs(a.score - want_score[i]) < TOL and abs(b.score - want_score[i]) < TOL
        assert a.anomaly_map.shape == (32, 40)
        assert np.max(np.abs(a.anomaly_map - want_map[i])) < TOL


def test_array_without_format_is_a_usage_error(bundle_dir: Path) -> None:
    rt = load_bundle(bundle_dir)
    with pytest.raises(ValueError, match="input_format"):
        rt.infer([np.zeros((32, 40, 3), np.uint8)])


def test_labels_follow_manifest_threshold(bundle_dir: Path) -> None:
    rt = load_bundle(bundle_dir)
    assert rt.threshold is not None
    results = rt.infer(random_images(8, 32, 40, seed=5), input_format="rgb_u8_hwc")
    labels = [r.label for r in results]
    assert labels == [int(r.score >= rt.threshold) for r in results]
    assert set(labels) == {0, 1}
    assert all(r.threshold == rt.threshold for r in results)


def test_maps_resized_to_original_size(bundle_dir: Path, image_dir: Path) -> None:
    paths = sorted(image_dir.glob("*.png"))
    rt = load_bundle(bundle_dir)
    results = rt.infer(paths, include_maps=True)
    _, model_maps = _expected(paths, rt.preprocess)
    for path, res, model_map in zip(paths, results, model_maps):
        h, w = read_image(path).shape[:2]
        assert res.anomaly_map.shape == (h, w) and res.anomaly_map.dtype == np.float32
        back = cv2.resize(model_map, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.max(np.abs(res.anomaly_map - back)) < 1e-4
    assert all(r.anomaly_map is None for r in rt.infer(paths[:2]))


def test_center_crop_map_placed_in_original_frame(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "crop", size=(40, 48), center_crop=(32, 40))
    rt = load_bundle(bundle)
    image = random_images(1, 80, 96, seed=7)[0]
    (res,) = rt.infer(image, input_format="rgb_u8_hwc", include_maps=True)
    want_score, _ = torch_reference(rt.preprocess.batch([image]))
    assert abs(res.score - want_score[0]) < TOL
    assert res.anomaly_map.shape == (80, 96)


def _write_bad_files(root: Path) -> dict[str, str]:
    good = random_images(1, 40, 40, seed=1)[0]
    ok, png = cv2.imencode(".png", good)
    assert ok
    (root / "good.png").write_bytes(png.tobytes())
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes(png.tobytes()[: len(png) // 2])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
    (root / "text.png").write_bytes(b"this is not an image\n")
    (root / "notes.txt").write_text("hello\n")
    return {
        "good.png": "ok",
        "empty.png": "read",
        "truncated.png": "decode",
        "corrupt.jpg": "decode",
        "text.png": "decode",
        "notes.txt": "read",
        "missing.png": "read",
    }


def test_bad_files_become_error_records_and_run_continues(bundle_dir: Path, tmp_path: Path) -> None:
    expected = _write_bad_files(tmp_path)
    names = list(expected)
    rt = load_bundle(bundle_dir, batch_size=2, num_workers=2)
    results = rt.infer([tmp_path / n for n in names], include_maps=True)
    assert len(results) == len(names)
    for name, res in zip(names, results):
        if expected[name] == "ok":
            assert res.ok and res.score is not None and res.anomaly_map.shape == (40, 40)
        else:
            assert not res.ok, name
            assert res.score is None and res.label is None and res.anomaly_map is None
            assert res.error.stage == expected[name], (name, res.error)
            assert res.error.type and res.error.message
    by_name = dict(zip(names, results))
    assert by_name["notes.txt"].error.type == "UnsupportedImageType"
    assert by_name["missing.png"].error.type == "FileNotFoundError"


def test_a_missing_path_or_a_folder_is_named_as_such_not_by_its_extension(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    rt = load_bundle(bundle_dir)
    missing, folder = rt.infer([tmp_path / "typo_dir", tmp_path / "folder"])
    assert (missing.error.type, missing.error.stage) == ("FileNotFoundError", "read")
    assert "no such file or directory" in missing.error.message
    assert (folder.error.type, folder.error.stage) == ("IsADirectoryError", "read")
    assert "not a regular file" in folder.error.message


def test_wrong_array_format_is_a_per_item_error(bundle_dir: Path) -> None:
    rt = load_bundle(bundle_dir)
    good = random_images(1, 32, 40)[0]
    results = rt.infer([good, np.zeros((32, 40), np.uint8), good], input_format="rgb_u8_hwc")
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.stage == "decode"
    assert results[0].score == results[2].score


def test_four_threads_equal_one_thread(bundle_dir: Path, image_dir: Path) -> None:
    paths = sorted(image_dir.glob("*.png")) * 3
    rt = load_bundle(bundle_dir, batch_size=4, num_workers=1, intra_op_threads=1)
    reference = rt.infer(paths, include_maps=True)
    outputs: dict[int, list[InferenceResult]] = {}

    def work(k: int) -> None:
        outputs[k] = rt.infer(paths, include_maps=True)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outputs) == [0, 1, 2, 3]
    for results in outputs.values():
        assert [r.score for r in results] == [r.score for r in reference]
        for a, b in zip(results, reference):
            assert np.array_equal(a.anomaly_map, b.anomaly_map)


def test_static_batch_engine_pads_last_batch(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "static", static_batch=3)
    rt = load_bundle(bundle, batch_size=8)
    assert rt.batch_size == 3 and rt.engine_info["static_batch"] == 3
    images = random_images(7, 32, 40, seed=9)
    results = rt.infer(images, input_format="rgb_u8_hwc")
    want, _ = torch_reference(images)
    assert np.max(np.abs(np.array([r.score for r in results]) - want)) < TOL


class _FakeSession:
    """Returns NaN for the second item of every batch, or fails when ``fail`` is set."""

    kind = "fake"
    thread_safe = False
    static_batch = None
    providers = ["fake"]

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.fail:
            raise EngineRunError("device lost")
        score = np.arange(len(batch), dtype=np.float32)
        if len(batch) > 1:
            score[1] = np.nan
        return score, np.zeros((len(batch), *batch.shape[1:3]), np.float32)


def test_non_finite_score_is_an_error_not_a_number(bundle_dir: Path) -> None:
    from pyimgano_deploy.bundles import read_bundle

    rt = Runtime(read_bundle(bundle_dir), _FakeSession(), batch_size=4)
    results = rt.infer(random_images(3, 32, 40), input_format="rgb_u8_hwc")
    assert results[0].ok and results[2].ok
    assert not results[1].ok and results[1].score is None
    assert results[1].error.stage == "inference" and results[1].error.type == "NonFiniteScore"

    rt_fail = Runtime(read_bundle(bundle_dir), _FakeSession(fail=True), batch_size=2)
    failed = rt_fail.infer(random_images(3, 32, 40), input_format="rgb_u8_hwc")
    assert [r.error.stage for r in failed] == ["inference"] * 3


def test_load_bundle_refuses_tampered_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    from pyimgano_deploy.bundles import ChecksumMismatchError

    copy = tmp_path / "b"
    shutil.copytree(bundle_dir, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-5] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        load_bundle(copy)


def test_defects_extracted_on_request(bundle_dir: Path) -> None:
    from pyimgano_deploy.postprocess.defects import DefectsConfig

    rt = load_bundle(bundle_dir)
    image = np.full((64, 80, 3), 128, np.uint8)
    image[10:30, 20:50] = 255  # a bright patch: high map values there
    config = DefectsConfig(pixel_threshold_source="fixed", pixel_threshold_value=0.3)
    (res,) = rt.infer(image, input_format="rgb_u8_hwc", defects=config)
    assert res.ok and res.defects is not None and len(res.defects["regions"]) == 1
    # the bundle has no pixel threshold: the default source ("bundle") is a postprocess error
    (bad,) = rt.infer(image, input_format="rgb_u8_hwc", defects=DefectsConfig())
    assert not bad.ok and bad.error.stage == "postprocess"

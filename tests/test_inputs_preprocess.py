"""Preprocess: resize with named interpolation, centre crop, batching, (de)serialisation."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from pyimgano_deploy.inputs import INTERPOLATIONS, Preprocess


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_interpolation_table():
    assert INTERPOLATIONS == {
        "nearest": cv2.INTER_NEAREST,
        "linear": cv2.INTER_LINEAR,
        "cubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
        "lanczos4": cv2.INTER_LANCZOS4,
    }


@pytest.mark.parametrize("name", sorted(INTERPOLATIONS))
def test_resize_non_square_matches_opencv(name):
    img = _rgb(40, 60)
    pre = Preprocess(size=(16, 24), interpolation=name)
    out = pre(img)
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert pre.output_size == (16, 24)
    np.testing.assert_array_equal(out, cv2.resize(img, (24, 16), interpolation=INTERPOLATIONS[name]))


def test_interpolations_actually_differ():
    img = _rgb(37, 41)
    outs = {n: Preprocess(size=(20, 20), interpolation=n)(img) for n in INTERPOLATIONS}
    assert not np.array_equal(outs["nearest"], outs["linear"])
    assert not np.array_equal(outs["linear"], outs["cubic"])


def test_default_interpolation_is_linear():
    assert Preprocess(size=(8, 8)).interpolation == "linear"


def test_upscale():
    out = Preprocess(size=(64, 48), interpolation="cubic")(_rgb(16, 12))
    assert out.shape == (64, 48, 3)


@pytest.mark.parametrize("name", sorted(INTERPOLATIONS))
def test_identity_when_size_matches(name):
    img = _rgb(32, 48)
    out = Preprocess(size=(32, 48), interpolation=name)(img)
    np.testing.assert_array_equal(out, img)
    assert not np.shares_memory(out, img)


def test_non_contiguous_input():
    img = _rgb(30, 40)
    view = img[:, ::-1]
    out = Preprocess(size=(15, 20))(view)
    np.testing.assert_array_equal(out, cv2.resize(np.ascontiguousarray(view), (20, 15)))
    np.testing.assert_array_equal(Preprocess(size=(30, 40))(view), view)


def test_center_crop_offsets():
    img = _rgb(10, 11)
    pre = Preprocess(size=(10, 11), center_crop=(5, 4))
    out = pre(img)
    assert pre.output_size == (5, 4)
    np.testing.assert_array_equal(out, img[2:7, 3:7])  # top=(10-5)//2, left=(11-4)//2
    assert out.flags.c_contiguous


def test_resize_then_crop():
    img = _rgb(50, 70)
    pre = Preprocess(size=(40, 36), interpolation="area", center_crop=(32, 32))
    resized = cv2.resize(img, (36, 40), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(pre(img), resized[4:36, 2:34])


def test_crop_equal_to_size_is_identity_crop():
    img = _rgb(16, 16)
    np.testing.assert_array_equal(Preprocess(size=(16, 16), center_crop=(16, 16))(img), img)


@pytest.mark.parametrize("crop", [(33, 32), (32, 33), (64, 64)])
def test_crop_larger_than_size_is_error(crop):
    with pytest.raises(ValueError, match="center_crop.*larger than 'size'"):
        Preprocess(size=(32, 32), center_crop=crop)


@pytest.mark.parametrize("size", [(0, 8), (8, -1), (8.0, 8), (True, 8), (8,), (8, 8, 3), "88", None, 8])
def test_bad_size(size):
    with pytest.raises(ValueError, match="'size'"):
        Preprocess(size=size)


@pytest.mark.parametrize("crop", [(0, 4), (4,), (4.5, 4), "44"])
def test_bad_center_crop(crop):
    with pytest.raises(ValueError, match="'center_crop'"):
        Preprocess(size=(8, 8), center_crop=crop)


@pytest.mark.parametrize("interp", ["bilinear", "LINEAR", "", None, 1])
def test_bad_interpolation(interp):
    with pytest.raises(ValueError, match="'interpolation'") as info:
        Preprocess(size=(8, 8), interpolation=interp)
    assert "lanczos4" in str(info.value)


def test_sizes_are_normalised_to_int_tuples_and_frozen():
    pre = Preprocess(size=[np.int64(8), 9], center_crop=[4, np.int32(5)])
    assert pre.size == (8, 9) and type(pre.size[0]) is int
    assert pre.center_crop == (4, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pre.size = (1, 1)
    assert hash(pre) == hash(Preprocess(size=(8, 9), center_crop=(4, 5)))


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((8, 8), np.uint8),
        np.zeros((8, 8, 1), np.uint8),
        np.zeros((8, 8, 4), np.uint8),
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint16),
        np.zeros((0, 8, 3), np.uint8),
        np.zeros((3, 8, 8), np.uint8).transpose(1, 2, 0)[..., :2],
    ],
)
def test_bad_input_image(image):
    with pytest.raises(ValueError) as info:
        Preprocess(size=(4, 4))(image)
    assert f"shape={tuple(image.shape)}" in str(info.value) and str(image.dtype) in str(info.value)


def test_non_array_input():
    with pytest.raises(ValueError, match="list"):
        Preprocess(size=(4, 4))([[1, 2, 3]])


def test_batch():
    imgs = [_rgb(20, 30, seed=i) for i in range(3)] + [_rgb(16, 16, seed=9)]
    pre = Preprocess(size=(16, 16), interpolation="linear", center_crop=(8, 12))
    batch = pre.batch(imgs)
    assert batch.shape == (4, 8, 12, 3) and batch.dtype == np.uint8 and batch.flags.c_contiguous
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(batch[i], pre(img))
    np.testing.assert_array_equal(batch[3], imgs[3][4:12, 2:14])
    assert pre.batch(()).shape == (0, 8, 12, 3)


def test_batch_error_names_index():
    pre = Preprocess(size=(8, 8))
    with pytest.raises(ValueError, match=r"images\[1\]"):
        pre.batch([_rgb(8, 8), np.zeros((8, 8), np.uint8)])


@pytest.mark.parametrize(
    "pre",
    [
        Preprocess(size=(32, 48)),
        Preprocess(size=(64, 64), interpolation="area", center_crop=(56, 60)),
        Preprocess(size=(7, 9), interpolation="lanczos4"),
    ],
)
def test_to_dict_round_trip(pre):
    data = pre.to_dict()
    assert set(data) == {"size", "interpolation", "center_crop"}
    assert isinstance(data["size"], list)
    again = Preprocess.from_dict(json.loads(json.dumps(data)))
    assert again == pre
    assert again.to_dict() == data


def test_to_dict_values():
    assert Preprocess(size=(4, 6), interpolation="cubic", center_crop=(2, 3)).to_dict() == {
        "size": [4, 6],
        "interpolation": "cubic",
        "center_crop": [2, 3],
    }
    assert Preprocess(size=(4, 6)).to_dict()["center_crop"] is None


def test_from_dict_defaults():
    pre = Preprocess.from_dict({"size": [8, 10]})
    assert pre == Preprocess(size=(8, 10), interpolation="linear", center_crop=None)


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({}, "'size'"),
        ({"interpolation": "linear"}, "'size'"),
        ({"size": [8, 8], "resize": 3}, "unknown key"),
        ({"size": [8, 8], "interp": "linear"}, "'interp'"),
        ({"size": "8x8"}, "'size'"),
        ({"size": [8, 0]}, "'size'"),
        ({"size": [8, 8], "interpolation": "bicubic"}, "'interpolation'"),
        ({"size": [8, 8], "center_crop": [9, 8]}, "'center_crop'"),
        ({"size": [8, 8], "center_crop": [4]}, "'center_crop'"),
        ([8, 8], "mapping"),
        (None, "mapping"),
    ],
)
def test_from_dict_errors_name_the_key(data, fragment):
    with pytest.raises(ValueError) as info:
        Preprocess.from_dict(data)
    assert fragment in str(info.value)


def test_crop_box_is_the_centre_crop_geometry():
    pre = Preprocess(size=(10, 13), center_crop=(4, 6))
    assert pre.crop_box() == (3, 3, 4, 6)
    assert Preprocess(size=(10, 13)).crop_box() == (0, 0, 10, 13)
    image = np.arange(10 * 13 * 3, dtype=np.uint8).reshape(10, 13, 3)
    top, left, h, w = pre.crop_box()
    np.testing.assert_array_equal(pre(image), image[top : top + h, left : left + w])


def _shaded(h: int = 64, w: int = 96) -> np.ndarray:
    """A low-contrast texture under light that fades from left to right."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 24, size=(h, w, 1))
    light = np.linspace(40, 200, w)[None, :, None]
    return np.clip(light + texture, 0, 255).astype(np.uint8).repeat(3, axis=2)


def test_clahe_raises_local_contrast_where_the_light_is_dim():
    img = _shaded()
    out = Preprocess(size=(64, 96), contrast="clahe")(img)
    assert out.shape == img.shape and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    dim = slice(0, 24)
    assert out[:, dim].astype(float).std() > 1.5 * img[:, dim].astype(float).std()


def test_clahe_is_deterministic_and_runs_after_the_resize():
    img = _shaded(128, 192)
    pre = Preprocess(size=(64, 96), contrast="clahe")
    a, b = pre(img), pre(img)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 96, 3)


def test_contrast_round_trips_and_is_written_only_when_set():
    assert "contrast" not in Preprocess(size=(8, 8)).to_dict()
    d = Preprocess(size=(8, 8), contrast="clahe").to_dict()
    assert d["contrast"] == "clahe"
    assert Preprocess.from_dict(d) == Preprocess(size=(8, 8), contrast="clahe")
    assert Preprocess.from_dict({"size": [8, 8]}).contrast == "none"


def test_an_unknown_contrast_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"preprocess 'contrast' must be one of \['none', 'clahe'\]; got 'histeq'"):
        Preprocess.from_dict({"size": [8, 8], "contrast": "histeq"})

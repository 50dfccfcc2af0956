"""Eager detectors on random-init backbones: fit, score, maps, persistence, inputs."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from pyimgano_deploy.inference import calibrate_threshold, infer
from pyimgano_deploy.models import create_model
from pyimgano_deploy.models.detectors.batches import InputError

SIZE = 64
MODELS = {
    "vision_patchcore": {"coreset_ratio": 0.25},
    "vision_padim": {"d": 8},
}


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(80, 120, size=(1, SIZE, SIZE, 3))
    return np.clip(base + rng.integers(-10, 10, size=(n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _detector(name, **kw):
    return create_model(name, pretrained=False, image_size=SIZE, progress=False, **{**MODELS[name], **kw})


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request):
    det = _detector(request.param).fit(_images(12), input_format="rgb_u8_hwc")
    return det


def test_scores_and_maps_shapes_and_dtypes(fitted):
    scores, maps = fitted.score_and_maps(_images(3, seed=1), input_format="rgb_u8_hwc")
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores, maps.reshape(3, -1).max(1), rtol=0, atol=0)


def test_defect_scores_higher_than_normal(fitted):
    normal = _images(2, seed=2)
    defect = normal.copy()
    defect[:, 20:40, 20:40] = (255, 0, 0)
    s_n = fitted.decision_function(normal, input_format="rgb_u8_hwc")
    s_d = fitted.decision_function(defect, input_format="rgb_u8_hwc")
    assert s_d.min() > s_n.max()
    m = fitted.anomaly_maps(defect, input_format="rgb_u8_hwc")[0]
    assert m[25:35, 25:35].mean() > m[:10, :10].mean()


def test_save_load_gives_bit_identical_scores(fitted, tmp_path):
    imgs = _images(3, seed=3)
    calibrate_threshold(fitted, _images(4, seed=4), input_format="rgb_u8_hwc")
    fitted.save(tmp_path / "m")
    assert not list(tmp_path.glob("m/*.pkl")) and (tmp_path / "m" / "state.safetensors").is_file()
    loaded = type(fitted).load(tmp_path / "m")
    a = fitted.score_and_maps(imgs, input_format="rgb_u8_hwc")
    b = loaded.score_and_maps(imgs, input_format="rgb_u8_hwc")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert loaded.threshold == fitted.threshold


def test_patchcore_saved_with_the_older_split_bank_still_loads(tmp_path):
    """Runs written before the augmented-bank layout stored ``bank_t_neg2`` + ``bank_sq``."""
    from safetensors.torch import load_file, save_file

    det = _detector("vision_patchcore").fit(_images(6), input_format="rgb_u8_hwc")
    det.save(tmp_path / "m")
    state = load_file(str(tmp_path / "m" / "state.safetensors"))
    aug = state.pop("scorer.distance.bank_aug")
    state["scorer.distance.bank_t_neg2"], state["scorer.distance.bank_sq"] = aug[:-1].contiguous(), aug[-1].contiguous()
    save_file(state, str(tmp_path / "m" / "state.safetensors"))
    imgs = _images(2, seed=5)
    loaded = type(det).load(tmp_path / "m")
    assert np.array_equal(loaded.decision_function(imgs, input_format="rgb_u8_hwc"), det.decision_function(imgs, input_format="rgb_u8_hwc"))


def test_fit_is_deterministic_under_seed():
    imgs = _images(6)
    a = _detector("vision_patchcore").fit(imgs, input_format="rgb_u8_hwc").decision_function(imgs[:2], input_format="rgb_u8_hwc")
    b = _detector("vision_patchcore").fit(imgs, input_format="rgb_u8_hwc").decision_function(imgs[:2], input_format="rgb_u8_hwc")
    assert np.array_equal(a, b)


def test_paths_arrays_and_bgr_give_identical_scores(fitted, tmp_path):
    imgs = _images(2, seed=5)
    paths = []
    for i, im in enumerate(imgs):
        p = tmp_path / f"img {i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        paths.append(str(p))
    from_paths = fitted.decision_function(paths)
    from_rgb = fitted.decision_function(imgs, input_format="rgb_u8_hwc")
    from_bgr = fitted.decision_function(np.ascontiguousarray(imgs[..., ::-1]), input_format="bgr_u8_hwc")
    from_list = fitted.decision_function(list(imgs), input_format="rgb_u8_hwc")
    assert np.array_equal(from_paths, from_rgb)
    assert np.array_equal(from_bgr, from_rgb)
    assert np.array_equal(from_list, from_rgb)


def test_array_without_format_is_refused(fitted):
    with pytest.raises(ValueError, match="input_format"):
        fitted.decision_function(_images(1))


def test_bad_file_raises_naming_it(fitted, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png"):
        fitted.decision_function([str(bad)])


def test_infer_reports_bad_item_and_goes_on(fitted, tmp_path):
    calibrate_threshold(fitted, _images(4, seed=6), input_format="rgb_u8_hwc")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    good = _images(2, seed=7)
    res = infer(fitted, [good[0], str(empty), good[1]], input_format="rgb_u8_hwc", include_maps=True)
    assert [r.ok for r in res] == [True, False, True]
    assert res[1].score is None and res[1].label is None and res[1].error.stage == "read"
    assert res[0].label in (0, 1) and res[0].threshold == fitted.threshold.value
    assert res[0].anomaly_map.shape == (SIZE, SIZE)


def test_map_postprocess_never_changes_scores(fitted):
    from pyimgano_deploy.postprocess import normalize_map

    imgs = _images(2, seed=8)
    plain = infer(fitted, imgs, input_format="rgb_u8_hwc", include_maps=True)
    normed = infer(fitted, imgs, input_format="rgb_u8_hwc", include_maps=True, postprocess=normalize_map)
    assert [r.score for r in plain] == [r.score for r in normed]
    assert normed[0].anomaly_map.max() <= 1.0


def test_calibration_records_provenance(fitted):
    cal = calibrate_threshold(fitted, _images(5, seed=9), input_format="rgb_u8_hwc", quantile=0.9)
    assert cal.n_images == 5 and cal.quantile == 0.9 and cal.source_split == "calibration"
    assert cal.score_summary["min"] <= cal.value <= cal.score_summary["max"]
    assert "calibrate_threshold" in cal.code_path


def test_unfitted_detector_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        _detector("vision_padim").decision_function(_images(1), input_format="rgb_u8_hwc")


@pytest.mark.parametrize("kwargs,match", [
    ({"coreset_ratio": 0.0}, "coreset_ratio"),
    ({"k": 5000}, "3840"),
    ({"image_size": 8}, "image_size"),
    ({"device": "tpu"}, "device"),
])
def test_bad_hyperparameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("vision_patchcore", pretrained=False, **kwargs)


def test_patchcore_k_and_reweight_variants_score():
    imgs = _images(6)
    for kw in ({"k": 3}, {"reweight": True, "reweight_neighbors": 4}):
        det = _detector("vision_patchcore", **kw).fit(imgs, input_format="rgb_u8_hwc")
        s = det.decision_function(imgs[:2], input_format="rgb_u8_hwc")
        assert s.shape == (2,) and np.all(np.isfinite(s))


def test_padim_memory_is_stated():
    det = _detector("vision_padim").fit(_images(4), input_format="rgb_u8_hwc")
    f = det.fit_summary
    assert det.memory_bytes() == f["positions"] * f["feature_dim"] ** 2 * 4


def test_padim_old_keyword_d_is_an_alias_of_n_channels():
    """Saved runs and users' configs name the channel count ``d``; they keep loading."""
    det = create_model("vision_padim", pretrained=False, image_size=32, d=8, progress=False)
    assert det.params.n_channels == 8 and det.hyperparameters()["n_channels"] == 8 and "d" not in det.hyperparameters()

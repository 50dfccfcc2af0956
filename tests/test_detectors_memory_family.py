"""SPADE, SoftPatch, AnomalyDINO (with the in-project DINOv2) and the calibrated ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyimgano_deploy.models import create_model
from pyimgano_deploy.models.detectors.softpatch.outliers import outlier_scores

SIZE = 64


def _images(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(99).integers(70, 130, size=(1, size, size, 3))
    return np.clip(base + rng.integers(-20, 20, size=(n, size, size, 3)), 0, 255).astype(np.uint8)


def _with_defect(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[:, 20:36, 20:36] = (250, 20, 20)
    return out


# ----------------------------------------------------------------------------- SoftPatch
def test_lof_scores_equal_scikit_learn():
    neighbors = pytest.importorskip("sklearn.neighbors")
    x = np.random.default_rng(0).normal(size=(30, 3, 5)).astype(np.float32)  # 30 images, 3 positions
    ours = outlier_scores(torch.from_numpy(x), "lof", 6).numpy()
    for p in range(3):
        lof = neighbors.LocalOutlierFactor(n_neighbors=6).fit(x[:, p].astype(np.float64))
        np.testing.assert_allclose(ours[:, p], -lof.negative_outlier_factor_, rtol=1e-4)


def test_knn_outlier_score_ranks_the_planted_outlier_first():
    x = np.random.default_rng(1).normal(size=(20, 4, 8)).astype(np.float32)
    x[7, 2] += 25.0
    scores = outlier_scores(torch.from_numpy(x), "knn", 3).numpy()
    assert scores[:, 2].argmax() == 7


def test_softpatch_drops_the_noisiest_patches_and_weights_the_rest():
    det = create_model("vision_softpatch", pretrained=False, image_size=SIZE, progress=False, coreset_ratio=1.0, denoise_ratio=0.25)
    det.fit(_images(8, 0), input_format="rgb_u8_hwc")
    f = det.fit_summary
    assert f["n_dropped"] == 2 * (f["n_patches"] // 8) and f["bank_size"] == f["n_patches"] - f["n_dropped"]
    assert f["weights"]["min"] > 0 and f["weights"]["min"] <= 1.0 <= f["weights"]["max"]


def test_softpatch_forgets_a_defect_planted_among_its_fit_images():
    clean = _images(12, 2)
    dirty = np.concatenate([clean[:11], _with_defect(clean[11:])])
    probe = _with_defect(_images(1, 3))
    kwargs = {"pretrained": False, "image_size": SIZE, "progress": False, "coreset_ratio": 1.0}
    patchcore = create_model("vision_patchcore", **kwargs).fit(dirty, input_format="rgb_u8_hwc")
    softpatch = create_model("vision_softpatch", **kwargs, denoise_ratio=0.1).fit(dirty, input_format="rgb_u8_hwc")
    normal = _images(3, 4)
    margin = {}
    for name, det in (("patchcore", patchcore), ("softpatch", softpatch)):
        s_defect = det.decision_function(probe, input_format="rgb_u8_hwc")[0]
        s_normal = det.decision_function(normal, input_format="rgb_u8_hwc").max()
        margin[name] = s_defect / s_normal
    assert margin["softpatch"] > margin["patchcore"] and margin["softpatch"] > 1.0


def test_softpatch_refuses_patchcore_only_options():
    with pytest.raises(ValueError, match="leave k = 1 and reweight = False"):
        create_model("vision_softpatch", k=3)
    with pytest.raises(ValueError, match="outlier must be one of"):
        create_model("vision_softpatch", outlier="isolation")


# ----------------------------------------------------------------------------- SPADE
def test_spade_image_score_is_the_mean_distance_to_the_k_nearest_images():
    det = create_model("vision_spade", pretrained=False, image_size=SIZE, progress=False, k_images=3)
    fit = _images(6, 5)
    det.fit(fit, input_format="rgb_u8_hwc")
    query = det.preprocess.batch(list(_images(2, 6)))
    module = det.inference_module
    with torch.no_grad():
        _, deep = module.features(torch.from_numpy(query))
        q = deep.mean(dim=(2, 3)).double()
        _, g_deep = module.features(torch.from_numpy(det.preprocess.batch(list(fit))))
        g = g_deep.mean(dim=(2, 3)).double()
    expected = torch.cdist(q, g).topk(3, largest=False).values.mean(1).numpy()
    np.testing.assert_allclose(det.predict_batch(query)[0], expected, rtol=1e-4)


def test_spade_refuses_a_gallery_over_its_cap_before_building_it():
    det = create_model("vision_spade", pretrained=False, image_size=SIZE, progress=False, max_gallery_bytes=1000)
    with pytest.raises(ValueError, match=r"SPADE gallery of 4 fit images would take .* GiB, over max_gallery_bytes"):
        det.fit(_images(4, 7), input_format="rgb_u8_hwc")


def test_spade_image_stage_must_be_deeper_than_the_pixel_stages():
    with pytest.raises(ValueError, match="also a pixel stage"):
        create_model("vision_spade", stages=["s8", "s16"], image_stage="s16")


# ----------------------------------------------------------------------------- DINOv2 / AnomalyDINO
def test_dinov2_state_dict_has_the_official_keys_and_shapes():
    from pyimgano_deploy.models.backbones.dinov2 import DinoV2ViTS14

    state = DinoV2ViTS14().state_dict()
    assert state["pos_embed"].shape == (1, 1370, 384) and state["cls_token"].shape == (1, 1, 384)
    assert state["mask_token"].shape == (1, 384) and state["patch_embed.proj.weight"].shape == (384, 3, 14, 14)
    per_block = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                 "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
                 "mlp.fc2.bias", "ls2.gamma"}
    expected = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                "norm.bias"} | {f"blocks.{i}.{k}" for i in range(12) for k in per_block}
    assert set(state) == expected
    assert state["blocks.3.attn.qkv.weight"].shape == (1152, 384) and state["blocks.11.mlp.fc1.weight"].shape == (1536, 384)
    assert sum(v.numel() for v in state.values()) == 22_056_576


def test_dinov2_weights_load_strictly_from_a_local_file(tmp_path):
    from pyimgano_deploy.models.backbones.dinov2 import DinoV2ViTS14, dinov2_vits14

    torch.manual_seed(3)
    ref = DinoV2ViTS14()
    torch.save(ref.state_dict(), tmp_path / "dinov2_vits14_pretrain.pth")
    loaded = dinov2_vits14(pretrained=str(tmp_path / "dinov2_vits14_pretrain.pth"))
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), loaded.state_dict().values()))
    broken = dict(ref.state_dict())
    broken.pop("norm.bias")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="do not fit dinov2_vits14"):
        dinov2_vits14(pretrained=str(tmp_path / "broken.pth"))


def test_anomalydino_without_a_weights_file_says_where_to_get_it():
    det = create_model("vision_anomalydino", image_size=84, stages=["block1"], progress=False)
    with pytest.raises(RuntimeError, match=r"dl\.fbaipublicfiles\.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain\.pth"):
        det.fit(_images(2, 8, 84), input_format="rgb_u8_hwc")


def test_anomalydino_sizes_must_be_multiples_of_14():
    with pytest.raises(ValueError, match="multiples of 14"):
        create_model("vision_anomalydino", image_size=100)


def test_anomalydino_score_is_the_mean_of_the_top_one_percent_patch_distances():
    det = create_model("vision_anomalydino", pretrained=False, image_size=140, stages=["block1"], progress=False, coreset_ratio=1.0)
    det.fit(_images(4, 9, 140), input_format="rgb_u8_hwc")
    module = det.inference_module
    batch = det.preprocess.batch(list(_images(2, 10, 140)))
    with torch.no_grad():
        patch = module.scorer(module.embed(torch.from_numpy(batch)))  # [B, 10, 10]
    assert module.score_head.k == 1  # 1 % of 100 patches
    np.testing.assert_allclose(det.predict_batch(batch)[0], patch.reshape(2, -1).max(1).values.numpy(), rtol=1e-6)
    assert float(patch.min()) >= 0.0 and float(patch.max()) <= 2.0  # cosine distance range


# ----------------------------------------------------------------------------- ensemble
ENSEMBLE = {"members": [{"name": "vision_patchcore", "kwargs": {"coreset_ratio": 0.5}}, {"name": "vision_padim", "kwargs": {"n_channels": 8}}]}


def _ensemble():
    det = create_model("vision_ensemble", pretrained=False, image_size=SIZE, progress=False, **ENSEMBLE)
    det.fit(_images(10, 11), input_format="rgb_u8_hwc")
    det.calibrate(_images(6, 12), input_format="rgb_u8_hwc")
    return det


def test_ensemble_scores_do_not_depend_on_the_batch_they_come_with():
    det = _ensemble()
    x = det.preprocess.batch(list(_images(4, 13)))
    with_1 = det.predict_batch(x[[0, 1]])[0][0]
    with_outlier = det.predict_batch(np.stack([x[0], 255 - x[3]]))[0][0]  # same batch size, other company
    assert abs(with_1 - with_outlier) <= 1e-5
    alone = np.concatenate([det.predict_batch(x[i : i + 1])[0] for i in range(4)])  # batch size changes GEMM rounding only
    np.testing.assert_allclose(det.predict_batch(x)[0], alone, rtol=0, atol=2e-4)


def test_ensemble_normalisation_comes_from_the_calibration_images_with_provenance():
    det = _ensemble()
    norm = det.fit_summary["normalization"]
    assert norm["source_split"] == "calibration" and norm["n_images"] == 6 and norm["method"] == "quantile"
    cal = det.preprocess.batch(list(_images(6, 12)))
    scores = [m.predict_batch(cal)[0] for m in det.members]
    for stats, s in zip(norm["members"], scores):
        assert stats["score"]["loc"] == pytest.approx(float(np.quantile(s.astype(np.float64), 0.5)), rel=1e-6)
    combined = det.predict_batch(cal)[0]
    expected = np.mean([(s - st["score"]["loc"]) / st["score"]["scale"] for s, st in zip(scores, norm["members"])], axis=0)
    np.testing.assert_allclose(combined, expected, rtol=1e-5, atol=1e-6)


def test_an_uncalibrated_ensemble_refuses_to_score():
    det = create_model("vision_ensemble", pretrained=False, image_size=SIZE, progress=False, **ENSEMBLE)
    det.fit(_images(6, 14), input_format="rgb_u8_hwc")
    with pytest.raises(RuntimeError, match="not calibrated"):
        det.decision_function(_images(1, 15), input_format="rgb_u8_hwc")


@pytest.mark.parametrize("members, message", [
    ([{"name": "vision_patchcore"}], "at least two"),
    ([{"name": "vision_patchcore"}, {"name": "vision_padim", "kwargs": {"image_size": 128}}], "set on the ensemble"),
    ([{"name": "vision_patchcore"}, {"name": "vision_ensemble"}], "cannot be a member"),
    ([{"name": "vision_patchcore"}, {"model": "vision_padim"}], "expected {'name'"),
])
def test_ensemble_members_are_validated(members, message):
    with pytest.raises(ValueError, match=message):
        create_model("vision_ensemble", members=members)

"""Trained detectors' own rules: STFPM's product map, Reverse Distillation's bottleneck and
decoder shapes, DRAEM's simulated anomalies, losses and pooled score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyimgano_deploy.models import create_model
from pyimgano_deploy.models.detectors.draem.anomalies import perlin_mask, perlin_noise, simulate
from pyimgano_deploy.models.detectors.draem.model import focal_loss, ssim

SIZE = 64


def _images(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(8).integers(60, 140, size=(1, size, size, 3))
    return np.clip(base + rng.integers(-15, 15, size=(n, size, size, 3)), 0, 255).astype(np.uint8)


def test_stfpm_map_is_the_product_of_the_upsampled_stage_distances():
    from pyimgano_deploy.models.detectors.stfpm.model import stage_distances

    det = create_model("vision_stfpm", pretrained=False, image_size=SIZE, progress=False, epochs=1, stages=["s4", "s8"], blur_sigma=0.0)
    det.fit(_images(6, 0), input_format="rgb_u8_hwc")
    m = det.inference_module
    x = torch.from_numpy(det.preprocess.batch(list(_images(2, 1))))
    with torch.no_grad():
        d4, d8 = stage_distances(m.teacher(x), m.student(x))
        up = [torch.nn.functional.interpolate(d.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0] for d in (d4, d8)]
    np.testing.assert_allclose(det.predict_batch(x.numpy())[1], (up[0] * up[1]).numpy(), rtol=1e-4, atol=1e-7)


def test_stfpm_teacher_stays_frozen_and_the_student_learns():
    det = create_model("vision_stfpm", pretrained=False, image_size=SIZE, progress=False, epochs=2, stages=["s4", "s8"])
    reference = create_model("vision_stfpm", pretrained=False, image_size=SIZE, progress=False, epochs=2, stages=["s4", "s8"])
    det.fit(_images(6, 2), input_format="rgb_u8_hwc")
    teacher0 = reference._networks(False)[0].state_dict()
    teacher1 = det.inference_module.teacher.state_dict()
    assert all(torch.equal(teacher0[k], teacher1[k]) for k in teacher0)
    student0 = reference._networks(False)[1].state_dict()
    student1 = det.inference_module.student.state_dict()
    assert any(not torch.equal(student0[k], student1[k]) for k in student0 if student0[k].is_floating_point())


def test_reverse_distillation_decoder_mirrors_the_encoder_stages():
    det = create_model("vision_reverse_distillation", pretrained=False, image_size=SIZE, progress=False, epochs=1, bottleneck_channels=16)
    encoder, student = det._networks(False)
    x = torch.from_numpy(det.preprocess.batch(list(_images(2, 3))))
    with torch.no_grad():
        feats = encoder(x)
        embedding = student.bottleneck(feats)
        decoded = student.decoder(embedding)
    assert [tuple(f.shape) for f in feats] == [tuple(d.shape) for d in decoded]
    assert embedding.shape[-1] == feats[-1].shape[-1] // 2  # one-class embedding at twice the deepest stride


def test_reverse_distillation_refuses_sizes_the_decoder_cannot_mirror():
    det = create_model("vision_reverse_distillation", pretrained=False, image_size=48, progress=False)
    with pytest.raises(ValueError, match="multiples of 32"):
        det.fit(_images(2, 4, 48), input_format="rgb_u8_hwc")


def test_perlin_noise_is_smooth_and_seeded():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = perlin_noise(64, 64, (4, 4), g1), perlin_noise(64, 64, (4, 4), g2)
    assert torch.equal(a, b) and float(a.abs().max()) <= 1.5
    assert float((a[1:] - a[:-1]).abs().max()) < 0.3  # neighbouring pixels differ little
    mask = perlin_mask(64, 64, torch.Generator().manual_seed(3))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_simulated_anomalies_change_only_the_masked_pixels():
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    textures = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    out, masks = simulate(images, textures, torch.Generator().manual_seed(5), p_anomaly=1.0)
    assert masks.shape == (8, 1, 32, 32)
    unchanged = (masks == 0).expand_as(images)
    assert torch.equal(out[unchanged], images[unchanged])
    assert float(masks.sum()) > 0 and not torch.equal(out, images)


def test_ssim_and_focal_loss_behave():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5) and float(ssim(x, 1 - x)) < 0.5
    mask = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    good = torch.cat([(1 - mask) * 8, mask * 8], dim=1)
    assert float(focal_loss(good, mask)) < 1e-4 < float(focal_loss(-good, mask))


def test_draem_score_is_the_maximum_of_the_pooled_map():
    det = create_model("vision_draem", image_size=SIZE, progress=False, epochs=1, reconstruction_width=4, segmentation_width=4, score_pool=5)
    det.fit(_images(6, 6), input_format="rgb_u8_hwc")
    scores, maps = det.predict_batch(det.preprocess.batch(list(_images(2, 7))))
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(maps).unsqueeze(1), 5, stride=1, padding=2)
    np.testing.assert_allclose(scores, pooled.flatten(1).amax(1).numpy(), rtol=1e-6)
    assert 0.0 <= maps.min() and maps.max() <= 1.0


def test_draem_takes_textures_from_a_folder(tmp_path):
    import cv2

    for i, img in enumerate(_images(3, 9)):
        cv2.imwrite(str(tmp_path / f"t{i}.png"), img[:, :, ::-1])
    det = create_model("vision_draem", image_size=SIZE, progress=False, epochs=1, reconstruction_width=4,
                       segmentation_width=4, texture_dir=str(tmp_path))
    det.fit(_images(4, 10), input_format="rgb_u8_hwc")
    empty = tmp_path / "empty"
    empty.mkdir()
    det2 = create_model("vision_draem", image_size=SIZE, progress=False, epochs=1, reconstruction_width=4,
                        segmentation_width=4, texture_dir=str(empty))
    with pytest.raises(ValueError, match="found none"):
        det2.fit(_images(4, 10), input_format="rgb_u8_hwc")

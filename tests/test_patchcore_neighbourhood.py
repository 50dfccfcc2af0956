"""PatchCore's local aggregation neighbourhood (the paper's p): validation, the embedding it
builds, the hyperparameter it records, and export parity with no aggregation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyimgano_deploy.models.detectors.layers import PatchEmbedding


def _features() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 3, 4, 4, generator=g)]


def _expected(feats: list[torch.Tensor], p: int) -> torch.Tensor:
    parts = []
    for i, f in enumerate(feats):
        if p > 1:
            f = F.avg_pool2d(f, p, stride=1, padding=p // 2, count_include_pad=True)
        if i:
            f = F.interpolate(f, size=(8, 8), mode="bilinear", align_corners=False)
        parts.append(f)
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("p", [1, 3, 5])
def test_embedding_averages_each_stage_over_its_neighbourhood(p: int) -> None:
    feats = _features()
    got = PatchEmbedding([4, 3], [8, 16], (8, 8), neighbourhood=p)(feats)
    assert torch.allclose(got, _expected(feats, p), atol=1e-6)


def test_neighbourhood_one_leaves_the_finest_stage_as_the_backbone_gives_it() -> None:
    feats = _features()
    got = PatchEmbedding([4, 3], [8, 16], (8, 8), neighbourhood=1)(feats)
    assert torch.equal(got[:, :4], feats[0])


@pytest.mark.parametrize("bad", [0, 2, -1])
def test_an_even_or_non_positive_neighbourhood_is_refused_with_the_rule(bad: int) -> None:
    from pyimgano_deploy.models import create_model

    with pytest.raises(ValueError, match="neighbourhood must be an odd number >= 1"):
        create_model("vision_patchcore", pretrained=False, image_size=32, progress=False, neighbourhood=bad)


def test_the_neighbourhood_is_recorded_with_the_hyperparameters() -> None:
    from pyimgano_deploy.models import create_model

    det = create_model("vision_softpatch", pretrained=False, image_size=32, progress=False, neighbourhood=1)
    assert det.params.hyperparameters()["neighbourhood"] == 1
    assert create_model("vision_patchcore", pretrained=False, image_size=32, progress=False).params.neighbourhood == 3


def test_patchcore_without_aggregation_exports_with_parity(tmp_path) -> None:
    from pyimgano_deploy.exporters.onnx_export import export_module, onnx_outputs
    from pyimgano_deploy.models import create_model

    rng = np.random.default_rng(0)
    base = rng.integers(70, 130, size=(1, 48, 48, 3))
    images = np.clip(base + rng.integers(-25, 25, size=(12, 48, 48, 3)), 0, 255).astype(np.uint8)
    det = create_model("vision_patchcore", pretrained=False, image_size=48, progress=False, neighbourhood=1)
    det.fit(images[:9], input_format="rgb_u8_hwc")
    batch = det.preprocess.batch(list(images[9:]))
    eager, eager_maps = det.predict_batch(batch)
    export_module(det.inference_module, batch[:2], tmp_path / "m.onnx")
    exported, exported_maps = onnx_outputs(tmp_path / "m.onnx", batch)
    assert np.allclose(exported, eager, rtol=1e-4, atol=1e-5)
    assert np.allclose(exported_maps, eager_maps, rtol=1e-4, atol=1e-5)

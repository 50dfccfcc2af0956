"""PatchCore's local aggregation neighbourhood (the paper's p): validation, the embedding it
builds, the hyperparameter it records, and export parity with no aggregation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from export_parity import eager_and_exported

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
    (eager, eager_maps), (exported, exported_maps) = eager_and_exported("vision_patchcore", tmp_path, n_fit=9, n_test=3, neighbourhood=1)
    assert np.allclose(exported, eager, rtol=1e-4, atol=1e-5)
    assert np.allclose(exported_maps, eager_maps, rtol=1e-4, atol=1e-5)

"""``image_score="mean"`` for map-scored detectors: the score is the map's mean, in eager and export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyimgano_deploy.models import create_model


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 48, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, kw", [("vision_padim", {"d": 8}), ("vision_patchcore", {"coreset_ratio": 0.3})])
def test_mean_image_score_is_the_mean_of_the_map(name: str, kw: dict) -> None:
    det = create_model(name, pretrained=False, image_size=48, progress=False, image_score="mean", **kw)
    det.fit(_images(4, 0), input_format="rgb_u8_hwc")
    scores, maps = det.predict_batch(det.preprocess.batch(list(_images(3, 1))))
    np.testing.assert_allclose(scores, maps.reshape(3, -1).mean(axis=1), rtol=1e-5)


def test_mean_is_refused_with_patchcore_reweighting_and_unknown_reductions_too() -> None:
    with pytest.raises(ValueError, match="reweight re-weights the map maximum"):
        create_model("vision_patchcore", pretrained=False, reweight=True, image_score="mean")
    with pytest.raises(ValueError, match="image_score must be one of"):
        create_model("vision_padim", pretrained=False, image_score="median")


def test_mean_score_exports_with_parity_and_survives_save_load(tmp_path: Path) -> None:
    from pyimgano_deploy.bundles import read_bundle
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
    from pyimgano_deploy.models.detectors.base import Detector
    from run_factory import make_run_dir

    run = make_run_dir(tmp_path, "vision_padim", size=48, d=8, image_score="mean")
    assert Detector.load(run / "model").params.image_score == "mean"
    export_run(run, tmp_path / "b", ExportOptions(golden=4), log=lambda m: None)
    assert read_bundle(tmp_path / "b").manifest["parity"]["fp32"]["labels_identical"]

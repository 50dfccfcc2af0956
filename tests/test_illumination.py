"""Opt-in per-image illumination standardisation: in the graph, so fit and runtime agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pyimgano_deploy.models import create_model
from pyimgano_deploy.models.backbones import create_feature_extractor


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, size=(1, 8, 8, 3)).astype(np.float64)
    return np.kron(base, np.ones((1, 8, 8, 1)))  # blocky, so a darker copy keeps its structure


def test_standardize_makes_features_ignore_a_global_darkening() -> None:
    bright = _image()
    dark = bright * 0.5
    out = {}
    for mode in ("none", "standardize"):
        torch.manual_seed(0)
        ext = create_feature_extractor("efficientnet_lite0", stages=("s8",), illumination=mode)
        a, b = (ext(torch.from_numpy(np.round(x).astype(np.uint8)))[0] for x in (bright, dark))
        out[mode] = float((a - b).norm() / a.norm())
    assert out["standardize"] < 0.05 < out["none"]


def test_standardized_padim_exports_with_parity(tmp_path: Path) -> None:
    from pyimgano_deploy.bundles import read_bundle
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
    from run_factory import make_run_dir

    run = make_run_dir(tmp_path, "vision_padim", size=48, d=8, illumination="standardize")
    export_run(run, tmp_path / "b", ExportOptions(golden=4), log=lambda m: None)
    b = read_bundle(tmp_path / "b")
    assert b.manifest["model"]["parameters"]["illumination"] == "standardize"
    assert b.manifest["parity"]["fp32"]["labels_identical"]


def test_an_unknown_illumination_is_refused() -> None:
    with pytest.raises(ValueError, match="illumination must be one of"):
        create_model("vision_padim", pretrained=False, illumination="clahe")

"""Opt-in per-image illumination: standardisation in the graph, CLAHE in the preprocessing step;
either way fit, eager scoring and the runtime agree."""

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
        create_model("vision_padim", pretrained=False, illumination="histogram")


@pytest.fixture(scope="module")
def clahe_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run dir, bundle dir) of a CLAHE PaDiM: 64 px files scored at 48 px."""
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
    from run_factory import make_run_dir

    root = tmp_path_factory.mktemp("clahe")
    run = make_run_dir(root, "vision_padim", size=64, image_size=48, d=8, illumination="clahe")
    return run, export_run(run, root / "b", ExportOptions(golden=4), log=lambda m: None).bundle_dir


def test_clahe_is_a_preprocessing_step_of_the_detector() -> None:
    det = create_model("vision_padim", pretrained=False, image_size=48, illumination="clahe")
    assert det.preprocess.contrast == "clahe"
    assert create_model("vision_padim", pretrained=False, image_size=48).preprocess.contrast == "none"


def test_a_clahe_bundle_carries_it_and_scores_files_like_the_eager_detector(clahe_bundle: tuple[Path, Path]) -> None:
    import json

    from pyimgano_deploy.bundles import read_bundle
    from pyimgano_deploy.models.detectors.base import Detector
    from pyimgano_deploy.runtimes import load_bundle

    run, bundle = clahe_bundle
    assert read_bundle(bundle).manifest["input"]["preprocess"]["contrast"] == "clahe"
    files = [json.loads(line)["input"] for line in (run / "per_image.jsonl").read_text().splitlines()]
    eager = Detector.load(run / "model").decision_function(files)
    with load_bundle(bundle) as rt:
        exported = np.array([r.score for r in rt.infer(files)])
    np.testing.assert_allclose(exported, eager, rtol=1e-4, atol=1e-4)


def test_a_bundle_stripped_of_its_clahe_step_fails_validate(clahe_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    from bundle_factory import rewrite_manifest
    from cli_helpers import run_cli

    copy = tmp_path / "b"
    shutil.copytree(clahe_bundle[1], copy)
    rewrite_manifest(copy, lambda m: m["input"]["preprocess"].pop("contrast"))
    code, out, _ = run_cli("validate", str(copy))
    assert code == 6, out

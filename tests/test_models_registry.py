import subprocess
import sys
from pathlib import Path

import pytest

from pyimgano_deploy.models import detectors
from pyimgano_deploy.models import create_model, list_models, model_info, register_model


def test_builtin_models_discovered_from_their_folders_with_tags():
    folders = sorted(p.parent.name for p in (Path(detectors.__file__).parent).glob("*/spec.py"))
    assert list_models() == sorted(f"vision_{f}" for f in folders)
    assert {"vision_patchcore", "vision_padim", "vision_spade", "vision_softpatch", "vision_anomalydino", "vision_ensemble"} <= set(list_models())
    assert list_models(tags=["memory_bank", "noise_robust"]) == ["vision_softpatch"]
    assert list_models(tags=["gaussian", "pixel_map"]) == ["vision_padim"]


def test_unknown_tag_is_refused():
    with pytest.raises(ValueError, match="known tags"):
        list_models(tags=["quantum"])


def test_unknown_model_lists_valid_names():
    with pytest.raises(KeyError, match="vision_patchcore"):
        create_model("vision_patchcor")


def test_unknown_kwarg_lists_valid_ones():
    with pytest.raises(TypeError, match="coreset_ratio"):
        create_model("vision_patchcore", coreset_rato=0.1)


def test_model_info_states_memory_and_parameters():
    info = model_info("vision_padim")
    assert "positions × n_channels × n_channels × 4 bytes" in info["metadata"]["memory"]
    assert info["parameters"]["n_channels"] == 100 and info["parameters"]["d"] is None  # d: the old name, an alias
    assert "onnx" in info["tags"]


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("vision_padim", target="x:y")


def test_listing_does_not_import_torch():
    code = ("import sys; from pyimgano_deploy.models import list_models, model_info; "
            "[model_info(n) for n in list_models()]; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

import subprocess
import sys

import pytest

from pyimgano_deploy.models import create_model, list_models, model_info, register_model


def test_builtin_models_listed_with_tags():
    assert list_models() == ["vision_padim", "vision_patchcore"]
    assert list_models(tags=["memory_bank"]) == ["vision_patchcore"]
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
    code = "import sys; from pyimgano_deploy.models import list_models, KNOWN_TAGS; list_models(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

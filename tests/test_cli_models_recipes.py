"""`pyimgano-deploy models` and `pyimgano-deploy recipes` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from pyimgano_deploy.cli import main


def _run(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


def test_models_list_and_tag_filter() -> None:
    result = _run("models")
    assert result.exit_code == 0 and "vision_patchcore" in result.stdout and "vision_padim" in result.stdout
    data = json.loads(_run("models", "--tags", "numpy,noise_robust", "--json").stdout)
    assert [m["name"] for m in data["models"]] == ["vision_softpatch"]
    assert "memory" in data["models"][0] and "pixel_map" in data["models"][0]["tags"]
    bad = _run("models", "--tags", "nope")
    assert bad.exit_code == 2 and "known tags" in bad.stderr


def test_models_info() -> None:
    text = _run("models", "info", "vision_patchcore")
    assert text.exit_code == 0 and "memory:" in text.stdout and "coreset_ratio" in text.stdout
    data = json.loads(_run("models", "info", "vision_padim", "--json").stdout)
    assert data["parameters"]["n_channels"] == 100 and "memory" in data["metadata"] and "gaussian" in data["tags"]
    bad = _run("models", "info", "nope")
    assert bad.exit_code == 2 and "registered models" in bad.stderr


def test_models_listing_does_not_import_torch() -> None:
    code = ("import sys; from click.testing import CliRunner; from pyimgano_deploy.cli import main; "
            "r = CliRunner().invoke(main, ['models']); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_recipes_list_and_info() -> None:
    result = _run("recipes")
    assert result.exit_code == 0
    for name in ("industrial-adapt", "industrial-adapt-highres", "industrial-adapt-fp40"):
        assert name in result.stdout
    info = _run("recipes", "info", "industrial-adapt-highres")
    assert info.exit_code == 0 and "steps:" in info.stdout and '"tile": 512' in info.stdout
    data = json.loads(_run("recipes", "info", "industrial-adapt-fp40", "--json").stdout)
    assert data["defaults"]["defects"]["min_area"] == 16 and data["defaults"]["calibration"]["fraction"] == 0.2
    bad = _run("recipes", "info", "nope")
    assert bad.exit_code == 2 and "known recipes" in bad.stderr

"""Scale-out without its extras: clear errors naming the install command (no Ray needed)."""

from __future__ import annotations

import builtins
from pathlib import Path

import cv2
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import run_cli

from pyimgano_deploy.scale import extras


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_ray_names_the_install_command(no_ray: None) -> None:
    with pytest.raises(extras.MissingExtraError, match=r"pip install 'pyimgano-deploy\[ray\]'"):
        extras.require_ray()


def test_infer_with_ray_address_but_no_ray_exits_5_with_the_install_command(no_ray: None, tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "b")
    image = tmp_path / "a.png"
    assert cv2.imwrite(str(image), random_images(1, 32, 40)[0])
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(image), "--save-jsonl", str(tmp_path / "o.jsonl"),
                           "--ray-address", "local")
    assert code == 5 and "pip install 'pyimgano-deploy[ray]'" in err
    assert not (tmp_path / "o.jsonl").exists()

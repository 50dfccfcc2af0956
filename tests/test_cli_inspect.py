"""`pyimgano-deploy inspect`: a verified bundle described on one page, without an engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_factory import build_tiny_bundle
from cli_helpers import run_cli
from run_factory import make_run_dir


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    root = tmp_path_factory.mktemp("inspect")
    run = make_run_dir(root, "vision_patchcore", size=32, n_train=4, n_calib=3)
    return export_run(run, root / "bundle", ExportOptions(golden=2), log=lambda m: None).bundle_dir


def test_json_summary_is_the_manifest_s_facts(exported: Path) -> None:
    code, out, err = run_cli("inspect", str(exported), "--json")
    assert code == 0, err
    d = json.loads(out)
    manifest = json.loads((exported / "bundle.json").read_text())
    assert d["digest"].startswith("sha256:") and d["signed"] is False
    assert d["model"]["name"] == "vision_patchcore" and d["model"]["bank_size"] == manifest["model"]["fitted"]["bank_size"]
    assert d["input"]["trained_colour"] == "colour" and (d["input"]["height"], d["input"]["width"]) == (32, 32)
    assert d["thresholds"]["image"]["value"] == manifest["thresholds"]["image"]["value"]
    assert d["thresholds"]["image"]["source_split"] == "calibration"
    assert d["engines"][0]["bytes"] == (exported / "model.onnx").stat().st_size
    assert d["parity"]["fp32"]["labels_identical"] is True


def test_text_summary_names_what_an_integrator_checks(exported: Path) -> None:
    code, out, err = run_cli("inspect", str(exported))
    assert code == 0, err
    for label in ("digest:", "model:", "trained on:", "engine:", "image threshold:", "parity:", "exported on:"):
        assert label in out
    assert "colour images" in out and "vision_patchcore" in out


def test_an_older_bundle_says_what_it_does_not_record(tmp_path: Path) -> None:
    code, out, err = run_cli("inspect", str(build_tiny_bundle(tmp_path / "b")))
    assert code == 0, err
    assert "not recorded (a bundle from before schema 1.5)" in out and "pixel threshold:  none" in out


def test_a_tampered_bundle_is_refused_with_the_checksum_code(tmp_path: Path) -> None:
    root = build_tiny_bundle(tmp_path / "b")
    data = bytearray((root / "model.onnx").read_bytes())
    data[-1] ^= 1
    (root / "model.onnx").write_bytes(bytes(data))
    code, out, err = run_cli("inspect", str(root), "--json")
    assert code == 4 and json.loads(out)["ok"] is False and "model.onnx: sha256 mismatch" in err


def test_inspect_never_imports_torch(exported: Path) -> None:
    probe = ("import sys; from click.testing import CliRunner; from pyimgano_deploy.cli import main; "
             f"r = CliRunner().invoke(main, ['inspect', {str(exported)!r}]); "
             "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", probe], check=True)

"""Real images, pretrained EfficientNet-Lite0: train -> export (fp32 + fp16) -> infer -> validate
through the real CLI on ../shared/data/hazelnut_toy, with the accuracy targets of the issues."""

import json

import pytest
from click.testing import CliRunner

from pyimgano_deploy.cli import main

pytestmark = pytest.mark.pretrained


def _train(root, out, model):
    r = CliRunner().invoke(main, ["train", "--dataset", "mvtec", "--root", str(root), "--model", model, "--out", str(out), "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads((out / "report.json").read_text())["metrics"]


def test_patchcore_pipeline_on_hazelnut(hazelnut_root, tmp_path):
    metrics = _train(hazelnut_root, tmp_path / "run", "vision_patchcore")
    assert metrics["image"]["auroc"] >= 0.98
    assert metrics["pixel"]["auroc"] >= 0.95
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    r = runner.invoke(main, ["export", "--run", str(tmp_path / "run"), "--out", str(bundle), "--precision", "fp16", "--json"])
    assert r.exit_code == 0, r.output
    parity = json.loads(r.stdout)["parity"]
    assert parity["fp32"]["labels_identical"] and parity["fp16"]["labels_identical"]
    assert parity["fp32"]["max_abs_score"] <= parity["fp32"]["tolerance"]["score_abs"]
    out = tmp_path / "out.jsonl"
    r = runner.invoke(main, ["infer", "--bundle", str(bundle), "--input", str(hazelnut_root / "test"), "--save-jsonl", str(out), "--json"])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    labels = {rec["input"]: rec["label"] for rec in recs}
    assert len(recs) == 23
    assert sum(v for k, v in labels.items() if "/colour/" in k) >= 16  # defects flagged
    assert sum(v for k, v in labels.items() if "/good/" in k) <= 1  # at most one false alarm
    r = runner.invoke(main, ["validate", str(bundle), "--json"])
    assert r.exit_code == 0, r.output


def test_padim_image_auroc_on_hazelnut(hazelnut_root, tmp_path):
    metrics = _train(hazelnut_root, tmp_path / "run", "vision_padim")
    assert metrics["image"]["auroc"] >= 0.95

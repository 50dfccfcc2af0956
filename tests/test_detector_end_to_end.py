"""Every registered detector through the real CLI: train → export → infer → validate.

The torch-free runtime must give the run's eager labels and scores (per_image.jsonl) on the
test images; validate must pass the bundle.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyimgano_deploy.models import list_models, model_entry
from tests.cli_helpers import jsonl_records, run_cli

SYNTHETIC = ("--set", "dataset.size=64", "--set", "dataset.n_train=14", "--set", "dataset.n_test=8")


@pytest.mark.parametrize("name", list_models())
def test_train_export_infer_validate_gives_the_eager_labels(name, tmp_path: Path) -> None:
    kwargs = {"pretrained": False, "image_size": 64, **model_entry(name).small_kwargs}
    run, bundle, out = tmp_path / "run", tmp_path / "bundle", tmp_path / "out.jsonl"
    code, _, err = run_cli("train", "--dataset", "synthetic", "--model", name, "--out", str(run), *SYNTHETIC,
                           "--model-kwargs", json.dumps(kwargs), "--no-progress")
    assert code == 0, err
    code, _, err = run_cli("export", "--run", str(run), "--out", str(bundle))
    assert code == 0, err
    eager = {r["input"]: r for r in jsonl_records(run / "per_image.jsonl") if r["split"] == "test"}
    test_dir = next(iter(eager)).rsplit("/test/", 1)[0] + "/test"
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", test_dir, "--save-jsonl", str(out))
    assert code == 0, err
    got = {r["input"]: r for r in jsonl_records(out) if r.get("status") == "ok"}
    assert set(got) == set(eager)
    for path, rec in got.items():
        assert rec["label"] == eager[path]["label"], path
        assert abs(rec["score"] - eager[path]["score"]) <= 1e-4 * max(1.0, abs(eager[path]["score"])), path
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["model"]["name"] == name and manifest["model"]["fp32_scopes"]
    code, _, err = run_cli("validate", str(bundle))
    assert code == 0, err

"""The README's demo: train -> export -> infer -> inspect -> validate through the real commands."""

import json

from click.testing import CliRunner

from pyimgano_deploy.cli import main


def test_demo_runs_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--random-init", "--size", "64"])
    assert r.exit_code == 0, r.output
    for rel in ["run/report.json", "run/report.html", "run/model/state.safetensors", "bundle/bundle.json", "bundle/model.onnx", "results.jsonl"]:
        assert (out / rel).is_file(), rel
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 20 and all(rec["status"] == "ok" for rec in records)
    assert "result: OK" in r.output and "trained on:       colour images" in r.output  # the inspect step

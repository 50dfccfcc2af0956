"""``pyimgano-deploy compare``: two results files side by side, with gates (exit 6)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import run_cli

from pyimgano_deploy.runtimes.results_compare import CompareGates, rank_correlation

DIGEST = "sha256:" + "ab" * 32


def rec(i: int, score: float | None, *, label: int | None = None, threshold: float = 1.0, digest: str = DIGEST,
        name: str | None = None, sha: str | None = "", status: str = "ok", bundle: str = DIGEST) -> dict[str, Any]:
    """A JSONL 1.2 record of image ``i`` (``sha`` "" gives the image's own digest, None none)."""
    name = name or f"/imgs/{i:03d}.png"
    r: dict[str, Any] = {"schema_version": "1.2", "index": i, "input": name, "status": status, "score": score,
                         "label": label if label is not None or score is None else int(score >= threshold),
                         "threshold": threshold, "resolved": name, "bundle_digest": bundle}
    if sha is not None:
        r["source"] = {"sha256": sha or f"{i:064x}", "size_bytes": 100}
    if status != "ok":
        r["error"] = {"type": "ImageDecodeError", "message": f"cannot read image {name!r}: truncated", "stage": "decode"}
    return r


def write(path: Path, records: list[dict[str, Any]], tail: str = "") -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return str(path)


def compare(*args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = run_cli("compare", *args, "--json")
    return code, json.loads(out), err


def test_a_file_against_itself_agrees_everywhere(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(i, 0.5 + 0.1 * i) for i in range(10)])
    code, r, _ = compare(a, a, "--same-inputs", "--min-label-agreement", "1", "--max-score-delta", "0")
    assert code == 0 and r["ok"] and r["matched"] == 10 and r["same_bundle"]
    assert r["labels"]["agreement"] == 1.0 and r["scores"]["identical"] == 10 and r["scores"]["rank_correlation"] == pytest.approx(1.0)


def test_flips_are_counted_by_direction_and_listed(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.9), rec(1, 1.1), rec(2, 0.2), rec(3, 2.0)])
    b = write(tmp_path / "b.jsonl", [rec(0, 1.05), rec(1, 0.95), rec(2, 0.3), rec(3, 2.0)])
    code, r, _ = compare(a, b)
    assert code == 0  # no gate: a report only
    assert r["labels"] == {"compared": 4, "agree": 2, "agreement": 0.5, "normal_to_anomalous": 1, "anomalous_to_normal": 1}
    assert [(f["input"], f["label_a"], f["label_b"]) for f in r["flips_first"]] == [("/imgs/000.png", 0, 1), ("/imgs/001.png", 1, 0)]


def test_label_agreement_below_the_gate_is_exit_6_with_the_numbers(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(i, 0.5) for i in range(9)] + [rec(9, 0.9)])
    b = write(tmp_path / "b.jsonl", [rec(i, 0.5) for i in range(9)] + [rec(9, 1.2)])
    code, r, _ = compare(a, b, "--min-label-agreement", "0.95")
    assert code == 6 and not r["ok"]
    assert r["failed_gates"] == ["label agreement 0.9000 (9 of 10) is below 0.95"]


def test_score_delta_gates_absolute_and_relative_to_a_s_threshold(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.50, threshold=2.0), rec(1, 0.70, threshold=2.0)])
    b = write(tmp_path / "b.jsonl", [rec(0, 0.50, threshold=2.0), rec(1, 0.76, threshold=2.0)])
    code, r, _ = compare(a, b, "--max-score-delta", "0.1", "--max-relative-delta", "0.02")
    assert r["scores"]["max_abs_delta"] == pytest.approx(0.06) and r["scores"]["max_relative_delta"] == pytest.approx(0.03)
    assert code == 6 and len(r["failed_gates"]) == 1 and r["failed_gates"][0].startswith("max relative delta")
    assert r["scores"]["largest_deltas"][0]["input"] == "/imgs/001.png"


def test_an_input_missing_from_b_fails_same_inputs(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(i, 0.5) for i in range(3)])
    b = write(tmp_path / "b.jsonl", [rec(i, 0.5) for i in range(2)])
    assert compare(a, b)[0] == 0
    code, r, _ = compare(a, b, "--same-inputs")
    assert code == 6 and r["only_in_a"] == 1 and r["only_in_a_first"] == ["/imgs/002.png"]
    assert r["failed_gates"] == ["same inputs: 1 only in A"]


def test_an_input_scored_in_a_and_failed_in_b_is_a_status_change(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5), rec(1, 0.5)])
    b = write(tmp_path / "b.jsonl", [rec(0, 0.5), rec(1, None, status="error")])
    code, r, _ = compare(a, b, "--same-inputs")
    assert code == 6 and r["status"] == {"ok_in_both": 1, "ok_to_error": 1, "error_to_ok": 0, "error_in_both": 0}
    assert "truncated" in r["status_changes_first"][0]["error_b"]


def test_sha256_pairs_the_same_image_under_another_path(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5, name="/line/cam1/0001.png")])
    b = write(tmp_path / "b.jsonl", [rec(0, 0.5, name="/mnt/copy/0001.png")])
    assert compare(a, b)[1]["matched"] == 1
    code, r, _ = compare(a, b, "--match", "resolved", "--same-inputs")
    assert code == 6 and r["matched"] == 0 and r["only_in_b_first"] == ["/mnt/copy/0001.png"]


def test_records_without_a_digest_name_the_option_to_use(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5, sha=None)])
    code, r, err = compare(a, a)
    assert code == 2 and not r["ok"]
    assert "has a 'sha256' key" in err and "--match resolved" in err
    assert compare(a, a, "--match", "resolved")[0] == 0


def test_a_record_without_a_key_is_counted_and_fails_same_inputs(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5), rec(1, None, status="error", sha=None)])
    code, r, _ = compare(a, a, "--same-inputs")
    assert r["a"]["unkeyed"] == 1 and r["a"]["unkeyed_first"] == ["/imgs/001.png"]
    assert code == 6 and r["failed_gates"] == ["same inputs: 2 without a sha256 key"]


def test_a_torn_last_line_is_left_out_and_reported(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5), rec(1, 0.5)], tail='{"schema_version": "1.2", "ind')
    code, r, _ = compare(a, a)
    assert code == 0 and r["a"]["torn_tail"] and r["a"]["records"] == 2


def test_a_malformed_line_is_a_usage_error_naming_file_and_line(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5)], tail="not json\n")
    code, _, err = compare(a, a)
    assert code == 2 and "a.jsonl: line 2 is not valid JSON" in err


def test_an_infer_summary_or_parquet_file_is_refused_with_what_compare_reads(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5)])
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"ok": True, "images": 1}, indent=2))
    parquet = tmp_path / "r.parquet"
    parquet.write_bytes(b"PAR1" + bytes(20))
    not_records = write(tmp_path / "x.jsonl", [{"ok": True}])
    for other in (summary, parquet, not_records):
        code, _, err = compare(a, str(other))
        assert code == 2 and "compare reads infer's JSONL results (--save-jsonl" in err, other


def test_an_empty_results_file_is_an_empty_run(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5)])
    empty = write(tmp_path / "e.jsonl", [])
    code, r, _ = compare(a, empty)
    assert code == 0 and r["b"]["records"] == 0 and r["only_in_a"] == 1
    assert compare(a, empty, "--same-inputs")[0] == 6


def test_duplicate_records_keep_the_first(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5), rec(0, 0.9)])
    b = write(tmp_path / "b.jsonl", [rec(0, 0.5)])
    code, r, _ = compare(a, b, "--max-score-delta", "0")
    assert code == 0 and r["a"]["duplicates"] == 1


def test_gate_values_outside_their_range_are_usage_errors(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.5)])
    assert run_cli("compare", a, a, "--min-label-agreement", "1.5")[0] == 2
    assert run_cli("compare", a, a, "--max-score-delta", "-1")[0] == 2
    with pytest.raises(ValueError, match="finite number"):
        CompareGates(max_relative_delta=float("nan"))


def test_rank_correlation_gives_ties_their_mean_rank() -> None:
    assert rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # ranks [1, 2.5, 2.5] against [1, 2, 3]: Pearson of the ranks
    assert rank_correlation(np.array([0.0, 5.0, 5.0]), np.array([0.0, 1.0, 2.0])) == pytest.approx(np.sqrt(3) / 2)
    assert rank_correlation(np.array([1.0, 1.0]), np.array([1.0, 2.0])) is None


def test_text_report_names_the_flips_and_the_verdict(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", [rec(0, 0.9), rec(1, 0.5)])
    b = write(tmp_path / "b.jsonl", [rec(0, 1.1, bundle="sha256:" + "cd" * 32), rec(1, 0.5, bundle="sha256:" + "cd" * 32)])
    code, out, _ = run_cli("compare", a, b, "--min-label-agreement", "0.99")
    assert code == 6
    assert "(bundles differ)" in out and "labels: 1 of 2 agree (50.00 %)" in out and "thresholds differ" not in out
    assert "/imgs/000.png: 0.9 (threshold 1, normal) → 1.1 (threshold 1, anomalous)" in out
    c = write(tmp_path / "c.jsonl", [rec(0, 9.0, threshold=8.0), rec(1, 5.0, threshold=8.0)])
    assert "the thresholds differ, so may the score units" in run_cli("compare", a, c)[1]
    assert out.rstrip().endswith("result: FAILED (exit 6)")


@pytest.fixture()
def two_runs(tmp_path: Path) -> tuple[str, str]:
    """A real bundle's results on a folder, and on a copy of it with one image gone and one truncated."""
    bundle = build_tiny_bundle(tmp_path / "b")
    src = tmp_path / "imgs"
    src.mkdir()
    for i, image in enumerate(random_images(6, 40, 48, seed=3)):
        cv2.imwrite(str(src / f"{i}.png"), image)
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    (copy / "0.png").unlink()
    (copy / "1.png").write_bytes((src / "1.png").read_bytes()[:60])
    for folder, out in ((src, "a.jsonl"), (copy, "b.jsonl")):
        code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(folder), "--save-jsonl", str(tmp_path / out),
                               "--max-errors", "1")
        assert code == 0, err
    return str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")


def test_real_runs_pair_by_content_and_by_path(two_runs: tuple[str, str]) -> None:
    a, b = two_runs
    code, r, _ = compare(a, b, "--max-score-delta", "0")
    assert code == 0 and r["same_bundle"] and r["matched"] == 4 and r["scores"]["identical"] == 4
    assert r["only_in_a"] == 2 and r["only_in_b"] == 1  # the truncated copy has other bytes
    code, r, _ = compare(a, b, "--match", "input", "--same-inputs")
    assert code == 6 and r["matched"] == 0  # infer names the images by their folder


def test_compare_never_imports_torch(two_runs: tuple[str, str]) -> None:
    a, b = two_runs
    probe = ("import sys; from click.testing import CliRunner; from pyimgano_deploy.cli import main; "
             f"r = CliRunner().invoke(main, ['compare', {a!r}, {b!r}]); "
             "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", probe], check=True)

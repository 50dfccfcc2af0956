"""Smoke test: each benchmark script runs in ``--quick`` mode and prints one JSON document
with the documented keys. No timing is asserted here (benchmarks/ scripts report numbers)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

EXPECTED = {
    "bench_fit.py": {"fit_s", "feature_s", "coreset_s", "n_patches", "bank_size", "peak_rss_mb", "threads", "coreset", "reference", "memory"},
    "bench_export.py": {"models", "threads", "image_size"},
    "bench_runtime.py": {"gemm", "memory_bandwidth", "headline", "models", "runtime_import", "infer_memory", "threads"},
    "bench_detectors.py": {"models", "dataset", "threads"},
    "bench_contamination.py": {"results", "category", "threads"},
    "bench_int8.py": {"gemm", "categories", "threads"},
    "bench_accuracy.py": {"table", "tried", "threads"},
    "bench_region_cores.py": {"table", "rule", "threads"},
    "split_spread.py": {"results", "threads"},
}
if importlib.util.find_spec("ray") is not None:  # the ray extra is optional
    EXPECTED["bench_ray.py"] = {"models", "driver_memory", "threads"}
COMMON = {"schema_version", "benchmark", "quick", "environment", "config"}


def _run_all() -> dict[str, dict]:
    # They run side by side (each single-threaded in --quick mode) to keep the test short.
    procs = {
        name: subprocess.Popen([sys.executable, str(BENCH / name), "--quick"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in EXPECTED
    }
    docs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} failed:\n{err[-3000:]}"
        docs[name] = json.loads(out)  # exactly one JSON document on stdout
    return docs


def test_benchmark_scripts_quick_mode_print_one_json_document():
    docs = _run_all()
    for name, keys in EXPECTED.items():
        doc = docs[name]
        missing = (keys | COMMON) - set(doc)
        assert not missing, f"{name}: missing keys {sorted(missing)}"
        assert doc["quick"] is True

    fit = docs["bench_fit.py"]
    assert fit["bank_size"] == round(0.1 * fit["n_patches"])
    assert fit["reference"]["identical"] and fit["coreset"]["same_selection_as_fit"]
    assert fit["peak_rss_mb"] > 0

    export = docs["bench_export.py"]["models"]
    assert set(export) == {"vision_patchcore", "vision_padim"}
    for entry in export.values():
        assert set(entry["onnx_mb"]) == {"model.onnx", "model.fp16.onnx"}
        assert {"fp32", "fp16"} <= set(entry["parity_golden"])
        fp32 = entry["parity_golden"]["fp32"]
        assert fp32["passed"] and fp32["labels_identical"]
        assert {"max_abs_score", "max_abs_map"} <= set(entry["parity_test"]["model.onnx"])

    runtime = docs["bench_runtime.py"]
    for model, entry in runtime["models"].items():
        for b in ("1", "8"):
            batch = entry["batches"][b]
            assert batch["eager"]["images_per_s"] > 0 and batch["ort"]["images_per_s"] > 0
            assert batch["flops_per_batch"] > 0
        assert {"p50_ms", "p99_ms"} <= set(entry["batches"]["1"]["latency"]["ort"])
        assert entry["cold_start"]["torch_imported"] is False
        assert entry["ort_profile"]["gflops_by_op_type"]["Conv"]["gflops"] > 0
        assert entry["fit_summary"]["n_images"] > 0
        tp = entry["batches"]["8"]["ort_throughput"]
        assert tp["schedule"]["streams"] == 2 and tp["images_per_s"] > 0 and tp["max_abs_score_diff_vs_one_call"] < 1e-4
        roof = entry["roofline"]
        assert 0 < roof["with_measured_conv_max_fraction_of_gemm"] <= roof["ideal_max_fraction_of_gemm"] <= 1.0
        assert roof["streamed_constant_bytes"]  # the head's bank / covariances are MatMul/Gemm operands
    assert runtime["memory_bandwidth"]["best_gbs"] > 0
    assert runtime["models"]["vision_padim"]["roofline"]["streaming_ops"]["MatMul"]["gbs"] > 0
    assert runtime["headline"]["vision_patchcore"]["bank_size"] == runtime["models"]["vision_patchcore"]["fit_summary"]["bank_size"]
    assert runtime["runtime_import"]["import_s_median"] > 0
    runs = runtime["infer_memory"]["runs"]
    assert all(r["n_records"] == r["n_images"] and r["peak_rss_mb"] for r in runs)

    cores = docs["bench_region_cores.py"]["table"]
    assert {r["config"] for r in cores} and [r["core_ratio"] for r in cores[:4]] == [None, 0.25, 0.5, 0.75]
    for config in {r["config"] for r in cores}:  # cores move and shrink regions; they never add or drop one
        rows = [r for r in cores if r["config"] == config]
        assert len({(r["defective_images_with_a_region"], r["false_regions_per_normal_image"]) for r in rows}) == 1
        areas = [r["mean_region_area_px"] for r in rows if r["mean_region_area_px"] is not None]
        assert areas == sorted(areas, reverse=True)

    spread = docs["split_spread.py"]["results"]
    assert len(spread) == 3  # the two shipped recipes and the default without local aggregation, on the generated category
    for entry in spread:
        seeds = entry["per_seed"]
        assert [r["seed"] for r in seeds] == [0, 1]
        aurocs = [r["image_auroc"] for r in seeds]
        assert entry["spread"]["image_auroc"]["min"] == round(min(aurocs), 4)
        assert entry["spread"]["image_auroc"]["max"] == round(max(aurocs), 4)

"""Every registered detector (or ``--models``) on one real category, end to end.

For each model: ``train`` with the registry defaults (plus ``--model-kwargs NAME=JSON``),
``export`` (its parity gate), then the torch-free runtime on the test split, compared with
the run's eager scores and labels. Prints one JSON document: image AUROC, pixel AUROC, AUPRO,
fit / total train time, fitted-state memory, export parity and runtime agreement per model.

    python benchmarks/bench_detectors.py --root ../shared/data --category bsd_ballscrew --threads 2
    python benchmarks/bench_detectors.py --quick        # generated images, random init, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as C


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data", help="MVTec-layout root")
    p.add_argument("--category", default="hazelnut_toy")
    p.add_argument("--models", default=None, help="comma-separated model names (default: every registered model)")
    p.add_argument("--model-kwargs", action="append", default=[], metavar="NAME=JSON", help="extra kwargs of one model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="keep runs and bundles here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="generated 64 px images, random init, small models")
    return p.parse_args(argv)


def _overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--model-kwargs: expected NAME=JSON, got {item!r}")
        out[name] = json.loads(text)
    return out


def _one(name: str, kwargs: dict[str, Any], dataset: dict[str, Any], work: Path, threads: int) -> dict[str, Any]:
    import numpy as np

    from pyimgano_deploy.exporters.bundle_export import export_run
    from pyimgano_deploy.runtimes import load_bundle
    from pyimgano_deploy.workbench.config import TrainConfig
    from pyimgano_deploy.workbench.train import run_training

    run, bundle = work / f"{name}_run", work / f"{name}_bundle"
    cfg = TrainConfig.from_dict({"name": name, "model": {"name": name, "kwargs": kwargs}, "dataset": dataset,
                                 "output": {"dir": str(run), "report": False}, "seed": 0})
    C.log(f"{name}: training")
    summary = run_training(cfg, force=True, progress=False, log=C.log)
    report = json.loads((run / "report.json").read_text())
    C.log(f"{name}: exporting")
    result = export_run(run, bundle, log=C.log)
    records = [json.loads(line) for line in (run / "per_image.jsonl").read_text().splitlines()]
    test = [r for r in records if r["split"] == "test"]
    C.log(f"{name}: runtime on {len(test)} test images")
    rt = load_bundle(bundle, intra_op_threads=threads)
    t, got = C.timed(lambda: rt.infer([r["input"] for r in test]))
    eager = np.array([r["score"] for r in test])
    scores = np.array([g.score for g in got], dtype=np.float64)
    rel = np.abs(scores - eager) / np.maximum(1.0, np.abs(eager))
    fitted = report["model"]["fitted"]
    memory = {k: fitted[k] for k in ("bank_size", "feature_dim", "gallery_bytes", "covariance_bytes") if k in fitted}
    parity = result.parity["fp32"]
    return {
        "metrics": {"image_auroc": summary["metrics"]["image"].get("auroc"), "pixel_auroc": summary["metrics"]["pixel"].get("auroc"),
                    "aupro": summary["metrics"]["pixel"].get("aupro")},
        "timings_s": {"fit": report["timings_s"].get("fit"), "train_total": report["timings_s"].get("total"),
                      "export": round(result.timings_s["total"], 2), "runtime_infer": round(t, 2)},
        "runtime_images_per_s": round(len(test) / t, 2),
        "memory": memory, "fitted_timings_s": fitted.get("timings_s"),
        "export_parity": {"max_abs_score": parity.max_abs_score, "max_abs_map": parity.max_abs_map, "labels_identical": parity.labels_identical},
        "runtime_vs_eager": {"max_rel_score": float(rel.max()), "labels_identical": all(g.label == r["label"] for g, r in zip(got, test)),
                             "n": len(test)},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(1 if args.quick else args.threads)
    C.pin_torch_threads(threads)
    from pyimgano_deploy.models import list_models, model_entry

    names = args.models.split(",") if args.models else list_models()
    overrides = _overrides(args.model_kwargs)
    doc = C.header("bench_detectors", args, threads)
    with tempfile.TemporaryDirectory(prefix="bench_detectors_") as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.quick:
            dataset = {"kind": "synthetic", "root": str(work / "data"), "n_train": 14, "n_test": 8, "size": 64}
        else:
            dataset = {"kind": "mvtec", "root": str(args.root), "category": args.category}
        results = {}
        for name in names:
            kwargs = {"pretrained": False, "image_size": 64, **model_entry(name).small_kwargs} if args.quick else {}
            kwargs.update(overrides.get(name, {}))
            results[name] = {"kwargs": kwargs, **_one(name, kwargs, dataset, work, threads)}
    doc.update({"dataset": dataset, "threads": threads, "models": results})
    return doc


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

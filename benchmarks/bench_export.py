#!/usr/bin/env python
"""Export benchmark: run dir → bundle for PatchCore and PaDiM → one JSON document on stdout.

Default: pretrained EfficientNet-Lite0 at 224 px fitted on ../shared/data/hazelnut_toy
train/good (last 6 images held out for calibration = the golden set). ``--quick``: random-init
backbone on generated 64 px images.

Per model: fit time, export time per precision (torch.onnx.export + onnx.checker), parity
time, ONNX size (fp32, fp16; + external data), the export's own parity gate figures on the
golden images, and an extra parity check on the test images (eager vs ONNX Runtime, fp32
and fp16: max |Δscore|, max |Δmap|, labels identical at the calibrated threshold).

    python benchmarks/bench_export.py
    python benchmarks/bench_export.py --quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _rundir as R  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(R.MODELS), help="comma-separated model names")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--data", choices=("hazelnut", "synthetic"), default="hazelnut")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--n-fit", type=int, default=22, help="synthetic data: fitting images")
    p.add_argument("--n-calib", type=int, default=6, help="held-out calibration (golden) images")
    p.add_argument("--n-test", type=int, default=8, help="synthetic data: test images per kind")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", type=Path, default=None, help="keep runs/bundles here (default: temp dir)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke mode: synthetic 64 px (pretrained Lite0: random-init fp16 features are not representative)")
    args = p.parse_args(argv)
    if args.quick:
        # Pretrained even in smoke mode: the fp16 gate is meaningful only on trained features
        # (random-init activations are far outside what half precision is validated for).
        args.size, args.data, args.random_init, args.n_fit, args.n_calib, args.n_test = 64, "synthetic", False, 6, 3, 2
        if args.threads is None:
            args.threads = 1  # smoke mode: avoid oversubscription stalls on a shared machine
    return args


def extra_parity(det: Any, bundle_dir: Path, images: list[str], threshold: float | None) -> dict[str, Any]:
    """Eager vs ONNX Runtime on ``images`` (not the golden set), for every engine file."""
    import numpy as np

    from pyimgano_deploy.exporters.onnx_export import onnx_outputs
    from pyimgano_deploy.inputs import read_image

    batch = det.preprocess.batch([read_image(p) for p in images])
    es, em = det.score_and_maps(list(batch), input_format="rgb_u8_hwc")
    out: dict[str, Any] = {"n_images": len(images)}
    for name in ("model.onnx", "model.fp16.onnx"):
        path = bundle_dir / name
        if not path.is_file():
            continue
        xs, xm = onnx_outputs(path, batch)
        rng = float(em.max() - em.min())
        entry = {
            "max_abs_score": float(np.abs(es - xs).max()),
            "max_rel_score": float((np.abs(es - xs) / np.maximum(np.abs(es), 1e-12)).max()),
            "max_abs_map": float(np.abs(em - xm).max()),
            "max_abs_map_over_range": float(np.abs(em - xm).max() / max(rng, 1e-12)),
        }
        if threshold is not None:
            entry["labels_identical"] = bool(np.array_equal(es >= threshold, xs >= threshold))
            entry["min_margin_to_threshold"] = float(np.abs(es - threshold).min())
        out[name] = entry
    return out


def bench_model(model: str, args: argparse.Namespace, images: R.ImageSets, work: Path) -> dict[str, Any]:
    C.log(f"=== {model}")
    run, det, fit_s = R.make_run_dir(work, model, images, size=args.size, pretrained=not args.random_init, seed=args.seed)
    bundle = work / f"bundle_{model}"
    t_total, result = C.timed(lambda: R.export_bundle(run, bundle, precision="fp16", golden=max(2, args.n_calib)))
    sizes = {}
    for f in sorted(bundle.iterdir()):
        sizes[f.name] = f.stat().st_size
    engines = {e["file"]: e for e in result.manifest["engines"]}
    onnx_mb = {}
    for name in ("model.onnx", "model.fp16.onnx"):
        total = sizes.get(name, 0) + sizes.get(name + ".data", 0)
        onnx_mb[name] = round(total / 2**20, 3)
    parity = {}
    for precision, rep in result.parity.items():
        parity[precision] = {
            "n_images": rep.n_images,
            "max_abs_score": rep.max_abs_score,
            "max_rel_score": rep.max_rel_score,
            "max_abs_map": rep.max_abs_map,
            "map_range": rep.map_range,
            "labels_identical": rep.labels_identical,
            "tolerance": rep.tolerance,
            "passed": rep.passed,
        }
    threshold = None if det.threshold is None else float(det.threshold.value)
    C.log(f"{model}: extra parity on {len(images.test)} test images")
    extra = extra_parity(det, bundle, images.test, threshold)
    t = result.timings_s
    return {
        "fit_s": round(fit_s, 3),
        "fit_summary": det.fit_summary,
        "memory_bytes": det.memory_bytes(),
        "export_s": {
            "total": round(t_total, 3),
            "load_and_golden": round(t.get("load_and_golden", 0.0), 3),
            "onnx_fp32": round(t.get("export_fp32", 0.0), 3),
            "parity_fp32": round(t.get("parity_fp32", 0.0), 3),
            "onnx_fp16": round(t.get("export_fp16", 0.0), 3),
            "parity_fp16": round(t.get("parity_fp16", 0.0), 3),
        },
        "onnx_mb": onnx_mb,
        "fp16_size_ratio": round(onnx_mb["model.fp16.onnx"] / max(onnx_mb["model.onnx"], 1e-9), 3),
        "external_data": {k: v.get("external_data") for k, v in engines.items()},
        "bundle_files_bytes": sizes,
        "threshold": threshold,
        "parity_golden": parity,
        "parity_test": extra,
        "tensorrt_compat_ok": {k: v["ok"] for k, v in result.compat.items()},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(args.threads)
    doc = C.header("bench_export", args, threads)
    C.pin_torch_threads(threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        work = args.out_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.data == "hazelnut":
            images = R.hazelnut_sets(args.n_calib)
        else:
            images = R.synthetic_sets(work / "data", size=args.size, n_fit=args.n_fit, n_calib=args.n_calib, n_test=args.n_test, seed=args.seed)
        results = {m: bench_model(m, args, images, work) for m in models}
    return {
        **doc,
        "data": {"source": images.source, "n_fit": len(images.fit), "n_calib": len(images.calib), "n_test": len(images.test)},
        "image_size": args.size,
        "pretrained": not args.random_init,
        "threads": threads,
        "models": results,
        "loadavg_end": C.loadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    main()

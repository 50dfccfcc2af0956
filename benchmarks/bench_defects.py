"""Region-level precision / recall of the defects pipeline on hazelnut_toy, with and without fp40.

Fits PatchCore (registry default: pretrained EfficientNet-Lite0, 224 px) on train/good minus a
seeded held-out calibration split, calibrates the image threshold and the pixel threshold on
the held-out normals (``postprocess.calibrate_pixel_threshold``), scores test/, extracts
regions with two settings — ``plain`` (threshold + connected components, every other step
off) and ``fp40`` (``DEFECTS_PRESETS["fp40"]``) — and compares them with the ground-truth masks
(resized to the map size with nearest neighbour) using ``workbench.region_eval``. Prints JSON.

    python benchmarks/bench_defects.py [--data ../shared/data/hazelnut_toy] [--n-calib 6]
        [--pixel-quantiles 0.99,0.999,0.995,0.95] [--ablate] [--bundle-out DIR]

``--bundle-out DIR`` also writes the fitted run (DIR/run, infer_config with the fp40 defects
block, as the industrial-adapt-fp40 recipe does) and exports it to DIR/bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hazelnut_toy"


def _split(paths: list[str], n_calib: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    picks = set(rng.choice(len(paths), size=n_calib, replace=False).tolist())
    fit = [p for i, p in enumerate(paths) if i not in picks]
    calib = [p for i, p in enumerate(paths) if i in picks]
    return fit, calib


def _gt_masks(samples: list[Any], shape: tuple[int, int]) -> list[np.ndarray | None]:
    from pyimgano_deploy.inputs import read_mask
    from pyimgano_deploy.workbench.region_eval import resize_nearest

    out: list[np.ndarray | None] = []
    for s in samples:
        if s.label == 0:
            out.append(None)
        elif s.mask_path is None:
            raise SystemExit(f"anomalous test image {s.path} has no ground-truth mask")
        else:
            out.append(resize_nearest(read_mask(s.mask_path), shape))
    return out


def _evaluate(maps: np.ndarray, gts: list[np.ndarray | None], config: Any, threshold: float,
              cal_maps: np.ndarray | None = None) -> dict[str, Any]:
    """Region metrics on the test maps; with ``cal_maps`` also the false-positive regions per
    held-out calibration normal (in-sample for the threshold: it was computed on them)."""
    from pyimgano_deploy.postprocess.defects import extract_defects
    from pyimgano_deploy.workbench.region_eval import evaluate_regions

    t = time.perf_counter()
    preds = [extract_defects(m, config, pixel_threshold=threshold).mask for m in maps]
    ms = (time.perf_counter() - t) * 1e3 / len(maps)
    out = evaluate_regions(preds, gts).to_dict()
    out.pop("rule")
    if cal_maps is not None:
        cal = evaluate_regions([extract_defects(m, config, pixel_threshold=threshold).mask for m in cal_maps],
                               [None] * len(cal_maps))
        out["fp_regions_per_calibration_image"] = cal.fp_regions_per_normal_image
    out["extract_ms_per_image"] = round(ms, 3)
    return out


#: fp40 with one step turned off at a time (``--ablate``): which knob moves the numbers.
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_border": {"border_ignore_px": 0},
    "no_smoothing": {"smoothing": "none"},
    "no_hysteresis": {"hysteresis_low_ratio": None},
    "no_morphology": {"open_ksize": 0, "close_ksize": 0},
    "no_fill_holes": {"fill_holes": False},
    "no_min_area": {"min_area": 0},
    "no_min_score": {"min_score_max_ratio": None},
    "no_merge": {"merge_gap_px": None},
}


def _ablate(maps: np.ndarray, gts: list[np.ndarray | None], threshold: float) -> dict[str, Any]:
    from pyimgano_deploy.postprocess import DEFECTS_PRESETS

    out = {}
    for name, change in ABLATIONS.items():
        r = _evaluate(maps, gts, DEFECTS_PRESETS["fp40"].with_overrides(**change), threshold)
        out[name] = {k: r[k] for k in ("precision", "recall", "n_pred", "n_tp", "n_gt_detected", "fp_regions_per_normal_image")}
    return out


def _write_bundle(out: Path, det: Any, fit: list[str], calib: list[str], image_cal: Any, pixel_cal: Any) -> str:
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run
    from pyimgano_deploy.postprocess.defects import DEFECTS_PRESETS

    run = out / "run"
    det.threshold, det.pixel_threshold = image_cal, pixel_cal
    det.save(run / "model")
    (run / "artifacts").mkdir(parents=True, exist_ok=True)
    infer_config = {
        "schema_version": "1.0",
        "model": {"name": det.model_name, "family": det.family},
        "preprocess": det.preprocess.to_dict(),
        "thresholds": {"image": image_cal.to_dict(), "pixel": pixel_cal.to_dict()},
        "tiling": None,
        "defects": DEFECTS_PRESETS["fp40"].to_dict(),
    }
    (run / "artifacts" / "infer_config.json").write_text(json.dumps(infer_config, indent=2))
    (run / "config.json").write_text(json.dumps({"model": {"name": "vision_patchcore"}, "recipe": "industrial-adapt-fp40",
                                                 "source": "benchmarks/bench_defects.py"}))
    (run / "report.json").write_text(json.dumps({"schema_version": "1.0", "metrics": {}}))
    with open(run / "per_image.jsonl", "w", encoding="utf-8") as f:
        for p in fit:
            f.write(json.dumps({"input": p, "split": "train", "y_true": 0}) + "\n")
        for p in calib:
            f.write(json.dumps({"input": p, "split": "calibration", "y_true": 0}) + "\n")
    res = export_run(run, out / "bundle", ExportOptions(force=True, golden=min(8, len(calib))),
                     log=lambda m: print(m, file=sys.stderr))
    return res.bundle_dir.as_posix()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n-calib", type=int, default=6, help="train/good images held out for calibration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-quantile", type=float, default=0.99)
    ap.add_argument("--pixel-quantiles", default="0.99,0.999,0.995,0.95",
                    help="comma-separated; the first is the headline (0.99 = the workbench default)")
    ap.add_argument("--bundle-out", type=Path, default=None)
    ap.add_argument("--ablate", action="store_true", help="also run fp40 with one step off at a time")
    args = ap.parse_args(argv)

    from pyimgano_deploy.datasets import load_mvtec
    from pyimgano_deploy.models import create_model
    from pyimgano_deploy.postprocess import DEFECTS_PRESETS, DefectsConfig, calibrate_pixel_threshold, calibrate_quantile

    ds = load_mvtec(args.data)
    fit, calib = _split(sorted(s.path for s in ds.train), args.n_calib, args.seed)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    det = create_model("vision_patchcore", progress=False).fit(fit)
    timings["fit_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    cal_scores, cal_maps = det.score_and_maps(calib)
    test_scores, test_maps = det.score_and_maps([s.path for s in ds.test])
    timings["score_s"] = round(time.perf_counter() - t, 2)
    image_cal = calibrate_quantile(cal_scores, quantile=args.image_quantile, source_split="calibration",
                                   n_images=len(calib), code_path="benchmarks/bench_defects.py")
    labels = np.array([s.label for s in ds.test])
    pred = (test_scores >= image_cal.value).astype(int)
    gts = _gt_masks(ds.test, tuple(test_maps.shape[1:]))

    configs = {"plain": DefectsConfig(), "fp40": DEFECTS_PRESETS["fp40"]}
    results = []
    pixel_cals = {}
    for q in (float(v) for v in args.pixel_quantiles.split(",")):
        pixel_cal = calibrate_pixel_threshold(cal_maps, quantile=q, source_split="calibration",
                                              code_path="benchmarks/bench_defects.py")
        pixel_cals[q] = pixel_cal
        entry = {"pixel_quantile": q, "pixel_threshold": pixel_cal.value}
        for name, config in configs.items():
            entry[name] = _evaluate(test_maps, gts, config, pixel_cal.value, cal_maps)
        if args.ablate:
            entry["fp40_ablation"] = _ablate(test_maps, gts, pixel_cal.value)
        results.append(entry)

    from pyimgano_deploy.workbench.region_eval import DEFAULT_MIN_OVERLAP, RULE

    report: dict[str, Any] = {
        "schema_version": "1.0",
        "benchmark": "defects_region_level",
        "data": {"root": str(args.data), "fit_images": len(fit), "calibration_images": len(calib),
                 "test_normal": int((labels == 0).sum()), "test_anomalous": int((labels == 1).sum()),
                 "gt_components_at_map_size": results[0]["plain"]["n_gt"]},
        "model": {"name": "vision_patchcore", **{k: det.hyperparameters()[k] for k in ("backbone", "pretrained", "image_size", "coreset_ratio")},
                  "map_size": list(test_maps.shape[1:])},
        "image_threshold": image_cal.to_dict(),
        "image_level": {"tp": int(((pred == 1) & (labels == 1)).sum()), "fp": int(((pred == 1) & (labels == 0)).sum()),
                        "fn": int(((pred == 0) & (labels == 1)).sum()), "tn": int(((pred == 0) & (labels == 0)).sum())},
        "pixel_threshold": pixel_cals[results[0]["pixel_quantile"]].to_dict(),
        "rule": RULE.format(p=100 * DEFAULT_MIN_OVERLAP),
        "configs": {"plain": "DefectsConfig() — threshold + 8-connected components, every other step off",
                    "fp40": DEFECTS_PRESETS["fp40"].to_dict()},
        "results": results,
        "timings": timings,
    }
    if args.bundle_out is not None:
        t = time.perf_counter()
        report["bundle"] = _write_bundle(args.bundle_out, det, fit, calib, image_cal, pixel_cals[results[0]["pixel_quantile"]])
        timings["export_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

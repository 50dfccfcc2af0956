"""Accuracy of the default recipe and of the variants tried, on every real set in ``--root``.

For each category with a ``train/`` folder (hazelnut_toy, bsd_ballscrew, …) and each
configuration in ``TRIED`` (or ``--only``), it trains with ``run_training`` (as ``train``
does: the ``industrial-adapt-fp40`` recipe, i.e. the default recipe plus the fp40 defects check,
the calibration split, the default threshold), exports the run, and scores the test split with
the whole ``infer`` path. Per row: backbone, size policy and resolved size, bank ratio, local
aggregation (PatchCore's ``neighbourhood``), illumination, image AUROC, pixel AUROC, AUPRO,
recall and precision at the threshold, the fp40 defects figures on the test split (defective
images with a region, false regions per normal image, region recall and precision),
whole-``infer`` images/s. A row whose export fails the
parity gate keeps its eager figures, with the gate's table in ``export_error`` and no speed.
Prints one JSON document, with a ``table`` of rows.

    python benchmarks/bench_accuracy.py --root ../shared/data --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as C
from _rundir import category_dirs, timed_infer, train_cli_default

REGISTRY = {"image_size": 224, "backbone": "efficientnet_lite0"}  # the squashed Lite0 input of the registry defaults
#: (name, model, kwargs): what was tried, each trained under the fp40 recipe (industrial-adapt plus
#: the fp40 defects check). PatchCore rows spell out every default the recipe would otherwise set.
TRIED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("industrial-adapt (default recipe)", "vision_patchcore", {}),
    ("patchcore registry defaults (bank 10 %)", "vision_patchcore", {**REGISTRY, "coreset_ratio": 0.1}),
    ("patchcore bank 1 %", "vision_patchcore", {**REGISTRY, "coreset_ratio": 0.01}),
    ("patchcore keep_aspect, bank 1 %", "vision_patchcore", {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01}),
    ("patchcore keep_aspect, bank 1 %, standardize", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "illumination": "standardize"}),
    ("patchcore keep_aspect, bank 1 %, lite1, mean score", "vision_patchcore",
     {"image_size": "keep_aspect", "coreset_ratio": 0.01, "backbone": "efficientnet_lite1", "image_score": "mean"}),
    ("patchcore keep_aspect:320, bank 1 %", "vision_patchcore", {**REGISTRY, "image_size": "keep_aspect:320", "coreset_ratio": 0.01}),
    ("patchcore keep_aspect, bank 1 %, reweight (paper eq. 7)", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "reweight": True}),
    ("patchcore keep_aspect, bank 1 %, lite2", "vision_patchcore",
     {"image_size": "keep_aspect", "coreset_ratio": 0.01, "backbone": "efficientnet_lite2"}),
    ("padim default", "vision_padim", {}),
    ("padim keep_aspect", "vision_padim", {"image_size": "keep_aspect"}),
    ("industrial-adapt-aspect-fine: padim keep_aspect:320", "vision_padim", {"image_size": "keep_aspect:320"}),
    ("padim keep_aspect, standardize", "vision_padim", {"image_size": "keep_aspect", "illumination": "standardize"}),
    ("padim keep_aspect, mean score", "vision_padim", {"image_size": "keep_aspect", "image_score": "mean"}),
    ("industrial-adapt-aspect: padim keep_aspect, lite1", "vision_padim", {"image_size": "keep_aspect", "backbone": "efficientnet_lite1"}),
    ("padim keep_aspect, lite2", "vision_padim", {"image_size": "keep_aspect", "backbone": "efficientnet_lite2"}),
    ("padim keep_aspect, lite1, mean score", "vision_padim",
     {"image_size": "keep_aspect", "backbone": "efficientnet_lite1", "image_score": "mean"}),
    ("padim keep_aspect, lite2, mean score", "vision_padim",
     {"image_size": "keep_aspect", "backbone": "efficientnet_lite2", "image_score": "mean"}),
    ("spade keep_aspect", "vision_spade", {"image_size": "keep_aspect"}),
    ("padim keep_aspect:320, lite1", "vision_padim", {"image_size": "keep_aspect:320", "backbone": "efficientnet_lite1"}),
    ("ensemble keep_aspect: patchcore bank 1 % + padim lite1", "vision_ensemble",
     {"image_size": "keep_aspect", "members": [{"name": "vision_patchcore", "kwargs": {"coreset_ratio": 0.01}},
                                               {"name": "vision_padim", "kwargs": {"backbone": "efficientnet_lite1"}}]}),
    ("patchcore keep_aspect, bank 1 %, k = 3", "vision_patchcore", {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "k": 3}),
    # The "choice of stages and the feature resolution": the finer s4 stage pooled onto the s8 grid,
    # the coarser s32 stage added, and the whole grid at stride 4 (4x the queries, so a 0.25 % bank).
    ("patchcore keep_aspect, bank 1 %, stages s8 + s4 + s16", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "stages": ["s8", "s4", "s16"]}),
    ("patchcore keep_aspect, bank 1 %, stages s8 + s16 + s32", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "stages": ["s8", "s16", "s32"]}),
    ("patchcore keep_aspect, bank 0.25 %, stride-4 grid (stages s4 + s8 + s16)", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.0025, "stages": ["s4", "s8", "s16"]}),
    # keep_aspect:320's 2x patches met a 2x bank (8 img/s); a 0.25 % bank holds about as many rows as the default's 1 %.
    ("patchcore keep_aspect:320, bank 0.25 %", "vision_patchcore", {**REGISTRY, "image_size": "keep_aspect:320", "coreset_ratio": 0.0025}),
    # Detectors II and SoftPatch at the default's input size: trained student-teacher maps, and the
    # noise-robust bank (some of bsd_ballscrew's normal images show lubricant soiling).
    ("stfpm keep_aspect", "vision_stfpm", {"image_size": "keep_aspect"}),
    ("reverse distillation keep_aspect", "vision_reverse_distillation", {"image_size": "keep_aspect"}),
    ("softpatch keep_aspect, bank 1 %", "vision_softpatch", {"image_size": "keep_aspect", "coreset_ratio": 0.01}),
    ("patchcore keep_aspect, bank 1 %, clahe", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "illumination": "clahe"}),
    ("padim keep_aspect, lite1, clahe", "vision_padim", {"image_size": "keep_aspect", "backbone": "efficientnet_lite1", "illumination": "clahe"}),
    # The issue's "tile": 256 px tiles scored at 224 px, near the images' own scale (keep_aspect is 0.49 of
    # it on bsd_ballscrew). About 10 tiles per image, so PatchCore gets a 0.25 % bank.
    ("patchcore tiles 256 / stride 224, bank 0.25 %, top-100 mean", "vision_patchcore", {**REGISTRY, "coreset_ratio": 0.0025}),
    ("patchcore tiles 256 / stride 224, bank 0.25 %, max", "vision_patchcore", {**REGISTRY, "coreset_ratio": 0.0025}),
    ("padim tiles 256 / stride 224, lite1, max", "vision_padim", {"image_size": 224, "backbone": "efficientnet_lite1"}),
    # Two PaDiMs whose backbones differ most among the aligned-parts rows (Lite1 ranks images best, Lite2 localises best).
    ("ensemble keep_aspect: padim lite1 + padim lite2", "vision_ensemble",
     {"image_size": "keep_aspect", "members": [{"name": "vision_padim", "kwargs": {"backbone": "efficientnet_lite1"}},
                                               {"name": "vision_padim", "kwargs": {"backbone": "efficientnet_lite2"}}]}),
    # PatchCore's local aggregation (the paper's p): 1 = each patch feature as the backbone gives it,
    # so a pit a few pixels wide is not averaged with its 3 x 3 surroundings.
    ("patchcore keep_aspect, bank 1 %, neighbourhood 1 (no aggregation)", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "neighbourhood": 1}),
    ("patchcore keep_aspect, bank 1 %, neighbourhood 1, blur sigma 2", "vision_patchcore",
     {**REGISTRY, "image_size": "keep_aspect", "coreset_ratio": 0.01, "neighbourhood": 1, "blur_sigma": 2.0}),
    ("softpatch keep_aspect, bank 1 %, neighbourhood 1", "vision_softpatch",
     {"image_size": "keep_aspect", "coreset_ratio": 0.01, "neighbourhood": 1}),
)
RECIPE = "industrial-adapt-fp40"
#: the tiling block of the tiled rows of TRIED, by name; they run under the tiling recipe with the
#: fp40 recipe's defects preset and pixel threshold, so their figures compare with the other rows
_TILE_256 = {"tile": 256, "stride": 224, "blend": "hann"}
TILING: dict[str, dict[str, Any]] = {
    "patchcore tiles 256 / stride 224, bank 0.25 %, top-100 mean": {**_TILE_256, "score_reduction": "topk_mean", "topk": 100},
    "patchcore tiles 256 / stride 224, bank 0.25 %, max": {**_TILE_256, "score_reduction": "max"},
    "padim tiles 256 / stride 224, lite1, max": {**_TILE_256, "score_reduction": "max"},
}


def training_blocks(name: str) -> tuple[str, dict[str, Any]]:
    """(recipe, extra config blocks) of the row called ``name``: the fp40 recipe, or for a tiled row the
    tiling recipe with its ``tiling`` block and the fp40 recipe's ``defects`` and ``calibration`` defaults."""
    if name not in TILING:
        return RECIPE, {}
    from pyimgano_deploy.workbench.recipes import get_recipe

    fp40 = get_recipe(RECIPE)
    return "industrial-adapt-highres", {"tiling": TILING[name], "defects": fp40.defaults()["defects"], "calibration": dict(fp40.calibration)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--categories", default=None, help="comma-separated (default: every category under --root)")
    p.add_argument("--only", default=None, help="comma-separated indices into TRIED")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="generated images, random init, small models")
    return p.parse_args(argv)


def row(name: str, model: str, kwargs: dict[str, Any], category_dir: Path, work: Path, threads: int, quick: bool) -> dict[str, Any]:
    import json

    from pyimgano_deploy.bundles.parity import ParityError
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    slug = "".join(ch if ch.isalnum() else "_" for ch in name)
    recipe, blocks = training_blocks(name)
    run = train_cli_default(model, category_dir, work / slug, quick=quick, recipe=recipe, blocks=blocks, **kwargs)
    report = json.loads((run / "report.json").read_text())
    try:
        bundle: Path | None = export_run(run, run.parent / "bundle", ExportOptions(force=True), log=C.log).bundle_dir
        export_error = None
    except ParityError as exc:  # the row keeps its eager figures and says why it has no bundle
        bundle, export_error = None, str(exc)
    paths = sorted(str(p) for p in (category_dir / "test").rglob("*") if p.is_file())
    image, pixel = report["metrics"]["image"], report["metrics"]["pixel"] or {}
    hp = report["model"]["hyperparameters"]
    check = report.get("defects_check") or {}
    test_check = check.get("test") or {}
    normal, anomalous = test_check.get("normal") or {}, test_check.get("anomalous") or {}
    fp40 = {"defective_images_with_a_region": anomalous.get("fraction_with_regions"),
            "false_regions_per_normal_image": (normal["n_regions"] / normal["n_images"]) if normal.get("n_images") else None,
            "region_recall": (test_check.get("regions") or {}).get("recall"),
            "region_precision": (test_check.get("regions") or {}).get("precision")}
    return {
        "config": name, "model": model, "backbone": hp.get("backbone"),
        "size_policy": (report["model"].get("size_policy") or {}).get("policy", "fixed"), "input_size": report["model"]["input_size"],
        "bank_ratio": hp.get("coreset_ratio"), "neighbourhood": hp.get("neighbourhood"),
        "illumination": hp.get("illumination", "none"), "tiling": report.get("tiling"),
        "image_auroc": image.get("auroc"), "pixel_auroc": pixel.get("auroc"), "aupro": pixel.get("aupro"),
        "recall_at_threshold": image.get("recall"), "precision_at_threshold": image.get("precision"),
        "missed_by_type": {t: len(e["missed"]) for t, e in (image.get("by_defect_type") or {}).items()},
        "fp40": fp40,
        "infer_images_per_s": None if bundle is None else round(len(paths) / timed_infer(bundle, paths, threads)[0], 2),
        "fit_s": report["timings_s"].get("fit"), "export_error": export_error,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(1 if args.quick else args.threads)
    C.pin_torch_threads(threads)
    doc = C.header("bench_accuracy", args, threads)
    tried = [TRIED[int(i)] for i in args.only.split(",")] if args.only else list(TRIED)
    table: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as tmp:
        work = Path(tmp)
        if args.quick:
            tried = [t for t in tried if t[0] in ("industrial-adapt (default recipe)", "padim keep_aspect")]
        for category_dir in category_dirs(args.root, args.categories, work, quick=args.quick):
            for name, model, kwargs in tried:
                C.log(f"{category_dir.name}: {name}")
                table.append({"category": category_dir.name, **row(name, model, kwargs, category_dir, work / category_dir.name, threads, args.quick)})
    doc.update({"table": table, "tried": [{"config": n, "model": m, "kwargs": k} for n, m, k in tried], "threads": threads})
    return doc


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""Region-level defects figures with and without region cores (``DefectsConfig.core_ratio``).

For each real category (``--categories``; generated images in ``--quick`` mode) and each
configuration in ``CONFIGS``, it trains under the ``industrial-adapt-fp40`` recipe with the
test maps saved, then runs the defects pipeline on every test map with the fp40 preset and with
fp40 plus each ``--ratios`` core, at the run's pixel threshold (0.95 quantile of the
calibration maps' maxima). Per row: region recall and precision (``workbench.region_eval``: a
region is a true positive when >= 10 % of it lies on the mask), mean region area in map pixels,
defective test images with a region, false regions per normal test image. Prints one JSON document.

    python benchmarks/bench_region_cores.py --root ../shared/data --categories bsd_ballscrew,hazelnut_toy
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as C
from _rundir import category_dirs, train_cli_default

#: (name, model, kwargs): the default recipe's PatchCore, the two aligned-parts PaDiM recipes, and the
#: default without PatchCore's local aggregation (a finer map)
CONFIGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("industrial-adapt (PatchCore)", "vision_patchcore", {}),
    ("industrial-adapt-aspect (PaDiM lite1)", "vision_padim", {"image_size": "keep_aspect", "backbone": "efficientnet_lite1"}),
    ("industrial-adapt-aspect-fine (PaDiM 320 px)", "vision_padim", {"image_size": "keep_aspect:320"}),
    ("industrial-adapt, neighbourhood 1 (PatchCore without the 3 x 3 feature average)", "vision_patchcore", {"neighbourhood": 1}),
)
RECIPE = "industrial-adapt-fp40"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--categories", default=None, help="comma-separated (default: every category under --root)")
    p.add_argument("--ratios", default="0.25,0.5,0.75", help="comma-separated core ratios in (0, 1]")
    p.add_argument("--only", default=None, help="comma-separated indices into CONFIGS")
    p.add_argument("--quick", action="store_true", help="generated images, random init, small models")
    return p.parse_args(argv)


def maps_of_test_split(run: Path) -> tuple[float, list[Any], list[Any], list[int]]:
    """(pixel threshold, test maps, ground-truth masks on the map grid or None, labels) of a run.
    The masks are resized to the map as a whole, which is right only for a run without a center
    crop or tiling; ValueError for one with either."""
    import numpy as np

    from pyimgano_deploy.inputs import read_mask
    from pyimgano_deploy.workbench.region_eval import resize_nearest

    config = json.loads((run / "config.json").read_text())
    if config["model"]["kwargs"].get("center_crop") is not None or config.get("tiling") is not None:
        raise ValueError(f"{run}: masks are resized to the whole map here, so the run must have neither a center crop nor tiling")
    threshold = json.loads((run / "report.json").read_text())["thresholds"]["pixel"]["value"]
    records = [json.loads(line) for line in (run / "per_image.jsonl").read_text().splitlines()]
    maps, masks, labels = [], [], []
    for r in (r for r in records if r["split"] == "test"):
        amap = np.load(run / r["map"])
        mask = None if r.get("mask") is None else read_mask(r["mask"])
        maps.append(amap)
        labels.append(int(r["y_true"]))
        masks.append(None if mask is None else resize_nearest(mask, amap.shape))
    return threshold, maps, masks, labels


def figures(threshold: float, maps: list[Any], masks: list[Any], labels: list[int], core_ratio: float | None) -> dict[str, Any]:
    import numpy as np

    from pyimgano_deploy.postprocess.defects import DEFECTS_PRESETS, extract_defects
    from pyimgano_deploy.workbench.region_eval import evaluate_regions

    config = DEFECTS_PRESETS["fp40"].with_overrides(core_ratio=core_ratio)
    found = [extract_defects(m, config, pixel_threshold=threshold) for m in maps]
    ev = evaluate_regions([f.mask for f in found], [m if y == 1 else None for m, y in zip(masks, labels)]).to_dict()
    areas = [r.area for f in found for r in f.regions]
    return {"core_ratio": core_ratio, "region_recall": ev["recall"], "region_precision": ev["precision"],
            "mean_region_area_px": float(np.mean(areas)) if areas else None,
            "defective_images_with_a_region": float(np.mean([len(f.regions) > 0 for f, y in zip(found, labels) if y == 1])),
            "false_regions_per_normal_image": float(np.mean([len(f.regions) for f, y in zip(found, labels) if y == 0]))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(1 if args.quick else 2)
    C.pin_torch_threads(threads)
    doc = C.header("bench_region_cores", args, threads)
    ratios = [None] + [float(r) for r in args.ratios.split(",")]
    table: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_region_cores_") as tmp:
        work = Path(tmp)
        for category_dir in category_dirs(args.root, args.categories, work, quick=args.quick):
            for name, model, kwargs in ([CONFIGS[int(i)] for i in args.only.split(",")] if args.only else CONFIGS):
                C.log(f"{category_dir.name}: {name}")
                slug = "".join(ch if ch.isalnum() else "_" for ch in name)
                run_dir = train_cli_default(model, category_dir, work / category_dir.name / slug, quick=args.quick, recipe=RECIPE,
                                            save_maps=True, **kwargs)
                threshold, maps, masks, labels = maps_of_test_split(run_dir)
                for ratio in ratios:
                    table.append({"category": category_dir.name, "config": name, "pixel_threshold": threshold,
                                  **figures(threshold, maps, masks, labels, ratio)})
    doc.update({"table": table, "rule": "a predicted region is a true positive when >= 10 % of it lies on the mask", "threads": threads})
    return doc


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

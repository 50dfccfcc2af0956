"""How much of a configuration's accuracy is the calibration split: the same recipe trained on
several split seeds.

``train`` holds out ``calibration.fraction`` of the training normals, chosen by
``calibration.seed``; the rest are fitted. Each seed fits different images, so every figure of
``bench_accuracy.py`` (one seed) carries this spread. For each real category and each of
``CONFIGS`` (the two shipped 224 px recipes: the default PatchCore and the PaDiM of
``industrial-adapt-aspect``; and the default without PatchCore's 3 x 3 local aggregation), this
trains one run per seed with the recipe runner (model seed fixed at 0, so only the split
changes) and prints JSON: per seed the image AUROC, pixel AUROC, AUPRO and recall / precision at
the threshold, and per figure the mean, sample standard deviation, minimum and maximum. For
bsd_ballscrew it adds the image AUROC on the capture days that hold both classes
(``bsd_time_split.shared_days``), where the day cannot tell them apart; elsewhere that is null.

    python benchmarks/split_spread.py --root ../shared/data --categories bsd_ballscrew --seeds 8 [--only 0,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as C
from _rundir import RECIPE_CONFIGS, category_dirs, train_cli_default
from bsd_time_split import shared_days_auroc

#: the two shipped 224 px recipes, and the default recipe without PatchCore's 3 x 3 local aggregation
CONFIGS: tuple[tuple[str, str, dict[str, Any]], ...] = RECIPE_CONFIGS + (
    ("industrial-adapt, neighbourhood 1 (no local aggregation)", "vision_patchcore", {"neighbourhood": 1}),
)

FIGURES = {"image_auroc": ("image", "auroc"), "pixel_auroc": ("pixel", "auroc"), "aupro": ("pixel", "aupro"),
           "recall_at_threshold": ("image", "recall"), "precision_at_threshold": ("image", "precision")}


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    """The figures of ``FIGURES`` from a run's ``report.json`` (None where undefined)."""
    metrics = report["metrics"]
    return {name: (metrics.get(level) or {}).get(key) for name, (level, key) in FIGURES.items()}


def spread(values: list[float | None]) -> dict[str, float | None]:
    """mean, sample standard deviation (None for one value), min and max of the defined values."""
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "sd": None, "min": None, "max": None}
    return {"mean": round(statistics.fmean(v), 4), "sd": round(statistics.stdev(v), 4) if len(v) > 1 else None,
            "min": round(min(v), 4), "max": round(max(v), 4)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--categories", default=None, help="comma-separated (default: every category under --root)")
    p.add_argument("--seeds", type=int, default=8, help="calibration-split seeds 0 .. N-1 (default 8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help=f"comma-separated indices into the recipes: {list(enumerate(n for n, _, _ in CONFIGS))}")
    p.add_argument("--quick", action="store_true", help="generated images, random init, small models, 2 seeds")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error(f"--seeds must be at least 2 to measure a spread, got {args.seeds}")
    try:
        chosen = sorted({int(i) for i in args.only.split(",")}) if args.only else list(range(len(CONFIGS)))
    except ValueError:
        p.error(f"--only takes comma-separated integers, got {args.only!r}")
    if any(not 0 <= i < len(CONFIGS) for i in chosen):
        p.error(f"--only: indices must be in 0..{len(CONFIGS) - 1}, got {args.only!r}")
    threads = C.pin_threads(1 if args.quick else args.threads)
    C.pin_torch_threads(threads)
    doc = C.header("split_spread", args, threads)
    seeds = range(2 if args.quick else args.seeds)
    results = []
    with tempfile.TemporaryDirectory(prefix="split_spread_") as tmp:
        work = Path(tmp)
        for category_dir in category_dirs(args.root, args.categories, work, quick=args.quick):
            for i in chosen:
                name, model, kwargs = CONFIGS[i]
                per_seed = []
                for seed in seeds:
                    C.log(f"{category_dir.name}: {name}, calibration seed {seed}")
                    run = train_cli_default(model, category_dir, work / f"{category_dir.name}_{i}_{seed}", quick=args.quick,
                                            blocks={"calibration": {"seed": seed}}, **kwargs)
                    per_seed.append({"seed": seed, **figures(json.loads((run / "report.json").read_text())),
                                     "image_auroc_shared_days": shared_days_auroc(run)})
                results.append({"category": category_dir.name, "configuration": name, "per_seed": per_seed,
                                "spread": {f: spread([r[f] for r in per_seed]) for f in (*FIGURES, "image_auroc_shared_days")}})
    doc.update({"results": results, "threads": threads})
    C.emit(doc)


if __name__ == "__main__":
    sys.exit(main())

"""Training on contaminated normals: image AUROC of PatchCore vs SoftPatch (or ``--models``).

For each contamination level p, ``round(p·n/(1−p))`` defective test images (seeded) join the
n normal training images, so that they make up a share p of the training set. Every level is
tested on the same images: the defective images used at the highest level are left out of
the test split at every level. The layouts are folders of symbolic links under a temporary
folder; the data set itself is never copied. Prints one JSON document.

    python benchmarks/bench_contamination.py --root ../shared/data --category bsd_ballscrew --threads 2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as C


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--category", default="hazelnut_toy")
    p.add_argument("--levels", default="0,0.05,0.1", help="comma-separated shares of defective training images")
    p.add_argument("--models", default="vision_patchcore,vision_softpatch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="generated images, random init, small models")
    return p.parse_args(argv)


def _link_all(paths: list[Path], folder: Path, prefix: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        os.symlink(p.resolve(), folder / f"{prefix}{p.name}")


def build_layouts(category_dir: Path, levels: list[float], seed: int, out: Path) -> dict[float, dict[str, Any]]:
    """One MVTec-layout folder of links per level; returns ``{level: {root, n_defective_train}}``."""
    normals = sorted((category_dir / "train" / "good").iterdir())
    defect_dirs = [d for d in sorted((category_dir / "test").iterdir()) if d.is_dir() and d.name != "good"]
    defective = [(d.name, f) for d in defect_dirs for f in sorted(d.iterdir())]
    counts = {p: int(round(p * len(normals) / (1.0 - p))) for p in levels}
    moved = random.Random(seed).sample(defective, max(counts.values()))
    layouts = {}
    for p in levels:
        root = out / f"p{p:g}" / category_dir.name
        _link_all(normals, root / "train" / "good")
        for kind, f in moved[: counts[p]]:
            os.symlink(f.resolve(), root / "train" / "good" / f"contaminant_{kind}_{f.name}")
        _link_all(sorted((category_dir / "test" / "good").iterdir()), root / "test" / "good")
        held = {(k, f.name) for k, f in moved}
        for d in defect_dirs:
            keep = [f for f in sorted(d.iterdir()) if (d.name, f.name) not in held]
            _link_all(keep, root / "test" / d.name)
            gt = category_dir / "ground_truth" / d.name
            if gt.is_dir():
                stems = {f.stem for f in keep}
                _link_all([m for m in sorted(gt.iterdir()) if m.stem.removesuffix("_mask") in stems], root / "ground_truth" / d.name)
        layouts[p] = {"root": str(root.parent), "n_defective_train": counts[p], "n_normal_train": len(normals)}
    return layouts


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = C.pin_threads(1 if args.quick else args.threads)
    C.pin_torch_threads(threads)
    from pyimgano_deploy.workbench.config import TrainConfig
    from pyimgano_deploy.workbench.train import run_training

    levels = [float(v) for v in args.levels.split(",")]
    models = args.models.split(",")
    doc = C.header("bench_contamination", args, threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_contamination_") as tmp:
        work = Path(tmp)
        category_dir = args.root / args.category
        if args.quick:
            from pyimgano_deploy.datasets import generate_synthetic_dataset

            category_dir = Path(generate_synthetic_dataset(work / "data", seed=0, n_train=16, n_test=12, size=64))
        layouts = build_layouts(category_dir, levels, args.seed, work / "layouts")
        for p, layout in layouts.items():
            for name in models:
                kwargs = {"pretrained": False, "image_size": 64, "coreset_ratio": 0.25} if args.quick else {}
                cfg = TrainConfig.from_dict({
                    "name": f"{name}_p{p:g}", "model": {"name": name, "kwargs": kwargs},
                    "dataset": {"kind": "mvtec", "root": layout["root"], "category": category_dir.name},
                    "output": {"dir": str(work / "runs" / f"{name}_p{p:g}"), "report": False}, "seed": 0})
                C.log(f"{name} at contamination {p:g} ({layout['n_defective_train']} defective of "
                      f"{layout['n_defective_train'] + layout['n_normal_train']} training images)")
                summary = run_training(cfg, force=True, progress=False, log=C.log)
                rows.append({"model": name, "contamination": p, **layout, "root": None,
                             "image_auroc": summary["metrics"]["image"].get("auroc"),
                             "pixel_auroc": summary["metrics"]["pixel"].get("auroc"),
                             "aupro": summary["metrics"]["pixel"].get("aupro"),
                             "fit_s": summary["timings_s"].get("fit")})
    doc.update({"category": args.category, "threads": threads, "results": rows})
    return doc


def main(argv: list[str] | None = None) -> None:
    C.emit(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""What bsd_ballscrew's image AUROC measures: defects, or the day the photograph was taken.

bsd_ballscrew comes from a wear study, and each file name carries its capture time
(``01_YYMMDDhhmmss_…``). Its pitting images come from the study's last days, most normal images
from earlier ones. This script trains the default recipe (PatchCore) and the
``industrial-adapt-aspect`` configuration (PaDiM, Lite1) with ``maps/`` saved (or reads runs
given with ``--runs``), and prints JSON with, per run:

- ``auroc_all``: image AUROC over the whole test split of several reductions of the saved maps
  (model resolution): ``max`` (the detectors' own rule), ``mean``, ``median``, ``top1``/``top10``
  (mean of the largest 1 % / 10 % of pixels), ``max_minus_median`` (a local contrast that ignores
  a surface-wide offset);
- ``auroc_shared_days``: the same, on the test images of the days that hold both normal and
  defective test images, where the capture day cannot tell the classes apart;
- ``timestamp_auroc``: the AUROC of the capture time alone, as if it were a score;
- ``normals_above_threshold_by_day``: test normals at or above the run's threshold, per day.

    python benchmarks/bsd_time_split.py --root ../shared/data
    python benchmarks/bsd_time_split.py --runs runs/a runs/b     # runs trained with --save-maps
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import _common as C
from _rundir import RECIPE_CONFIGS, train_cli_default

CATEGORY = "bsd_ballscrew"
#: ``01_200828110901_…``: the second field is the capture time, YYMMDDhhmmss
_STAMP = re.compile(r"^\d+_(\d{12})_")


def capture_time(path: str) -> str:
    """The ``YYMMDDhhmmss`` capture time in a bsd_ballscrew file name; ValueError when absent."""
    m = _STAMP.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: file name does not start with <n>_<YYMMDDhhmmss>_ as bsd_ballscrew's do")
    return m.group(1)


def reductions(amap: Any) -> dict[str, float]:
    """Image scores from one float map: max, mean, median, the means of its top 1 % / 10 %, and max − median."""
    import numpy as np

    v = np.sort(np.asarray(amap, dtype=np.float64).ravel())
    top = lambda share: float(v[-max(1, int(len(v) * share)):].mean())  # noqa: E731
    median = float(np.median(v))
    return {"max": float(v[-1]), "mean": float(v.mean()), "median": median, "top1": top(0.01), "top10": top(0.1),
            "max_minus_median": float(v[-1]) - median}


def shared_days(inputs: list[str], y: Any) -> Any:
    """Boolean mask over ``inputs`` (labels ``y``): the images of the capture days that hold both
    classes, where the day cannot tell normal from defective. ValueError for a file name without
    bsd_ballscrew's capture time."""
    import numpy as np

    y = np.asarray(y)
    days = np.asarray([capture_time(p)[:6] for p in inputs])
    both = [d for d in set(days.tolist()) if len(set(y[days == d].tolist())) == 2]
    return np.isin(days, both)


def shared_days_auroc(run: Path) -> float | None:
    """Image AUROC of a run's own test scores on the shared days (:func:`shared_days`); None when
    the test file names carry no capture time or no day holds both classes."""
    from pyimgano_deploy.workbench.metrics import image_auroc

    test = [json.loads(line) for line in (run / "per_image.jsonl").read_text().splitlines() if line.strip()]
    test = [r for r in test if r["split"] == "test"]
    y = [r["y_true"] for r in test]
    try:
        keep = shared_days([r["input"] for r in test], y)
    except ValueError:
        return None
    if not keep.any():
        return None
    return round(image_auroc([v for v, k in zip(y, keep) if k], [r["score"] for r, k in zip(test, keep) if k]), 4)


def _aurocs(y: Any, scores: list[dict[str, float]]) -> dict[str, float | None]:
    from pyimgano_deploy.workbench.metrics import image_auroc

    return {k: round(image_auroc(y, [s[k] for s in scores]), 4) for k in scores[0]}


def analyse(run: Path) -> dict[str, Any]:
    """The figures of the module docstring for one run directory with ``maps/``."""
    import numpy as np

    from pyimgano_deploy.workbench.metrics import image_auroc

    records = [json.loads(line) for line in (run / "per_image.jsonl").read_text().splitlines() if line.strip()]
    test = [r for r in records if r["split"] == "test"]
    if not test or any(r.get("map") is None for r in test):
        raise SystemExit(f"{run}: needs test records with maps; train it with --save-maps")
    y = np.asarray([r["y_true"] for r in test], dtype=np.int64)
    days = np.asarray([capture_time(r["input"])[:6] for r in test])
    scores = [reductions(np.load(run / r["map"])) for r in test]
    keep = shared_days([r["input"] for r in test], y)
    shared = set(days[keep].tolist())
    threshold = float(test[0]["threshold"])
    above: dict[str, list[int]] = {}
    for r, d in zip(test, days):
        if r["y_true"] == 0:
            entry = above.setdefault(str(d), [0, 0])
            entry[0] += 1
            entry[1] += int(r["score"] >= threshold)
    return {
        "run": str(run),
        "model": json.loads((run / "config.json").read_text())["model"],
        "test_images": {"normal": int((y == 0).sum()), "defective": int((y == 1).sum())},
        "auroc_all": _aurocs(y, scores),
        "shared_days": sorted(shared),
        "shared_days_images": {"normal": int((y[keep] == 0).sum()), "defective": int((y[keep] == 1).sum())},
        "auroc_shared_days": _aurocs(y[keep], [s for s, k in zip(scores, keep) if k]) if shared else None,
        "timestamp_auroc": round(image_auroc(y, [float(capture_time(r["input"])) for r in test]), 4),
        "threshold": threshold,
        "normals_above_threshold_by_day": {d: {"normal": n, "above": a} for d, (n, a) in sorted(above.items())},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=C.REPO_ROOT.parent / "shared" / "data")
    p.add_argument("--runs", type=Path, nargs="+", help="existing bsd_ballscrew run directories with maps/ (no training)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    doc = C.header("bsd_time_split", args, C.pin_threads(args.threads))
    if args.runs:
        doc["runs"] = [analyse(r) for r in args.runs]
    else:
        category_dir = args.root / CATEGORY
        if not (category_dir / "train").is_dir():
            raise SystemExit(f"{category_dir} not found: this analysis needs ../shared/data/{CATEGORY}")
        with tempfile.TemporaryDirectory(prefix="bsd_time_split_") as tmp:
            doc["runs"] = []
            for i, (name, model, kwargs) in enumerate(RECIPE_CONFIGS):
                C.log(f"training {name}")
                run = train_cli_default(model, category_dir, Path(tmp) / f"c{i}", quick=False, save_maps=True, **kwargs)
                doc["runs"].append({"configuration": name, **analyse(run)})
    C.emit(doc)


if __name__ == "__main__":
    main()

"""Metrics of a scored test split (and the fp40 defects check), JSON-ready.

Image level at the calibrated threshold: AUROC, AP, F1, precision, recall, confusion.
Pixel level (only when at least one test image has a mask): AUROC and AUPRO over the
normal test images (all-normal masks) and the anomalous images that have a mask; maps at
model resolution, masks resized to them with nearest neighbour (see ``scoring``).
Anomalous images without a mask are left out of the pixel metrics (their pixels are unknown).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyimgano_deploy.workbench.metrics import aupro, evaluate_image_level, pixel_auroc
from pyimgano_deploy.workbench.scoring import ScoredSplit, SplitScorer

PIXEL_NOTE = ("maps at model resolution (tiled runs: blended map area-resized to model scale); "
              "masks resized to the map with nearest neighbour; anomalous images without a mask excluded")


def image_metrics(test: ScoredSplit, threshold: float) -> dict[str, Any]:
    """Image-level metrics at ``threshold`` plus ``by_defect_type``: per defect type of the
    anomalous test images, how many there are, how many scored at or above the threshold, and
    which were missed (their paths), so a report says what the operating point gives up."""
    y = np.asarray([s.label for s in test.samples], dtype=np.int64)
    out = evaluate_image_level(y, test.scores, threshold)
    by_type: dict[str, dict[str, Any]] = {}
    for sample, score in zip(test.samples, test.scores):
        if sample.label != 1:
            continue
        entry = by_type.setdefault(str(sample.defect_type), {"n": 0, "detected": 0, "missed": []})
        entry["n"] += 1
        if float(score) >= threshold:
            entry["detected"] += 1
        else:
            entry["missed"].append(sample.path)
    for entry in by_type.values():
        entry["recall"] = entry["detected"] / entry["n"]
    out["by_defect_type"] = dict(sorted(by_type.items()))
    return out


def pixel_metrics(test: ScoredSplit, scorer: SplitScorer) -> dict[str, Any] | None:
    """Pixel AUROC / AUPRO, or ``None`` when no test image has a mask."""
    if not any(s.mask_path is not None for s in test.samples):
        return None
    masks: list[np.ndarray | None] = []
    maps: list[np.ndarray] = []
    n_excluded = 0
    for sample, amap in zip(test.samples, test.maps):
        if sample.label == 1 and sample.mask_path is None:
            n_excluded += 1
            continue
        mask = scorer.mask_for(sample, amap.shape[:2])
        masks.append(mask)
        maps.append(amap)
    shapes = sorted({tuple(int(v) for v in m.shape) for m in maps})
    return {
        "auroc": pixel_auroc(masks, maps),
        "aupro": aupro(masks, maps, fpr_limit=0.3),
        "aupro_fpr_limit": 0.3,
        "n_images": len(maps),
        "n_masks": sum(m is not None for m in masks),
        "n_anomalous_without_mask": n_excluded,
        "map_shapes": [list(s) for s in shapes[:4]],
        "note": PIXEL_NOTE,
    }


def defects_check(
    defects: dict[str, Any], pixel_threshold: float, splits: dict[str, ScoredSplit], scorer: SplitScorer | None = None
) -> dict[str, Any]:
    """Run the defects pipeline (``defects`` = DefectsConfig dict) on every map and count, per
    split and label, how many images get at least one region. With a ``scorer`` (for the
    ground-truth masks), splits with masks also get region-level precision / recall
    (``workbench.region_eval``: a region is a true positive when >= 10 % of it lies on the mask)."""
    from pyimgano_deploy.postprocess.defects import DefectsConfig, extract_defects
    from pyimgano_deploy.workbench.region_eval import evaluate_regions

    config = DefectsConfig.from_dict(defects)
    out: dict[str, Any] = {"pixel_threshold": float(pixel_threshold)}
    for name, split in splits.items():
        counts: dict[str, dict[str, int]] = {}
        preds, gts = [], []
        for sample, amap in zip(split.samples, split.maps):
            key = "normal" if sample.label == 0 else "anomalous"
            res = extract_defects(amap, config, pixel_threshold=pixel_threshold)
            if scorer is not None and not (sample.label == 1 and sample.mask_path is None):
                preds.append(res.mask)
                gts.append(scorer.mask_for(sample, amap.shape[:2]))
            c = counts.setdefault(key, {"n_images": 0, "n_with_regions": 0, "n_regions": 0})
            c["n_images"] += 1
            c["n_with_regions"] += int(len(res.regions) > 0)
            c["n_regions"] += len(res.regions)
        for c in counts.values():
            c["fraction_with_regions"] = c["n_with_regions"] / c["n_images"]  # type: ignore[assignment]
        if any(g is not None for g in gts):
            counts["regions"] = evaluate_regions(preds, gts).to_dict()  # type: ignore[assignment]
        out[name] = counts
    return out

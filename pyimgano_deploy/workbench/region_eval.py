"""Region-level evaluation of defect masks against ground truth (numpy + OpenCV, no torch).

Regions are the 8-connected components of a binary mask, labelled by the defects pipeline's
own ``label_components`` (so evaluation and extraction see the same regions; its
``DefectsResult.mask`` holds exactly the pixels of its regions).

Matching rule (one rule, used everywhere):

* a **predicted region P is a true positive** when at least ``min_overlap`` (default 10 %) of
  its pixels lie on the ground-truth mask: ``|P ∩ GT| >= min_overlap * |P|``; otherwise it is
  a false positive (every region on a normal image is a false positive);
* a **ground-truth component G is detected** when at least one true-positive region overlaps it
  by one pixel or more (``|P ∩ G| > 0``).

Aggregates over a set of images:

* ``precision`` = true-positive regions / predicted regions (``None`` when nothing was predicted);
* ``recall`` = detected GT components / GT components (``None`` when there is no GT component);
* ``f1`` from those two (``None`` when either is undefined or both are 0);
* ``fp_regions_per_normal_image`` = predicted regions on normal images / normal images, where a
  normal image is one whose GT mask is empty (or ``None``); ``normal_images_with_regions``
  counts normal images with at least one region.

Masks of different sizes are not compared: resize the ground truth to the prediction's size
first, e.g. with :func:`resize_nearest`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from pyimgano_deploy.postprocess.defects.steps import label_components as _pipeline_labels

DEFAULT_MIN_OVERLAP = 0.1


def _as_binary(mask: Any, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [H, W] mask, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must be a boolean or numeric mask, got dtype {arr.dtype}")
    return arr != 0


def label_components(mask: Any) -> tuple[np.ndarray, int]:
    """8-connected components of a binary mask: ``(labels int32 [H, W], n)``, background 0,
    components 1..n in raster order of their first pixel (the defects pipeline's labelling)."""
    return _pipeline_labels(_as_binary(mask, "mask").astype(np.uint8))


def resize_nearest(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask to ``shape = (h, w)`` (``uint8`` in {0, 1}),
    OpenCV's ``INTER_NEAREST`` — the same resize the workbench applies to ground truth."""
    m = _as_binary(mask, "mask")
    if len(shape) != 2 or any(int(v) < 1 for v in shape):
        raise ValueError(f"shape must be (h, w) with positive ints, got {shape!r}")
    return cv2.resize(m.astype(np.uint8), (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class ImageRegionMatch:
    """Region counts of one image.

    n_pred: predicted regions; n_tp / n_fp: true / false positive regions (n_tp + n_fp == n_pred);
    n_gt: ground-truth components; n_gt_detected: those hit by a true-positive region;
    normal: the ground-truth mask is empty."""

    n_pred: int
    n_tp: int
    n_fp: int
    n_gt: int
    n_gt_detected: int
    normal: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_overlap(min_overlap: float) -> float:
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float)) or not 0.0 < float(min_overlap) <= 1.0:
        raise ValueError(f"min_overlap must be a fraction in (0, 1], got {min_overlap!r}")
    return float(min_overlap)


def match_regions(pred_mask: Any, gt_mask: Any | None, *, min_overlap: float = DEFAULT_MIN_OVERLAP) -> ImageRegionMatch:
    """Match the regions of ``pred_mask`` to the components of ``gt_mask`` (see the module rule).

    ``gt_mask=None`` means a normal image (an empty ground truth). Both masks must have the same
    shape (ValueError naming both shapes otherwise)."""
    thr = _check_overlap(min_overlap)
    pred = _as_binary(pred_mask, "pred_mask")
    gt = np.zeros(pred.shape, dtype=bool) if gt_mask is None else _as_binary(gt_mask, "gt_mask")
    if gt.shape != pred.shape:
        raise ValueError(f"pred_mask shape {pred.shape} differs from gt_mask shape {gt.shape}; "
                         "resize the ground truth to the map size first (resize_nearest)")
    pred_labels, n_pred = label_components(pred)
    gt_labels, n_gt = label_components(gt)
    if n_pred == 0:
        return ImageRegionMatch(0, 0, 0, n_gt, 0, n_gt == 0)
    area = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)
    on_gt = np.bincount(pred_labels[gt].ravel(), minlength=n_pred + 1)
    tp = on_gt[1:] >= thr * area[1:]
    detected = 0
    if n_gt:
        both = (pred_labels > 0) & (gt_labels > 0)
        tp_pixel = tp[pred_labels[both] - 1]
        detected = int(np.unique(gt_labels[both][tp_pixel]).size)
    n_tp = int(tp.sum())
    return ImageRegionMatch(n_pred, n_tp, n_pred - n_tp, n_gt, detected, n_gt == 0)


@dataclass(frozen=True)
class RegionEval:
    """Aggregated region-level metrics over a set of images (see the module docstring)."""

    n_images: int
    n_normal_images: int
    n_pred: int
    n_tp: int
    n_fp: int
    n_gt: int
    n_gt_detected: int
    precision: float | None
    recall: float | None
    f1: float | None
    fp_regions_per_normal_image: float | None
    fp_regions_per_anomalous_image: float | None
    normal_images_with_regions: int
    min_overlap: float
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RULE = ("predicted region is a true positive when >= {p:g}% of its pixels lie on the ground-truth mask; "
        "a ground-truth component (8-connected) is detected when a true-positive region overlaps it")


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def aggregate(matches: Sequence[ImageRegionMatch], *, min_overlap: float = DEFAULT_MIN_OVERLAP) -> RegionEval:
    """Sum per-image matches into precision, recall, F1 and false positives per image."""
    normal = [m for m in matches if m.normal]
    anomalous = [m for m in matches if not m.normal]
    n_pred = sum(m.n_pred for m in matches)
    n_tp = sum(m.n_tp for m in matches)
    n_gt = sum(m.n_gt for m in matches)
    det = sum(m.n_gt_detected for m in matches)
    precision, recall = _ratio(n_tp, n_pred), _ratio(det, n_gt)
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    return RegionEval(
        n_images=len(matches),
        n_normal_images=len(normal),
        n_pred=n_pred,
        n_tp=n_tp,
        n_fp=n_pred - n_tp,
        n_gt=n_gt,
        n_gt_detected=det,
        precision=precision,
        recall=recall,
        f1=f1,
        fp_regions_per_normal_image=_ratio(sum(m.n_pred for m in normal), len(normal)),
        fp_regions_per_anomalous_image=_ratio(sum(m.n_fp for m in anomalous), len(anomalous)),
        normal_images_with_regions=sum(m.n_pred > 0 for m in normal),
        min_overlap=_check_overlap(min_overlap),
        rule=RULE.format(p=100 * min_overlap),
    )


def evaluate_regions(
    pred_masks: Iterable[Any],
    gt_masks: Iterable[Any | None],
    *,
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> RegionEval:
    """Region-level metrics of paired predicted and ground-truth masks (``None`` = normal image).

    ValueError when the two sequences differ in length or a pair differs in shape."""
    preds, gts = list(pred_masks), list(gt_masks)
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predicted masks but {len(gts)} ground-truth masks")
    matches = []
    for i, (p, g) in enumerate(zip(preds, gts)):
        try:
            matches.append(match_regions(p, g, min_overlap=min_overlap))
        except ValueError as exc:
            raise ValueError(f"image #{i}: {exc}") from None
    return aggregate(matches, min_overlap=min_overlap)

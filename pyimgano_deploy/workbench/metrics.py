"""Evaluation metrics for anomaly detection, numpy + OpenCV only (no scikit-learn at runtime).

Image level: ``image_auroc``, ``average_precision``, ``roc_curve``, ``binary_confusion``,
``f1_at_threshold`` and ``evaluate_image_level`` bundling them.
Pixel level: ``pixel_auroc`` and ``aupro`` (per-region overlap, MVTec AD's definition).

Conventions
-----------
* Label 1 = anomalous (positive), 0 = normal. A prediction is positive when ``score >= threshold``
  (the same rule as ``postprocess.thresholds.apply_threshold``).
* Degenerate inputs never crash: when a metric is undefined it is ``float('nan')``:
  - AUROC / AP / ROC need both classes; with a single class (or no samples) they are NaN
    (AP with no normals would be a trivial 1.0 and is reported as NaN too, to flag the data set);
  - precision is NaN when nothing is predicted positive, recall when there is no positive,
    F1 when there is neither a positive nor a predicted positive;
  - pixel AUROC / AUPRO are NaN when there is no anomalous pixel or no normal pixel.
* Invalid inputs raise ``ValueError`` naming the input (and the image index for pixel metrics):
  length or shape mismatch, labels outside {0, 1}, non-finite scores.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = [
    "image_auroc",
    "average_precision",
    "roc_curve",
    "binary_confusion",
    "f1_at_threshold",
    "evaluate_image_level",
    "pixel_auroc",
    "aupro",
    "MAX_EXACT_PIXELS",
    "DEFAULT_PIXEL_BINS",
]

NAN = float("nan")
#: Above this many pixels in total, pixel metrics switch from one exact global sort to histograms.
MAX_EXACT_PIXELS = 20_000_000
#: Number of score bins used by the histogram (memory-bounded) path of ``pixel_auroc``.
DEFAULT_PIXEL_BINS = 65_536


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _as_labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.size and not np.all(np.isin(arr, (0, 1))):
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name} must contain only 0 (normal) and 1 (anomalous), got values {bad.tolist()}")
    return arr.astype(np.int64)


def _as_scores(s: Any, name: str) -> np.ndarray:
    arr = np.asarray(s, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        idx = np.flatnonzero(~finite)[:5]
        raise ValueError(f"{name} must be finite; non-finite values at indices {idx.tolist()}")
    return arr


def _labels_and_scores(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(y_true, "y_true")
    s = _as_scores(scores, "scores")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} entries but scores has {s.shape[0]}")
    return y, s


def _single_class(y: np.ndarray) -> bool:
    n_pos = int(y.sum())
    return n_pos == 0 or n_pos == y.shape[0]


# --------------------------------------------------------------------------------------------
# counting core: group equal scores, count positives / negatives per group
# --------------------------------------------------------------------------------------------
def _grouped_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in DEcreasing order, with the number of positives / negatives at each."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s_sorted = scores[order]
    pos_sorted = labels[order].astype(np.float64)
    # last index of each run of equal scores
    ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    cum_pos = np.cumsum(pos_sorted)[ends]
    cum_all = (ends + 1).astype(np.float64)
    pos = np.diff(np.r_[0.0, cum_pos])
    neg = np.diff(np.r_[0.0, cum_all - cum_pos])
    return s_sorted[ends], pos, neg


def _auc_from_counts_desc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC from per-group counts ordered by decreasing score (ties within a group count 1/2).

    Equal to the trapezoidal area under the ROC curve (and to the Mann-Whitney U statistic).
    """
    n_pos = float(pos.sum())
    n_neg = float(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    neg_above = np.cumsum(neg) - neg  # negatives with a strictly higher score
    # a positive beats every negative with a lower score: n_neg - neg_above - neg_in_group
    wins = pos * (n_neg - neg_above - neg) + 0.5 * pos * neg
    return float(wins.sum() / (n_pos * n_neg))


# --------------------------------------------------------------------------------------------
# image level
# --------------------------------------------------------------------------------------------
def image_auroc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve (same value as ``sklearn.metrics.roc_auc_score``).

    NaN when ``y_true`` holds a single class (AUROC is undefined without both classes).
    """
    y, s = _labels_and_scores(y_true, scores)
    if _single_class(y):
        return NAN
    _, pos, neg = _grouped_counts(y, s)
    return _auc_from_counts_desc(pos, neg)


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision, step-wise: ``sum_k (R_k - R_{k-1}) * P_k`` over distinct thresholds.

    Same definition and tie handling as ``sklearn.metrics.average_precision_score`` (all samples
    sharing a score enter together). NaN with a single class.
    """
    y, s = _labels_and_scores(y_true, scores)
    if _single_class(y):
        return NAN
    _, pos, neg = _grouped_counts(y, s)
    tp = np.cumsum(pos)
    fp = np.cumsum(neg)
    precision = tp / (tp + fp)
    recall_step = pos / tp[-1]
    return float(np.sum(recall_step * precision))


def precision_recall_curve(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score, thresholds decreasing (recall increasing);
    the same grouping of ties as :func:`average_precision`. Empty arrays with a single class."""
    y, s = _labels_and_scores(y_true, scores)
    if _single_class(y):
        return np.zeros(0), np.zeros(0)
    _, pos, neg = _grouped_counts(y, s)
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    return tp / (tp + fp), tp / tp[-1]


def roc_curve(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score: ``(fpr, tpr, thresholds)``, fpr increasing.

    The first point is ``(0, 0)`` with threshold ``+inf``; thresholds decrease. Unlike scikit-learn,
    collinear points are kept (``drop_intermediate=False``). With a single class the undefined
    axis is all NaN (no exception), so callers can still show "n/a".
    """
    y, s = _labels_and_scores(y_true, scores)
    if s.size == 0:
        return np.zeros(1), np.zeros(1), np.array([np.inf])
    thr, pos, neg = _grouped_counts(y, s)
    tp = np.r_[0.0, np.cumsum(pos)]
    fp = np.r_[0.0, np.cumsum(neg)]
    tpr = tp / tp[-1] if tp[-1] > 0 else np.full(tp.shape, NAN)
    fpr = fp / fp[-1] if fp[-1] > 0 else np.full(fp.shape, NAN)
    return fpr, tpr, np.r_[np.inf, thr]


def binary_confusion(y_true: Any, y_pred: Any) -> dict[str, int]:
    """Confusion counts ``{"tp", "fp", "tn", "fn"}`` (positive = 1 = anomalous)."""
    y = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} entries but y_pred has {p.shape[0]}")
    return {
        "tp": int(np.sum((y == 1) & (p == 1))),
        "fp": int(np.sum((y == 0) & (p == 1))),
        "tn": int(np.sum((y == 0) & (p == 0))),
        "fn": int(np.sum((y == 1) & (p == 0))),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else NAN


def f1_at_threshold(y_true: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """F1, precision, recall and confusion counts when predicting ``score >= threshold``.

    Returns ``{"f1", "precision", "recall", "confusion": {tp, fp, tn, fn}}``; see the module
    docstring for when a value is NaN.
    """
    y, s = _labels_and_scores(y_true, scores)
    thr = float(threshold)
    if math.isnan(thr):
        raise ValueError("threshold must be a number, got NaN")
    conf = binary_confusion(y, (s >= thr).astype(np.int64))
    tp, fp, fn = conf["tp"], conf["fp"], conf["fn"]
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "confusion": conf,
    }


def evaluate_image_level(y_true: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """All image-level metrics at once.

    Keys: ``auroc, ap, f1, precision, recall, confusion{tp,fp,tn,fn}, threshold, n_images,
    n_normal, n_anomalous``. Undefined values are NaN (convert to ``None`` before strict JSON).
    """
    y, s = _labels_and_scores(y_true, scores)
    at_thr = f1_at_threshold(y, s, threshold)
    n_anomalous = int(y.sum())
    return {
        "auroc": image_auroc(y, s),
        "ap": average_precision(y, s),
        "f1": at_thr["f1"],
        "precision": at_thr["precision"],
        "recall": at_thr["recall"],
        "confusion": at_thr["confusion"],
        "threshold": float(threshold),
        "n_images": int(y.shape[0]),
        "n_normal": int(y.shape[0]) - n_anomalous,
        "n_anomalous": n_anomalous,
    }


# --------------------------------------------------------------------------------------------
# pixel level
# --------------------------------------------------------------------------------------------
def _check_pixel_pair(mask: Any, amap: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (mask, map) pair; ``mask=None`` means an all-normal image."""
    m = np.asarray(amap)
    if m.ndim != 2:
        raise ValueError(f"image {index}: anomaly map must be 2-D (H, W), got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.number) or np.issubdtype(m.dtype, np.complexfloating):
        raise ValueError(f"image {index}: anomaly map must be real-valued, got dtype {m.dtype}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"image {index}: anomaly map contains NaN or inf")
    if mask is None:
        g = np.zeros(m.shape, dtype=bool)
    else:
        g_raw = np.asarray(mask)
        if g_raw.shape != m.shape:
            raise ValueError(
                f"image {index}: mask shape {g_raw.shape} does not match anomaly map shape {m.shape}"
            )
        if g_raw.dtype != bool and not np.all((g_raw == 0) | (g_raw == 1)):
            raise ValueError(
                f"image {index}: mask must contain only 0 and 1 (got values "
                f"{np.unique(g_raw)[:5].tolist()}); binarise 0/255 masks with mask > 0"
            )
        g = g_raw.astype(bool)
    return g, m


def _check_pixel_inputs(masks: Sequence[Any], maps: Sequence[Any]) -> None:
    if len(masks) != len(maps):
        raise ValueError(f"got {len(masks)} masks but {len(maps)} anomaly maps")


def _map_range(masks: Sequence[Any], maps: Sequence[Any]) -> tuple[float, float, int, int]:
    """Global (min, max) of the maps and the numbers of anomalous / normal pixels (validates all)."""
    lo, hi, n_pos, n_neg = math.inf, -math.inf, 0, 0
    for i, (g_in, m_in) in enumerate(zip(masks, maps)):
        g, m = _check_pixel_pair(g_in, m_in, i)
        if m.size:
            lo, hi = min(lo, float(m.min())), max(hi, float(m.max()))
        k = int(g.sum())
        n_pos += k
        n_neg += g.size - k
    return lo, hi, n_pos, n_neg


def _bin_index(values: np.ndarray, lo: float, hi: float, n_bins: int) -> np.ndarray:
    """Equal-width bin index in [0, n_bins) of each value; monotone in the value."""
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.int64)
    idx = np.floor((values.astype(np.float64) - lo) * (n_bins / (hi - lo))).astype(np.int64)
    return np.clip(idx, 0, n_bins - 1)


def pixel_auroc(
    masks: Sequence[Any],
    maps: Sequence[Any],
    *,
    max_exact_pixels: int = MAX_EXACT_PIXELS,
    num_bins: int = DEFAULT_PIXEL_BINS,
) -> float:
    """Pixel-level AUROC over all pixels of all images (masks ``{0,1}`` HxW, maps float HxW).

    Up to ``max_exact_pixels`` pixels in total the result is exact (one global sort, equal to
    ``roc_auc_score`` on the flattened arrays). Beyond that, each image is histogrammed into
    ``num_bins`` equal-width bins between the global min and max, so memory stays
    O(num_bins + one image); pixels sharing a bin count as ties (error ≤ the fraction of
    positive/negative pairs sharing a bin, negligible with 65536 bins).
    A mask may be ``None`` for a normal image. NaN if there is no anomalous or no normal pixel.
    """
    _check_pixel_inputs(masks, maps)
    lo, hi, n_pos, n_neg = _map_range(masks, maps)
    if n_pos == 0 or n_neg == 0:
        return NAN
    if n_pos + n_neg <= max_exact_pixels:
        pairs = [_check_pixel_pair(g, m, i) for i, (g, m) in enumerate(zip(masks, maps))]
        labels = np.concatenate([g.ravel() for g, _ in pairs])
        scores = np.concatenate([m.ravel().astype(np.float64) for _, m in pairs])
        _, pos, neg = _grouped_counts(labels, scores)
        return _auc_from_counts_desc(pos, neg)
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    pos_hist = np.zeros(num_bins, dtype=np.float64)
    neg_hist = np.zeros(num_bins, dtype=np.float64)
    for i, (g_in, m_in) in enumerate(zip(masks, maps)):
        g, m = _check_pixel_pair(g_in, m_in, i)
        idx = _bin_index(m, lo, hi, num_bins)
        pos_hist += np.bincount(idx[g], minlength=num_bins)
        neg_hist += np.bincount(idx[~g], minlength=num_bins)
    return _auc_from_counts_desc(pos_hist[::-1], neg_hist[::-1])


def _region_weights(g: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-pixel weight 1/|region| inside GT regions (8-connectivity), 0 elsewhere; region count."""
    if not g.any():
        return np.zeros(g.shape, dtype=np.float64), 0
    n_labels, labels = cv2.connectedComponents(g.astype(np.uint8), connectivity=8)
    sizes = np.bincount(labels.ravel(), minlength=n_labels).astype(np.float64)
    inv = np.zeros(n_labels, dtype=np.float64)
    inv[1:] = 1.0 / sizes[1:]
    return inv[labels], n_labels - 1


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under (x, y) from x[0] to ``x_max`` (x non-decreasing), interpolating
    ``y`` at ``x_max`` when it falls between two points (as MVTec AD's ``trapezoid``)."""
    keep = x <= x_max
    xs, ys = x[keep], y[keep]
    area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs)))
    if xs[-1] < x_max:
        nxt = int(np.searchsorted(x, x_max, side="right"))
        if nxt < x.size:
            x0, y0, x1, y1 = xs[-1], ys[-1], x[nxt], y[nxt]
            y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        else:  # the curve stops before x_max: extend flat
            y_at = ys[-1]
        area += 0.5 * (ys[-1] + y_at) * (x_max - xs[-1])
    return area


def _pro_curve_exact(masks: Sequence[Any], maps: Sequence[Any], n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at every distinct score, one global sort (MVTec AD's ``compute_pro``)."""
    scores, fp_w, pro_w, n_regions = [], [], [], 0
    for i, (g_in, m_in) in enumerate(zip(masks, maps)):
        g, m = _check_pixel_pair(g_in, m_in, i)
        w, r = _region_weights(g)
        n_regions += r
        scores.append(m.ravel().astype(np.float64))
        fp_w.append((~g).ravel().astype(np.float64))
        pro_w.append(w.ravel())
    s = np.concatenate(scores)
    order = np.argsort(s, kind="mergesort")[::-1]
    s_sorted = s[order]
    fpr = np.cumsum(np.concatenate(fp_w)[order]) / n_neg
    pro = np.cumsum(np.concatenate(pro_w)[order]) / n_regions
    ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    return np.r_[0.0, fpr[ends]], np.r_[0.0, pro[ends]]


def _pro_curve_binned(
    masks: Sequence[Any], maps: Sequence[Any], n_neg: int, lo: float, hi: float, num_thresholds: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at ``num_thresholds`` evenly spaced thresholds in [min, max], image by image."""
    thresholds = np.linspace(lo, hi, num_thresholds)
    neg_hist = np.zeros(num_thresholds, dtype=np.float64)
    pro_hist = np.zeros(num_thresholds, dtype=np.float64)
    n_regions = 0
    for i, (g_in, m_in) in enumerate(zip(masks, maps)):
        g, m = _check_pixel_pair(g_in, m_in, i)
        w, r = _region_weights(g)
        n_regions += r
        # index of the largest threshold <= value: the pixel is "on" for thresholds 0..idx
        idx = np.searchsorted(thresholds, m.ravel().astype(np.float64), side="right") - 1
        idx = np.clip(idx, 0, num_thresholds - 1)
        neg_hist += np.bincount(idx[~g.ravel()], minlength=num_thresholds)
        pro_hist += np.bincount(idx, weights=w.ravel(), minlength=num_thresholds)
    # count of pixels >= thresholds[k] = reverse cumulative sum; traverse thresholds high → low
    fpr = np.cumsum(neg_hist[::-1]) / n_neg
    pro = np.cumsum(pro_hist[::-1]) / n_regions
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def aupro(
    masks: Sequence[Any],
    maps: Sequence[Any],
    *,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
    max_exact_pixels: int = MAX_EXACT_PIXELS,
) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by ``fpr_limit``.

    MVTec AD's definition: the ground-truth regions are the connected components (8-connectivity)
    of every mask. At a threshold t, PRO(t) = mean over *all regions of all images* of
    |region ∩ {map >= t}| / |region|, and FPR(t) = fraction of normal pixels (all images) with
    map >= t. The (FPR, PRO) curve is integrated with the trapezoid rule from 0 to ``fpr_limit``
    (PRO interpolated linearly at ``fpr_limit``) and normalised, so a perfect map gives 1.0.

    ``num_thresholds=None`` evaluates the curve at every distinct map value (exact, one global
    sort) while the total pixel count is <= ``max_exact_pixels``; beyond that, or when
    ``num_thresholds`` is an int, it uses that many (default 4096 past the limit) evenly spaced
    thresholds between the global min and max, accumulated image by image (bounded memory).
    A mask may be ``None`` for a normal image. NaN when there is no anomalous or no normal pixel.
    """
    if not (0.0 < float(fpr_limit) <= 1.0):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds is not None and num_thresholds < 2:
        raise ValueError(f"num_thresholds must be >= 2 or None, got {num_thresholds}")
    _check_pixel_inputs(masks, maps)
    lo, hi, n_pos, n_neg = _map_range(masks, maps)
    if n_pos == 0 or n_neg == 0:
        return NAN
    if num_thresholds is None and n_pos + n_neg <= max_exact_pixels:
        fpr, pro = _pro_curve_exact(masks, maps, n_neg)
    else:
        fpr, pro = _pro_curve_binned(masks, maps, n_neg, lo, hi, num_thresholds or 4096)
    fpr = np.clip(fpr, 0.0, 1.0)  # cumulative sums may overshoot 1 by rounding
    pro = np.clip(pro, 0.0, 1.0)
    return _trapezoid_to(fpr, pro, float(fpr_limit)) / float(fpr_limit)

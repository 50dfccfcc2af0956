"""Self-contained HTML evaluation report (one file, inline SVG plots and base64 PNG images, no JS).

``write_report_html`` renders: a summary of the metrics and of the thresholds with their
provenance, the confusion matrix at the threshold, the ROC curve, score histograms of normal vs
anomalous images with the threshold line, and a gallery of the worst cases (highest-scoring
normals and lowest-scoring anomalies) with their anomaly maps blended on the image.
``select_worst_cases`` picks which images to show.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from pyimgano_deploy.workbench.metrics import binary_confusion, f1_at_threshold, image_auroc, precision_recall_curve, roc_curve
from pyimgano_deploy.workbench.svg_plots import HistGroup, LineSeries, histogram_plot, line_plot

__all__ = ["write_report_html", "select_worst_cases", "overlay_anomaly_map", "png_base64"]

_WORST_CASE_KEYS = ("name", "score", "y_true", "image_rgb_u8", "anomaly_map")
_THRESHOLD_COLUMNS = ("value", "method", "quantile", "source_split", "n_images", "n_values", "code_path")
_CSS = """
body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 4px} h3{font-size:14px;margin:14px 0 6px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:12px;margin-bottom:16px}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.na{color:#999;font-style:italic}
.plots{display:flex;flex-wrap:wrap;gap:16px}
.plots svg{background:#fff;border:1px solid #ddd}
.gallery{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;padding:8px;font-size:12px;width:344px}
.card .imgs{display:flex;gap:4px} .card figure{margin:0;text-align:center;color:#666}
.card img{width:168px;height:auto;image-rendering:pixelated;display:block}
.tag{display:inline-block;padding:1px 6px;border-radius:3px;color:#fff;font-weight:bold}
.tag.fp,.tag.fn{background:#d62728} .tag.ok{background:#2ca02c} .tag.unk{background:#888}
.name{word-break:break-all;font-family:monospace;margin:4px 0}
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _fmt(value: Any) -> str:
    """Human formatting of one scalar as escaped HTML; None/NaN → 'n/a'."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if _is_missing(value):
        return "<span class='na'>n/a</span>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return _esc(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return _esc(f"{value:.4g}")
        return _esc(f"{value:.4f}")
    if isinstance(value, Mapping):
        return ", ".join(f"{_esc(k)}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return _esc(value)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts → ('image / auroc', value) rows; a dict of scalars two levels deep stays inline."""
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and not prefix:
            rows += _flatten(value, prefix=f"{name} / ")
        else:
            rows.append((name, value))
    return rows


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = [(k, v) for k, v in _flatten(metrics) if not k.endswith(DEFECT_TYPES_KEY)]
    if not rows:
        return "<p class='na'>no metrics</p>"
    body = "".join(
        f"<tr><th>{_esc(k)}</th><td class='{'num' if _is_num(v) else ''}'>{_fmt(v)}</td></tr>" for k, v in rows
    )
    return f"<table class='metrics'><tr><th>metric</th><th>value</th></tr>{body}</table>"


DEFECT_TYPES_KEY = "by_defect_type"


def _defect_types_table(metrics: Mapping[str, Any]) -> str:
    """Per defect type: images, detected at the image threshold, recall, and the missed files."""
    by_type = (metrics.get("image") or {}).get(DEFECT_TYPES_KEY) if isinstance(metrics.get("image"), Mapping) else None
    if not by_type:
        return "<p class='na'>no anomalous test images</p>"
    rows = []
    for name, e in by_type.items():
        missed = [Path(str(m)).name for m in e.get("missed", [])]
        shown = ", ".join(missed[:8]) + (f" … (+{len(missed) - 8})" if len(missed) > 8 else "")
        rows.append(f"<tr><th>{_esc(name)}</th><td class='num'>{e['n']}</td><td class='num'>{e['detected']}</td>"
                    f"<td class='num'>{_fmt(e.get('recall'))}</td><td>{_esc(shown) or '–'}</td></tr>")
    head = "<tr><th>defect type</th><th>images</th><th>detected</th><th>recall</th><th>missed</th></tr>"
    return f"<table class='metrics'>{head}{''.join(rows)}</table>"


def _threshold_record(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if hasattr(value, "to_dict"):
        return dict(value.to_dict())
    if isinstance(value, Mapping):
        return dict(value)
    if _is_num(value):
        return {"value": float(value)}
    raise ValueError(f"thresholds values must be dicts, ThresholdCalibration, numbers or None; got {type(value)}")


def _thresholds_table(thresholds: Mapping[str, Any]) -> str:
    if not thresholds:
        return "<p class='na'>no thresholds</p>"
    head = "".join(f"<th>{_esc(c.replace('_', ' '))}</th>" for c in ("threshold",) + _THRESHOLD_COLUMNS)
    head += "<th>score summary</th><th>other</th>"
    rows = []
    for name, raw in thresholds.items():
        rec = _threshold_record(raw)
        if rec is None:
            rows.append(f"<tr><th>{_esc(name)}</th><td colspan='{len(_THRESHOLD_COLUMNS) + 2}' class='na'>"
                        "not calibrated</td></tr>")
            continue
        cells = "".join(
            f"<td class='{'num' if _is_num(rec.get(c)) else ''}'>{_fmt(rec.get(c))}</td>" for c in _THRESHOLD_COLUMNS
        )
        summary = rec.get("score_summary")
        other = {k: v for k, v in rec.items() if k not in _THRESHOLD_COLUMNS and k != "score_summary"}
        cells += f"<td>{_fmt(summary) if summary else _fmt(None)}</td><td>{_fmt(other) if other else ''}</td>"
        rows.append(f"<tr><th>{_esc(name)}</th>{cells}</tr>")
    return f"<table class='thresholds'><tr>{head}</tr>{''.join(rows)}</table>"


def _confusion_table(y: np.ndarray, s: np.ndarray, threshold: float | None) -> str:
    if threshold is None or y.size == 0:
        return "<p class='na'>no threshold: confusion matrix n/a</p>"
    c = binary_confusion(y, (s >= threshold).astype(np.int64))
    return (
        "<table class='confusion'><tr><th></th><th>predicted normal</th><th>predicted anomalous</th></tr>"
        f"<tr><th>normal</th><td class='num'>{c['tn']} (TN)</td><td class='num'>{c['fp']} (FP)</td></tr>"
        f"<tr><th>anomalous</th><td class='num'>{c['fn']} (FN)</td><td class='num'>{c['tp']} (TP)</td></tr>"
        "</table>"
    )


def select_worst_cases(
    names: Sequence[str], y_true: Any, scores: Any, threshold: float | None, k: int = 4
) -> list[int]:
    """Indices of the images worth looking at: up to ``k`` normals with the highest scores (so
    false positives, ``score >= threshold``, come first), then up to ``k`` anomalies with the
    lowest scores (false negatives first). Ties are broken by name, then index. ``threshold`` only
    documents the FP/FN split: the order is by score either way."""
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not (len(names) == y.size == s.size):
        raise ValueError(f"names ({len(names)}), y_true ({y.size}) and scores ({s.size}) must have the same length")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    finite = np.isfinite(s)
    normals = [i for i in range(s.size) if y[i] == 0 and finite[i]]
    anomalies = [i for i in range(s.size) if y[i] == 1 and finite[i]]
    normals.sort(key=lambda i: (-s[i], str(names[i]), i))
    anomalies.sort(key=lambda i: (s[i], str(names[i]), i))
    return normals[:k] + anomalies[:k]


def _as_rgb_u8(image: Any, where: str) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"{where}: image_rgb_u8 must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{where}: image_rgb_u8 must be HxWx3 (or HxW), got shape {img.shape}")
    return np.ascontiguousarray(img)


def overlay_anomaly_map(image_rgb_u8: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """JET heat map of the min-max normalised map (resized to the image) blended on the image.

    Returns HxWx3 uint8 RGB. A constant map is drawn as its lowest colour (no division by zero).
    """
    img = _as_rgb_u8(image_rgb_u8, "overlay")
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim != 2:
        raise ValueError(f"overlay: anomaly_map must be 2-D (H, W), got shape {amap.shape}")
    amap = np.nan_to_num(amap, nan=0.0, posinf=0.0, neginf=0.0)
    h, w = img.shape[:2]
    if amap.shape != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = float(amap.min()), float(amap.max())
    norm = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    heat_bgr = cv2.applyColorMap(np.round(norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    img_bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    blend = cv2.addWeighted(img_bgr, 1.0 - alpha, heat_bgr, alpha, 0.0)
    return cv2.cvtColor(blend, cv2.COLOR_BGR2RGB)


def png_base64(image_rgb_u8: np.ndarray) -> str:
    """PNG-encode an RGB uint8 image (via cv2.imencode) as a base64 string."""
    img = _as_rgb_u8(image_rgb_u8, "png_base64")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"png_base64: cv2.imencode failed for an image of shape {img.shape}")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _case_status(y: int, score: float, threshold: float | None) -> tuple[str, str]:
    if threshold is None or not math.isfinite(score):
        return "unk", "normal" if y == 0 else "anomalous"
    predicted = score >= threshold
    if y == 0:
        return ("fp", "false positive") if predicted else ("ok", "true negative")
    return ("ok", "true positive") if predicted else ("fn", "false negative")


def _case_card(case: Mapping[str, Any], index: int, threshold: float | None) -> str:
    missing = [k for k in _WORST_CASE_KEYS if k not in case]
    if missing:
        raise ValueError(f"worst_cases[{index}] is missing keys {missing}; expected {list(_WORST_CASE_KEYS)}")
    img = _as_rgb_u8(case["image_rgb_u8"], f"worst_cases[{index}] ({case['name']})")
    score = float(case["score"]) if case["score"] is not None else float("nan")
    css, status = _case_status(int(case["y_true"]), score, threshold)
    figures = [f"<figure><img alt='image' src='data:image/png;base64,{png_base64(img)}'/>image</figure>"]
    caption = "no anomaly map"
    if case["anomaly_map"] is not None:
        amap = np.asarray(case["anomaly_map"], dtype=np.float64)
        over = overlay_anomaly_map(img, amap)
        figures.append(f"<figure><img alt='anomaly map overlay' src='data:image/png;base64,{png_base64(over)}'/>"
                       "map overlay</figure>")
        finite = amap[np.isfinite(amap)]
        rng = f"{finite.min():.4g} – {finite.max():.4g}" if finite.size else "n/a"
        caption = f"map min–max normalised per image (range {_esc(rng)})"
    return (
        "<div class='card'>"
        f"<div><span class='tag {css}'>{_esc(status)}</span> score <b>{_fmt(score)}</b></div>"
        f"<div class='name'>{_esc(case['name'])}</div>"
        f"<div class='imgs'>{''.join(figures)}</div><div class='na'>{caption}</div></div>"
    )


def _gallery(worst_cases: Sequence[Mapping[str, Any]], threshold: float | None) -> str:
    if not worst_cases:
        return "<p class='na'>no cases selected</p>"
    normals = [(i, c) for i, c in enumerate(worst_cases) if int(c.get("y_true", 0)) == 0]
    anomalies = [(i, c) for i, c in enumerate(worst_cases) if int(c.get("y_true", 0)) != 0]
    parts = []
    for heading, group in (
        ("Highest-scoring normal images (false positives first)", normals),
        ("Lowest-scoring anomalous images (false negatives first)", anomalies),
    ):
        if group:
            cards = "".join(_case_card(c, i, threshold) for i, c in group)
            parts.append(f"<h3>{_esc(heading)}</h3><div class='gallery'>{cards}</div>")
    return "".join(parts)


def _loss_plot(history: Sequence[Mapping[str, Any]]) -> str:
    epochs = [float(h["epoch"]) for h in history]
    series = [LineSeries(epochs, [float(h["loss"]) for h in history], "training loss", color="#1f77b4")]
    val = [float("nan") if h.get("validation") is None else float(h["validation"]) for h in history]
    if any(math.isfinite(v) for v in val):
        series.append(LineSeries(epochs, val, "calibration mean score", color="#ff7f0e", dash="4 3"))
    return line_plot(series, title="Training", xlabel="epoch", ylabel="loss", legend_corner="top-right")


def _pr_plot(y: np.ndarray, s: np.ndarray, threshold: float | None) -> str:
    """Precision–recall curve with the operating point (the threshold's precision and recall) marked."""
    precision, recall = precision_recall_curve(y, s)
    series = [LineSeries(recall, precision, "precision–recall", color="#1f77b4")]
    note = None if precision.size else "n/a: needs normal and anomalous images"
    if threshold is not None and precision.size:
        at = f1_at_threshold(y, s, threshold)
        if math.isfinite(at["precision"]) and math.isfinite(at["recall"]):
            r, p = at["recall"], at["precision"]
            series.append(LineSeries([r, r], [0.0, p], f"threshold: P {p:.3f}, R {r:.3f}", color="#d62728", dash="3 3", width=1.5))
    return line_plot(series, title="Precision–recall (image level)", xlabel="recall", ylabel="precision",
                     xlim=(0.0, 1.0), ylim=(0.0, 1.0), legend_corner="bottom-left", note=note)


def write_report_html(
    path: str | Path,
    *,
    title: str,
    metrics: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    y_true: Any,
    scores: Any,
    threshold: float | None,
    worst_cases: Sequence[Mapping[str, Any]],
    training: Sequence[Mapping[str, Any]] | None = None,
) -> Path:
    """Write one self-contained HTML report to ``path`` (parents created) and return its path.

    ``metrics``: flat or nested dict (e.g. ``{"image": {...}, "pixel": {...}}``), NaN/None shown
    as "n/a". ``thresholds``: name → ThresholdCalibration / its dict / number / None.
    ``y_true``/``scores``: image labels and scores of the evaluated split (finite scores).
    ``threshold``: the image threshold drawn on the histogram (None/NaN: no line, no FP/FN).
    ``worst_cases``: dicts with ``name, score, y_true, image_rgb_u8`` (HxWx3 uint8 RGB) and
    ``anomaly_map`` (HxW float, any size, or None) — see ``select_worst_cases``.
    ``training``: a trained detector's epoch records (``epoch``, ``loss``, optional
    ``validation``), drawn as the loss curve.
    """
    y = np.asarray(y_true).ravel().astype(np.int64)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.size != s.size:
        raise ValueError(f"y_true has {y.size} entries but scores has {s.size}")
    thr = None if threshold is None or not math.isfinite(float(threshold)) else float(threshold)

    auroc = image_auroc(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    auroc_txt = "n/a" if math.isnan(auroc) else f"{auroc:.4f}"
    roc_svg = line_plot(
        [
            LineSeries([0, 1], [0, 1], "chance", color="#999999", dash="4 4", width=1.0),
            LineSeries(fpr, tpr, f"ROC (AUROC = {auroc_txt})", color="#1f77b4"),
        ],
        title="ROC curve (image level)",
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
        note="n/a: needs normal and anomalous images" if math.isnan(auroc) else None,
    )
    hist_svg = histogram_plot(
        [HistGroup(s[y == 0], "normal", "#1f77b4"), HistGroup(s[y == 1], "anomalous", "#ff7f0e")],
        title="Image scores",
        xlabel="anomaly score",
        ylabel="images",
        bins=int(np.clip(np.sqrt(max(s.size, 1)) * 2, 10, 40)),
        vline=thr,
        vline_label="threshold",
    )
    plots = roc_svg + _pr_plot(y, s, thr) + hist_svg + (_loss_plot(training) if training else "")
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    n_anom = int((y == 1).sum())
    meta = (
        f"generated {created} · {y.size} images ({y.size - n_anom} normal, {n_anom} anomalous) · "
        f"image threshold {_fmt(thr)} (score ≥ threshold → anomalous)"
    )
    doc = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1><div class='meta'>{meta}</div>"
        f"<h2>Metrics</h2>{_metrics_table(metrics)}"
        f"<h2>Thresholds and provenance</h2>{_thresholds_table(thresholds)}"
        f"<h2>Confusion matrix at the image threshold</h2>{_confusion_table(y, s, thr)}"
        f"<h2>Defect types at the image threshold</h2>{_defect_types_table(metrics)}"
        f"<h2>Plots</h2><div class='plots'>{plots}</div>"
        f"<h2>Worst cases</h2>{_gallery(worst_cases, thr)}"
        "</body></html>\n"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out

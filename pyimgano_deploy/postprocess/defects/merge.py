"""Merge nearby regions — in the mask, not only in the list.

Two components are "near" when the number of background pixels between them,
``gap = (Euclidean distance between their nearest pixel centres) - 1``, is at most
``merge_gap_px``. Near components are grouped (transitively, Kruskal over the pair gaps in a
fixed order); for every link used, the mask is bridged:

* a 1-px 8-connected line between the two nearest pixels (guarantees one connected region), and
* a closing with an elliptical kernel a little wider than the gap, kept only inside a band
  around that line (gives the bridge a body without reshaping the rest of either region).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .regions import Component, component_points
from .steps import morph_kernel


def _candidate_pairs(comps: list[Component], limit: float) -> list[tuple[int, int]]:
    """Pairs (i < j) whose boxes are within ``limit`` (pixel-centre distance, a lower bound of
    the distance between their pixels), by an x-sorted sweep."""
    if len(comps) < 2:
        return []
    boxes = np.array([c.bbox for c in comps], dtype=np.int64)
    x0, y0, x1, y1 = boxes.T
    order = np.lexsort((np.arange(len(comps)), x0))
    sorted_x0 = x0[order]
    pairs: list[tuple[int, int]] = []
    for pos, a in enumerate(order.tolist()):
        end = int(np.searchsorted(sorted_x0, x1[a] - 1 + limit, side="right"))
        cand = order[pos + 1:end]
        if cand.size == 0:
            continue
        dx = np.maximum(0, np.maximum(x0[cand] - (x1[a] - 1), x0[a] - (x1[cand] - 1)))
        dy = np.maximum(0, np.maximum(y0[cand] - (y1[a] - 1), y0[a] - (y1[cand] - 1)))
        for b in cand[np.hypot(dx, dy) <= limit].tolist():
            pairs.append((min(a, b), max(a, b)))
    return pairs


def _nearest_pair(pa: np.ndarray, pb: np.ndarray) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Nearest points between two boundary point sets: (distance, point of a, point of b)."""
    best = (math.inf, (0, 0), (0, 0))
    chunk = max(1, (1 << 20) // max(1, len(pb)))
    fb = pb.astype(np.float64)
    for s in range(0, len(pa), chunk):
        fa = pa[s:s + chunk].astype(np.float64)
        d2 = ((fa[:, None, :] - fb[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d2)), d2.shape)
        d = math.sqrt(float(d2[i, j]))
        if d < best[0]:
            best = (d, (int(pa[s + i][0]), int(pa[s + i][1])), (int(pb[j][0]), int(pb[j][1])))
    return best


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def merge_links(labels: np.ndarray, comps: list[Component], gap_px: int) -> list[tuple[int, int, float, tuple[int, int], tuple[int, int]]]:
    """The links (i, j, gap, point_i, point_j) that join near components, i/j indexing ``comps``.

    Deterministic: candidate pairs sorted by (distance, i, j), Kruskal keeps only links that join
    two different groups (a spanning forest)."""
    limit = gap_px + 1 + 1e-9
    points: dict[int, np.ndarray] = {}
    candidates = []
    for i, j in _candidate_pairs(comps, limit):
        if i not in points:
            points[i] = component_points(labels, comps[i])
        if j not in points:
            points[j] = component_points(labels, comps[j])
        d, pi, pj = _nearest_pair(points[i], points[j])
        if d <= limit:
            candidates.append((d, i, j, pi, pj))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    parent = list(range(len(comps)))
    links = []
    for d, i, j, pi, pj in candidates:
        ri, rj = _find(parent, i), _find(parent, j)
        if ri == rj:
            continue
        parent[max(ri, rj)] = min(ri, rj)
        links.append((i, j, d - 1.0, pi, pj))
    return links


def bridge(out: np.ndarray, pi: tuple[int, int], pj: tuple[int, int], gap: float) -> None:
    """Bridge, in place, the gap between ``pi`` and ``pj`` (x, y) in ``out`` (see module docstring)."""
    k = (int(math.ceil(gap)) + 2) | 1
    h, w = out.shape
    pad = 2 * k
    x0, x1 = max(0, min(pi[0], pj[0]) - pad), min(w, max(pi[0], pj[0]) + pad + 1)
    y0, y1 = max(0, min(pi[1], pj[1]) - pad), min(h, max(pi[1], pj[1]) + pad + 1)
    crop = np.ascontiguousarray(out[y0:y1, x0:x1])
    a = (pi[0] - x0, pi[1] - y0)
    b = (pj[0] - x0, pj[1] - y0)
    band = np.zeros_like(crop)
    cv2.line(band, a, b, 1, thickness=k, lineType=cv2.LINE_8)
    padded = cv2.copyMakeBorder(crop, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, morph_kernel(k, "ellipse"))[k:-k, k:-k]
    crop = crop | (closed & band)
    cv2.line(crop, a, b, 1, thickness=1, lineType=cv2.LINE_8)
    out[y0:y1, x0:x1] = crop


def merge_nearby(mask: np.ndarray, labels: np.ndarray, comps: list[Component], gap_px: int) -> np.ndarray:
    """The mask with every pair of near components bridged (uint8 {0, 1})."""
    out = np.ascontiguousarray(mask, dtype=np.uint8).copy()
    for _i, _j, gap, pi, pj in merge_links(labels, comps, gap_px):
        bridge(out, pi, pj, gap)
    return out

"""Regions: measurement of connected components, filters, deterministic order.

Coordinates: ``x`` is the column, ``y`` the row. Boxes are ``(x0, y0, x1, y1)`` with the start
inclusive and the end exclusive (pixel ``x0`` is in the region's box, pixel ``x1`` is not), so
``w = x1 - x0`` and ``h = y1 - y0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np

from .config import DefectsConfig

_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.int32)


@dataclass(frozen=True)
class Region:
    """One defect region.

    id: position in the deterministic order (score_max desc, area desc, top y, left x), 0..n-1.
    bbox_xyxy: ``(x0, y0, x1, y1)`` in anomaly-map pixels, start inclusive / end exclusive.
    bbox_xyxy_image: the same box scaled to the image size given to ``extract_defects``
        (``x * W_img / W_map``; floats), or equal to ``bbox_xyxy`` when no image size was given.
    area: pixel count in the mask (bridges added by merging included).
    centroid: ``(x, y)`` mean pixel position in map pixels.
    score_max / score_mean: max / mean of the raw (unsmoothed) anomaly map over the region.
    fill_ratio: area / bbox area. aspect_ratio: max(w, h) / min(w, h) of the bbox.
    solidity: area / area of the convex hull of the region's pixel squares (1.0 for a box).
    merged_from: indices (0-based, raster order of first pixel) of the connected components
        found before merging that make up this region; one index for an unmerged region.
    """

    id: int
    bbox_xyxy: tuple[int, int, int, int]
    bbox_xyxy_image: tuple[float, float, float, float]
    area: int
    centroid: tuple[float, float]
    score_max: float
    score_mean: float
    fill_ratio: float
    aspect_ratio: float
    solidity: float
    merged_from: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": int(self.id),
            "bbox_xyxy": [int(v) for v in self.bbox_xyxy],
            "bbox_xyxy_image": [float(v) for v in self.bbox_xyxy_image],
            "area": int(self.area),
            "centroid": [float(v) for v in self.centroid],
            "score_max": float(self.score_max),
            "score_mean": float(self.score_mean),
            "fill_ratio": float(self.fill_ratio),
            "aspect_ratio": float(self.aspect_ratio),
            "solidity": float(self.solidity),
            "merged_from": [int(v) for v in self.merged_from],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Region":
        required = ("id", "bbox_xyxy", "area", "centroid", "score_max", "score_mean")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"region record is missing {missing}; got keys {sorted(data)}")
        bbox = tuple(int(v) for v in data["bbox_xyxy"])
        return cls(
            id=int(data["id"]),
            bbox_xyxy=bbox,  # type: ignore[arg-type]
            bbox_xyxy_image=tuple(float(v) for v in data.get("bbox_xyxy_image", bbox)),  # type: ignore[arg-type]
            area=int(data["area"]),
            centroid=tuple(float(v) for v in data["centroid"]),  # type: ignore[arg-type]
            score_max=float(data["score_max"]),
            score_mean=float(data["score_mean"]),
            fill_ratio=float(data.get("fill_ratio", 0.0)),
            aspect_ratio=float(data.get("aspect_ratio", 1.0)),
            solidity=float(data.get("solidity", 0.0)),
            merged_from=[int(v) for v in data.get("merged_from", [])],
        )


@dataclass(frozen=True)
class Component:
    """Measurements of one labelled component (internal, before ids are assigned)."""

    label: int
    bbox: tuple[int, int, int, int]
    area: int
    centroid: tuple[float, float]
    score_max: float
    score_mean: float
    first_index: int  # raster index of the first pixel: a unique, position-only tie-break

    @property
    def fill_ratio(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return self.area / float((x1 - x0) * (y1 - y0))

    @property
    def aspect_ratio(self) -> float:
        x0, y0, x1, y1 = self.bbox
        w, h = x1 - x0, y1 - y0
        return max(w, h) / float(min(w, h))

    def sort_key(self) -> tuple[float, int, int, int, int]:
        return (-self.score_max, -self.area, self.bbox[1], self.bbox[0], self.first_index)


def measure_components(labels: np.ndarray, n: int, score_map: np.ndarray) -> list[Component]:
    """Stats of components 1..n of ``labels`` with scores from ``score_map`` (vectorised)."""
    if n == 0:
        return []
    h, w = labels.shape
    flat = labels.ravel()
    idx = np.flatnonzero(flat > 0)
    lab = flat[idx]
    vals = score_map.ravel()[idx].astype(np.float64)
    ys, xs = np.divmod(idx, w)
    area = np.bincount(lab, minlength=n + 1)
    sums = np.bincount(lab, weights=vals, minlength=n + 1)
    xsum = np.bincount(lab, weights=xs.astype(np.float64), minlength=n + 1)
    ysum = np.bincount(lab, weights=ys.astype(np.float64), minlength=n + 1)
    x0 = np.full(n + 1, w, dtype=np.int64)
    y0 = np.full(n + 1, h, dtype=np.int64)
    x1 = np.zeros(n + 1, dtype=np.int64)
    y1 = np.zeros(n + 1, dtype=np.int64)
    smax = np.full(n + 1, -np.inf, dtype=np.float64)
    np.minimum.at(x0, lab, xs)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(x1, lab, xs + 1)
    np.maximum.at(y1, lab, ys + 1)
    np.maximum.at(smax, lab, vals)
    present, first = np.unique(lab, return_index=True)
    first_index = np.zeros(n + 1, dtype=np.int64)
    first_index[present] = idx[first]
    out = []
    for k in range(1, n + 1):
        if area[k] == 0:
            continue
        out.append(Component(
            label=k,
            bbox=(int(x0[k]), int(y0[k]), int(x1[k]), int(y1[k])),
            area=int(area[k]),
            centroid=(float(xsum[k] / area[k]), float(ysum[k] / area[k])),
            score_max=float(smax[k]),
            score_mean=float(sums[k] / area[k]),
            first_index=int(first_index[k]),
        ))
    return out


def component_points(labels: np.ndarray, comp: Component, *, all_contours: bool = True) -> np.ndarray:
    """Boundary pixels ``(x, y)`` (int32 ``[k, 2]``, map coordinates) of one component.

    With ``all_contours`` the boundaries of holes are included too (needed for nearest-pixel
    distances, where another region may sit inside a hole)."""
    x0, y0, x1, y1 = comp.bbox
    crop = (labels[y0:y1, x0:x1] == comp.label).astype(np.uint8)
    mode = cv2.RETR_LIST if all_contours else cv2.RETR_EXTERNAL
    contours, _ = cv2.findContours(crop, mode, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours], axis=0).astype(np.int32)
    return pts + np.array([x0, y0], dtype=np.int32)


def component_solidity(labels: np.ndarray, comp: Component) -> float:
    """area / area of the convex hull of the component's pixel squares (in (0, 1])."""
    pts = component_points(labels, comp, all_contours=False)
    corners = (pts[:, None, :] + _CORNERS[None, :, :]).reshape(-1, 1, 2)
    hull = cv2.convexHull(corners)
    hull_area = float(cv2.contourArea(hull))
    if hull_area <= 0.0:
        return 1.0
    return float(min(1.0, comp.area / hull_area))


def score_floor(absolute: float | None, ratio: float | None, threshold: float) -> float | None:
    if absolute is not None:
        return absolute
    if ratio is not None:
        return ratio * threshold
    return None


def passes_filters(labels: np.ndarray, comp: Component, config: DefectsConfig, threshold: float) -> bool:
    """Whether a component survives every filter that ``config`` turns on."""
    if config.min_area and comp.area < config.min_area:
        return False
    floor_max = score_floor(config.min_score_max, config.min_score_max_ratio, threshold)
    if floor_max is not None and comp.score_max < floor_max:
        return False
    floor_mean = score_floor(config.min_score_mean, config.min_score_mean_ratio, threshold)
    if floor_mean is not None and comp.score_mean < floor_mean:
        return False
    if config.min_fill_ratio is not None and comp.fill_ratio < config.min_fill_ratio:
        return False
    if config.max_aspect_ratio is not None and comp.aspect_ratio > config.max_aspect_ratio:
        return False
    if config.min_solidity is not None and component_solidity(labels, comp) < config.min_solidity:
        return False
    return True


def scale_box(bbox: tuple[int, int, int, int], map_size: tuple[int, int],
              image_size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    """Map-space box → image-space box (floats); unchanged without an image size."""
    if image_size is None:
        return tuple(float(v) for v in bbox)  # type: ignore[return-value]
    mh, mw = map_size
    ih, iw = image_size
    x0, y0, x1, y1 = bbox
    return (round(x0 * iw / mw, 4), round(y0 * ih / mh, 4), round(x1 * iw / mw, 4), round(y1 * ih / mh, 4))


def to_region(rid: int, comp: Component, solidity: float, merged_from: list[int],
              map_size: tuple[int, int], image_size: tuple[int, int] | None) -> Region:
    return Region(
        id=rid,
        bbox_xyxy=comp.bbox,
        bbox_xyxy_image=scale_box(comp.bbox, map_size, image_size),
        area=comp.area,
        centroid=comp.centroid,
        score_max=comp.score_max,
        score_mean=comp.score_mean,
        fill_ratio=comp.fill_ratio,
        aspect_ratio=comp.aspect_ratio,
        solidity=solidity,
        merged_from=merged_from,
    )

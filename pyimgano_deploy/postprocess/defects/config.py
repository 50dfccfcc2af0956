"""Configuration of the defects pipeline (anomaly map → binary mask → regions).

Every step is off by default; a config turns on only what it names. The steps run in this
fixed order (see ``pipeline.extract_defects``):

1. pixel threshold (``pixel_threshold_source``) 2. ROI gating 3. border ignore 4. map smoothing
5. binarisation, with hysteresis when asked 6. morphology (open, then close) 7. fill holes
8. connected components (8-connectivity) 9. region filters 10. merge nearby regions
11. region cores 12. deterministic order and ids 13. ``max_regions``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from pyimgano_deploy.checks import is_number, unknown_keys, unknown_keys_message

THRESHOLD_SOURCES = ("bundle", "fixed", "normal_quantile")
SMOOTHING_METHODS = ("none", "median", "gaussian", "box")
MORPH_SHAPES = ("rect", "ellipse")


@dataclass(frozen=True)
class DefectsConfig:
    """All knobs of the defects pipeline. Defaults turn every optional step off.

    Pixel threshold (the "high" threshold; a pixel is defective when ``value >= threshold``):
        pixel_threshold_source: ``"bundle"`` (default) — use the ``pixel_threshold`` passed to
            ``extract_defects`` (the bundle's ``thresholds.pixel.value``); ``"fixed"`` — use
            ``pixel_threshold_value`` (the argument is ignored); ``"normal_quantile"`` — the
            threshold is the ``pixel_threshold_quantile`` of normal pixels, computed once with
            ``calibrate_pixel_threshold`` (see ``calibrate_for_config``) and passed in.
        pixel_threshold_value: the fixed threshold (required when the source is ``"fixed"``).
        pixel_threshold_quantile: quantile in (0, 1] for ``"normal_quantile"`` (default 0.999).
        quantile_in_roi: calibrate the quantile on pixels inside ``roi_xyxy_norm`` only.

    Gating (hard constraints, re-applied after every step that can add pixels):
        roi_xyxy_norm: ``(x0, y0, x1, y1)`` in [0, 1] of the map's width/height; pixels outside
            never become defects. ``None`` = whole map.
        border_ignore_px: pixels within this many px of the map edge never become defects (0 = off).

    Smoothing of the map before binarisation (region scores still come from the raw map):
        smoothing: ``"none"`` | ``"median"`` | ``"gaussian"`` | ``"box"``.
        smoothing_ksize: odd kernel size >= 3 for median and box.
        smoothing_sigma: standard deviation (px) > 0 for gaussian.

    Hysteresis (on when one of these is set; never both): pixels ``>= low`` are kept only where
    8-connected to a pixel ``>= high`` (the pixel threshold).
        hysteresis_low: absolute low threshold (must be <= high at run time).
        hysteresis_low_ratio: low = ratio × high, ratio in (0, 1].

    Morphology on the binary mask (kernel ``morph_shape``: ``"rect"`` or ``"ellipse"``):
        open_ksize: opening kernel size (removes specks thinner than it); 0 = off.
        close_ksize: closing kernel size (fills gaps narrower than it); 0 = off.
        fill_holes: fill background areas fully enclosed by a region.

    Region filters (a region failing one is removed from the list and from the mask; off = None
    or 0). Scores are the raw map's values over the region's pixels:
        min_area: minimum pixel count.
        min_score_max / min_score_max_ratio: minimum peak score, absolute or × pixel threshold.
        min_score_mean / min_score_mean_ratio: minimum mean score, absolute or × pixel threshold.
        min_fill_ratio: minimum area / bbox area, in [0, 1].
        max_aspect_ratio: maximum max(w, h) / min(w, h) of the bbox, >= 1.
        min_solidity: minimum area / convex-hull area, in [0, 1].

    Merging and output:
        merge_gap_px: regions separated by at most this many background pixels (Euclidean
            distance between nearest pixel centres minus 1) are merged into one, and the mask is
            bridged between them; ``None`` = off.
        core_ratio: report each region by its core (after merging): the pixels at or above
            ``high + core_ratio × (peak − high)`` of the smoothed map that are 8-connected to the
            region's peak, ratio in (0, 1]; ``None`` = off. The filters judged the whole region,
            so the number of regions does not change, only their extent: tight boxes around
            small defects, but a region spanning several defects keeps only the strongest.
        max_regions: keep only the first N regions in the deterministic order (score_max desc,
            area desc, top y, left x); the others are removed from the mask too. ``None`` = all.
    """

    pixel_threshold_source: str = "bundle"
    pixel_threshold_value: float | None = None
    pixel_threshold_quantile: float = 0.999
    quantile_in_roi: bool = False
    roi_xyxy_norm: tuple[float, float, float, float] | None = None
    border_ignore_px: int = 0
    smoothing: str = "none"
    smoothing_ksize: int = 3
    smoothing_sigma: float = 1.0
    hysteresis_low: float | None = None
    hysteresis_low_ratio: float | None = None
    open_ksize: int = 0
    close_ksize: int = 0
    morph_shape: str = "rect"
    fill_holes: bool = False
    min_area: int = 0
    min_score_max: float | None = None
    min_score_max_ratio: float | None = None
    min_score_mean: float | None = None
    min_score_mean_ratio: float | None = None
    min_fill_ratio: float | None = None
    max_aspect_ratio: float | None = None
    min_solidity: float | None = None
    merge_gap_px: int | None = None
    core_ratio: float | None = None
    max_regions: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    # ---------------------------------------------------------------- derived
    @property
    def uses_hysteresis(self) -> bool:
        return self.hysteresis_low is not None or self.hysteresis_low_ratio is not None

    @property
    def calibration_roi(self) -> tuple[float, float, float, float] | None:
        """The ROI to calibrate a ``normal_quantile`` threshold in (``None`` = whole map)."""
        return self.roi_xyxy_norm if self.quantile_in_roi else None

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.roi_xyxy_norm is not None:
            data["roi_xyxy_norm"] = list(self.roi_xyxy_norm)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DefectsConfig":
        if not isinstance(data, Mapping):
            raise ValueError(f"defects config must be a mapping, got {type(data).__name__}")
        _check_keys(data.keys(), "defects config")
        return cls(**dict(data))

    def with_overrides(self, **overrides: Any) -> "DefectsConfig":
        """A copy with some knobs changed (validated like the constructor)."""
        _check_keys(overrides.keys(), "with_overrides")
        return replace(self, **overrides)


def field_names() -> list[str]:
    return [f.name for f in fields(DefectsConfig)]


def _check_keys(keys: Any, what: str) -> None:
    unknown = unknown_keys(keys, field_names())
    if unknown:
        raise ValueError(unknown_keys_message(what, unknown, field_names()))


# -------------------------------------------------------------------- validation helpers
def _set(cfg: DefectsConfig, name: str, value: Any) -> None:
    object.__setattr__(cfg, name, value)


def _float(cfg: DefectsConfig, name: str, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, optional: bool = True, expected: str = "") -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    what = expected or _range_text(lo, hi, lo_open)
    if not is_number(v):
        raise ValueError(f"defects config '{name}' must be a finite number {what}, got {v!r}")
    f = float(v)
    if (lo is not None and (f < lo or (lo_open and f == lo))) or (hi is not None and f > hi):
        raise ValueError(f"defects config '{name}' must be {what}, got {v!r}")
    _set(cfg, name, f)


def _int(cfg: DefectsConfig, name: str, *, lo: int, optional: bool = False, odd: bool = False) -> None:
    v = getattr(cfg, name)
    if v is None and optional:
        return
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    extra = " and odd" if odd else ""
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (odd and v % 2 == 0):
        none = " or null" if optional else ""
        raise ValueError(f"defects config '{name}' must be an integer >= {lo}{extra}{none}, got {v!r}")
    _set(cfg, name, v)


def _choice(cfg: DefectsConfig, name: str, choices: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        raise ValueError(f"defects config '{name}' must be one of {list(choices)}, got {v!r}")


def _bool(cfg: DefectsConfig, name: str) -> None:
    v = getattr(cfg, name)
    if not isinstance(v, bool):
        raise ValueError(f"defects config '{name}' must be true or false, got {v!r}")


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return ""


def _exclusive(cfg: DefectsConfig, a: str, b: str) -> None:
    if getattr(cfg, a) is not None and getattr(cfg, b) is not None:
        raise ValueError(f"defects config: set either '{a}' or '{b}', not both")


def _validate_roi(cfg: DefectsConfig) -> None:
    roi = cfg.roi_xyxy_norm
    if roi is None:
        return
    msg = ("defects config 'roi_xyxy_norm' must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and "
           f"0 <= y0 < y1 <= 1 (fractions of the map's width/height), got {roi!r}")
    if isinstance(roi, (str, bytes)) or not hasattr(roi, "__len__") or len(roi) != 4:
        raise ValueError(msg)
    if not all(is_number(v) for v in roi):
        raise ValueError(msg)
    x0, y0, x1, y1 = (float(v) for v in roi)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise ValueError(msg)
    _set(cfg, "roi_xyxy_norm", (x0, y0, x1, y1))


def _validate(cfg: DefectsConfig) -> None:
    _choice(cfg, "pixel_threshold_source", THRESHOLD_SOURCES)
    _float(cfg, "pixel_threshold_value", expected="(any finite value)")
    if cfg.pixel_threshold_source == "fixed" and cfg.pixel_threshold_value is None:
        raise ValueError("defects config 'pixel_threshold_value' is required when "
                         "pixel_threshold_source is 'fixed'")
    _float(cfg, "pixel_threshold_quantile", lo=0.0, hi=1.0, lo_open=True, optional=False)
    _bool(cfg, "quantile_in_roi")
    _validate_roi(cfg)
    _int(cfg, "border_ignore_px", lo=0)
    _choice(cfg, "smoothing", SMOOTHING_METHODS)
    _int(cfg, "smoothing_ksize", lo=3, odd=True)
    _float(cfg, "smoothing_sigma", lo=0.0, lo_open=True, optional=False)
    _float(cfg, "hysteresis_low", expected="(any finite value <= the pixel threshold)")
    _float(cfg, "hysteresis_low_ratio", lo=0.0, hi=1.0, lo_open=True)
    _exclusive(cfg, "hysteresis_low", "hysteresis_low_ratio")
    _int(cfg, "open_ksize", lo=0)
    _int(cfg, "close_ksize", lo=0)
    _choice(cfg, "morph_shape", MORPH_SHAPES)
    _bool(cfg, "fill_holes")
    _int(cfg, "min_area", lo=0)
    for name in ("min_score_max", "min_score_mean"):
        _float(cfg, name, expected="(any finite value)")
    for name in ("min_score_max_ratio", "min_score_mean_ratio"):
        _float(cfg, name, lo=0.0)
    _exclusive(cfg, "min_score_max", "min_score_max_ratio")
    _exclusive(cfg, "min_score_mean", "min_score_mean_ratio")
    _float(cfg, "min_fill_ratio", lo=0.0, hi=1.0)
    _float(cfg, "max_aspect_ratio", lo=1.0)
    _float(cfg, "min_solidity", lo=0.0, hi=1.0)
    _int(cfg, "merge_gap_px", lo=0, optional=True)
    _float(cfg, "core_ratio", lo=0.0, hi=1.0, lo_open=True)
    _int(cfg, "max_regions", lo=1, optional=True)


# -------------------------------------------------------------------- presets
FP40 = DefectsConfig(
    pixel_threshold_source="bundle",
    roi_xyxy_norm=(0.0, 0.0, 1.0, 1.0),
    border_ignore_px=4,
    smoothing="gaussian",
    smoothing_sigma=1.5,
    hysteresis_low_ratio=0.9,
    open_ksize=3,
    close_ksize=3,
    fill_holes=True,
    min_area=16,
    min_score_max_ratio=1.0,
    merge_gap_px=8,
    max_regions=20,
)
"""False-positive control ("FP40"): whole-image ROI, 4 px border ignored (~2 % of a 256 px map),
Gaussian smoothing sigma 1.5, hysteresis low = 0.9 × high, open 3 / close 3, fill holes,
min area 16 px, peak score >= the pixel threshold, merge regions <= 8 px apart, at most 20."""

#: the presets by name; ``fp40`` is the historical name of ``false-positive-control``, kept
#: because users' configs and recipes name it
DEFECTS_PRESETS: dict[str, DefectsConfig] = {"false-positive-control": FP40, "fp40": FP40}


def get_preset(name: str) -> DefectsConfig:
    """The preset called ``name`` (ValueError listing the known names otherwise)."""
    try:
        return DEFECTS_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown defects preset {name!r}; known presets: {sorted(DEFECTS_PRESETS)}") from None

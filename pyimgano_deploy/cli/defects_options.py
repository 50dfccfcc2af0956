"""``infer --defects`` options: parsing, validation and per-record output (torch-free).

Settings are layered: the bundle manifest's ``defects`` block (or the preset named
by ``--defects-preset``, or the all-off ``DefectsConfig()`` when the bundle has no block) →
the CLI flags given. The resolved pixel threshold and where it came from are recorded in the
summary (full provenance) and in every record (compact provenance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import click

from pyimgano_deploy.bundles.golden import GOLDEN_SPLIT
from pyimgano_deploy.inputs.reader import DEFAULT_MAX_PIXELS
from pyimgano_deploy.postprocess.defects.config import DEFECTS_PRESETS, SMOOTHING_METHODS, DefectsConfig

#: click parameter name → CLI flag (for messages), in the order they are listed in --help.
FLAGS: dict[str, str] = {
    "defects_preset": "--defects-preset",
    "pixel_threshold": "--pixel-threshold",
    "pixel_threshold_strategy": "--pixel-threshold-strategy",
    "pixel_normal_quantile": "--pixel-normal-quantile",
    "roi_xyxy_norm": "--roi-xyxy-norm",
    "border_ignore_px": "--border-ignore-px",
    "smoothing": "--smoothing",
    "smoothing_ksize": "--smoothing-ksize",
    "smoothing_sigma": "--smoothing-sigma",
    "hysteresis_low": "--hysteresis-low",
    "min_area": "--min-area",
    "core_ratio": "--core-ratio",
    "max_regions": "--max-regions",
    "save_masks": "--save-masks",
    "save_overlays": "--save-overlays",
    "rle": "--rle",
}
STRATEGIES = ("bundle", "fixed", "normal_quantile")


def _check_roi(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    x0, y0, x1, y1 = (float(v) for v in value)
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in value):
        raise click.BadParameter(f"every value must be in [0, 1] (fractions of the map's width/height), got {list(value)}")
    if x1 <= x0 or y1 <= y0:
        raise click.BadParameter(f"expected x1 y1 x2 y2 with x2 > x1 and y2 > y1, got {list(value)}")
    return (x0, y0, x1, y1)


def _check_odd(ctx: click.Context, param: click.Parameter, value: Any) -> int | None:
    if value is not None and value % 2 == 0:
        raise click.BadParameter(f"must be odd (3, 5, 7, ...), got {value}")
    return value


def defects_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the ``--defects`` option group to a click command (values arrive as keyword args)."""
    opts = [
        click.option("--defects", "defects", is_flag=True,
                     help="Extract defect regions from each anomaly map and add a 'defects' object to every record."),
        click.option("--defects-preset", type=click.Choice(sorted(DEFECTS_PRESETS)), default=None,
                     help="Start from this preset instead of the bundle's defects block."),
        click.option("--pixel-threshold", type=float, default=None,
                     help="Fixed pixel threshold (implies strategy 'fixed')."),
        click.option("--pixel-threshold-strategy", type=click.Choice(STRATEGIES), default=None,
                     help="bundle: the bundle's calibrated pixel threshold; fixed: --pixel-threshold; "
                          "normal_quantile: a quantile of the golden (held-out normal) maps' pixels."),
        click.option("--pixel-normal-quantile", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
                     help="Quantile in (0, 1] for --pixel-threshold-strategy normal_quantile."),
        click.option("--roi-xyxy-norm", type=float, nargs=4, default=None, callback=_check_roi,
                     metavar="X1 Y1 X2 Y2", help="Region of interest, fractions in [0, 1] of the map's width/height."),
        click.option("--border-ignore-px", type=click.IntRange(min=0), default=None,
                     help="Ignore this many map pixels along the edges."),
        click.option("--smoothing", type=click.Choice(SMOOTHING_METHODS), default=None,
                     help="Smooth the map before thresholding."),
        click.option("--smoothing-ksize", type=click.IntRange(min=3), default=None, callback=_check_odd,
                     help="Odd kernel size for median/box smoothing."),
        click.option("--smoothing-sigma", type=click.FloatRange(0.0, min_open=True), default=None,
                     help="Sigma (map px) for gaussian smoothing."),
        click.option("--hysteresis-low", type=float, default=None,
                     help="Absolute low threshold: keep pixels >= it that touch a pixel >= the pixel threshold."),
        click.option("--min-area", type=click.IntRange(min=0), default=None, help="Drop regions smaller than this (map px)."),
        click.option("--core-ratio", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
                     help="Report each region by its core: the pixels at or above threshold + RATIO x (peak - threshold) "
                          "connected to its peak. Tight boxes around small defects; the number of regions does not change."),
        click.option("--max-regions", type=click.IntRange(min=1), default=None, help="Keep at most this many regions per image."),
        click.option("--save-masks", type=click.Path(file_okay=False), default=None,
                     help="Save each defect mask as a PNG (map resolution, 0/255) here."),
        click.option("--save-overlays", type=click.Path(file_okay=False), default=None,
                     help="Save image + heat map + region boxes as PNG here (false-positive debugging)."),
        click.option("--rle", is_flag=True, help="Add the mask's run-length encoding to each record."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


@dataclass(frozen=True)
class DefectsFlags:
    """The raw ``--defects`` flags of one ``infer`` call (``None`` = not given)."""

    enabled: bool = False
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> "DefectsFlags":
        """Pick the defects options out of the command's kwargs and check combinations that need
        no bundle (``click.UsageError`` naming the flags)."""
        unknown = sorted(set(kwargs) - set(FLAGS) - {"defects"})
        if unknown:
            raise TypeError(f"unexpected infer options {unknown}")
        given = {k: v for k, v in kwargs.items() if k in FLAGS and v is not None and v is not False}
        flags = cls(enabled=bool(kwargs.get("defects")), values=given)
        flags._check()
        return flags

    def _check(self) -> None:
        v = self.values
        if v and not self.enabled:
            names = ", ".join(FLAGS[k] for k in FLAGS if k in v)
            raise click.UsageError(f"{names}: defects options need --defects")
        strategy = v.get("pixel_threshold_strategy")
        if "pixel_threshold" in v and strategy not in (None, "fixed"):
            raise click.UsageError(f"--pixel-threshold cannot be combined with --pixel-threshold-strategy {strategy} "
                                   "(a fixed threshold is strategy 'fixed'); give one or the other")
        if "pixel_normal_quantile" in v and strategy not in (None, "normal_quantile"):
            raise click.UsageError("--pixel-normal-quantile only applies to --pixel-threshold-strategy normal_quantile, "
                                   f"not {strategy!r}")
        if "pixel_normal_quantile" in v and "pixel_threshold" in v:
            raise click.UsageError("--pixel-normal-quantile cannot be combined with --pixel-threshold (a fixed threshold)")

    def overrides(self) -> dict[str, Any]:
        """``DefectsConfig`` keys set by the flags."""
        v, out = self.values, {}
        if "pixel_threshold_strategy" in v:
            out["pixel_threshold_source"] = v["pixel_threshold_strategy"]
        if "pixel_threshold" in v:
            out.update(pixel_threshold_source="fixed", pixel_threshold_value=float(v["pixel_threshold"]))
        if "pixel_normal_quantile" in v:
            out["pixel_threshold_quantile"] = float(v["pixel_normal_quantile"])
        if "roi_xyxy_norm" in v:
            out["roi_xyxy_norm"] = tuple(v["roi_xyxy_norm"])
        for key in ("border_ignore_px", "smoothing", "smoothing_ksize", "smoothing_sigma", "min_area", "core_ratio", "max_regions"):
            if key in v:
                out[key] = v[key]
        if "hysteresis_low" in v:  # an absolute low replaces a ratio from the bundle / preset
            out.update(hysteresis_low=float(v["hysteresis_low"]), hysteresis_low_ratio=None)
        return out


@dataclass
class DefectsPlan:
    """Resolved defects settings of one ``infer`` run, and the per-record writer."""

    config: DefectsConfig  # as resolved from bundle/preset + flags (what the user asked for)
    runtime_config: DefectsConfig  # same, with the resolved threshold pinned (source 'fixed')
    base: str  # "bundle", "preset:<name>" or "default" (bundle without a defects block)
    overrides: dict[str, Any]
    pixel_threshold: float
    provenance: dict[str, Any]  # full: {"source", "value", "calibration": ThresholdCalibration dict | None}
    masks_dir: Path | None = None
    overlays_dir: Path | None = None
    rle: bool = False
    n_regions: int = 0
    n_images_with_regions: int = 0

    @property
    def needs_maps(self) -> bool:
        """Overlays need the anomaly map at the original image size."""
        return self.overlays_dir is not None

    def compact_provenance(self) -> dict[str, Any]:
        cal = self.provenance.get("calibration") or {}
        out = {"source": self.provenance["source"]}
        out.update({k: cal[k] for k in ("method", "quantile", "source_split", "n_images") if k in cal})
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "overrides": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.overrides.items()},
            "config": self.config.to_dict(),
            "pixel_threshold": dict(self.provenance),
            "masks_dir": None if self.masks_dir is None else self.masks_dir.as_posix(),
            "overlays_dir": None if self.overlays_dir is None else self.overlays_dir.as_posix(),
            "rle": self.rle,
            "regions": self.n_regions,
            "images_with_regions": self.n_images_with_regions,
        }

    def record(self, index: int, input_label: str, found: Any, image_map: Any, *, u16_max: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
        """The ``defects`` object of one record; writes the mask / overlay PNGs when asked.

        ``found`` is the item's ``DefectsResult``; ``image_map`` its anomaly map at the original
        image size (needed for overlays, which read the image again as the run read it:
        ``u16_max``, ``max_pixels``). Raises ``OSError`` / ``ValueError`` when a file cannot be
        read or written."""
        import cv2

        from pyimgano_deploy.inputs import read_image
        from pyimgano_deploy.postprocess.defects import save_mask_png, save_overlay

        stem = f"{index:06d}_{Path(input_label).stem}"
        mask_path = overlay_path = None
        try:
            if self.masks_dir is not None:
                mask_path = save_mask_png(found.mask, self.masks_dir / f"{stem}_mask.png").as_posix()
            if self.overlays_dir is not None:
                thr = self.pixel_threshold
                value_range = (0.5 * thr, 1.5 * thr) if thr > 0 else None  # threshold = mid colour
                overlay_path = save_overlay(read_image(input_label, u16_max=u16_max, max_pixels=max_pixels), image_map, found,
                                            self.overlays_dir / f"{stem}_overlay.png", value_range=value_range).as_posix()
        except cv2.error as exc:
            raise ValueError(f"cannot write defects images for {input_label}: {exc}") from exc
        record = found.to_record(mask_path=mask_path, include_rle=self.rle)
        if overlay_path is not None:
            record["overlay"] = overlay_path
        record["hysteresis_low"] = found.hysteresis_low
        record["pixel_threshold_provenance"] = self.compact_provenance()
        self.n_regions += len(found.regions)
        self.n_images_with_regions += bool(found.regions)
        return record


def _base_config(flags: DefectsFlags, bundle: Any) -> tuple[DefectsConfig, str]:
    preset = flags.values.get("defects_preset")
    if preset is not None:
        return DEFECTS_PRESETS[preset], f"preset:{preset}"
    block = bundle.defects_block
    if block is None:
        return DefectsConfig(), "default"
    try:
        return DefectsConfig.from_dict(block), "bundle"
    except ValueError as exc:
        raise click.UsageError(f"the bundle's 'defects' block (bundle.json) is invalid: {exc}") from None


def _resolve_threshold(config: DefectsConfig, bundle: Any) -> tuple[float, dict[str, Any]]:
    from pyimgano_deploy.postprocess.defects import pixel_threshold_for_config

    try:
        return pixel_threshold_for_config(config, stored=bundle.pixel_threshold,
                                          normal_maps=bundle.load_golden()["anomaly_map"], source_split=GOLDEN_SPLIT)
    except ValueError as exc:
        raise click.UsageError(f"{exc}; or pass --pixel-threshold X or --pixel-threshold-strategy normal_quantile") from None


def resolve_defects(flags: DefectsFlags, bundle: Any) -> DefectsPlan | None:
    """The run's ``DefectsPlan`` (``None`` without ``--defects``); ``click.UsageError`` on a bad
    combination of the flags with the bundle's settings."""
    if not flags.enabled:
        return None
    from pyimgano_deploy.postprocess.defects import resolve_hysteresis_low

    base, base_name = _base_config(flags, bundle)
    overrides = flags.overrides()
    try:
        config = base.with_overrides(**overrides)
    except ValueError as exc:
        raise click.UsageError(f"defects options do not combine with the {base_name} settings: {exc}") from None
    if "pixel_normal_quantile" in flags.values and config.pixel_threshold_source != "normal_quantile":
        raise click.UsageError("--pixel-normal-quantile needs --pixel-threshold-strategy normal_quantile (the "
                               f"{base_name} settings use pixel_threshold_source={config.pixel_threshold_source!r})")
    threshold, provenance = _resolve_threshold(config, bundle)
    try:
        resolve_hysteresis_low(config, threshold)
    except ValueError as exc:
        raise click.UsageError(f"--hysteresis-low / hysteresis settings: {exc}") from None
    runtime_config = config.with_overrides(pixel_threshold_source="fixed", pixel_threshold_value=threshold)
    v = flags.values
    masks = Path(v["save_masks"]) if "save_masks" in v else None
    overlays = Path(v["save_overlays"]) if "save_overlays" in v else None
    for flag, folder in (("--save-masks", masks), ("--save-overlays", overlays)):
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise click.UsageError(f"{flag}: cannot create the folder {folder}: {exc}") from None
    return DefectsPlan(config=config, runtime_config=runtime_config, base=base_name, overrides=overrides,
                       pixel_threshold=threshold, provenance=provenance, masks_dir=masks, overlays_dir=overlays,
                       rle=bool(v.get("rle")))

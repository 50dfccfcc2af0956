"""The registry of training recipes (what ``pyimgano-deploy recipes`` lists).

All recipes share one runner (``workbench.train``); a recipe decides which optional blocks
the run carries (tiling, defects), their defaults, and what it checks up front. The steps
are documented in docs/RECIPES.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pyimgano_deploy.postprocess.thresholds import PIXEL_IMAGE_MAX
from pyimgano_deploy.runtimes.tiling import TilingSpec
from pyimgano_deploy.workbench.config_checks import CALIBRATION_DEFAULTS, ConfigError

COMMON_STEPS = (
    "load the data set (MVTec layout, plain folders, or a generated synthetic set)",
    "split the training normals: a seeded held-out calibration split (default 20 %), never used for fitting",
    "create the detector from the model registry and fit it on the remaining training normals",
    "calibrate the image threshold (quantile of calibration scores) and the pixel threshold "
    "(quantile of calibration-map pixels), each with provenance",
    "evaluate on the test split: image AUROC / AP / F1 and confusion at the threshold; pixel AUROC and AUPRO when masks exist",
    "write the run directory: config.json, report.json, environment.json, per_image.jsonl, model/, "
    "artifacts/infer_config.json, optional maps/, report.html",
)

#: The default recipe's PatchCore (chosen on principle, measured in docs/ACCURACY.md): the training
#: images' aspect ratio instead of a squashed square (identical for square parts) and a 1 %
#: coreset (the PatchCore paper's finding that 1 % loses almost nothing against 10 %; the
#: nearest-neighbour head is most of the runtime). Lite1 did not help PatchCore, so Lite0 stays.
#: The paper's 3 × 3 local aggregation stays: without it (``neighbourhood`` 1) localisation rose on
#: both real sets but bsd_ballscrew's images ranked worse where the capture day cannot help.
ADAPT_MODEL_KWARGS: Mapping[str, Any] = {"image_size": "keep_aspect", "coreset_ratio": 0.01}
#: PaDiM for parts held in a fixture (per-position statistics): the same size policy, with Lite1 (it helped PaDiM).
ALIGNED_MODEL_KWARGS: Mapping[str, Any] = {"image_size": "keep_aspect", "backbone": "efficientnet_lite1"}
#: PaDiM for small defects on aligned parts: a 320 px short side, Lite0 (at 320 px Lite1 bought no
#: localisation and cost 23 % of the speed; bsd_ballscrew in docs/ACCURACY.md).
FINE_ALIGNED_MODEL_KWARGS: Mapping[str, Any] = {"image_size": "keep_aspect:320"}

#: False-positive control: the pixel threshold is the 0.95 quantile of the calibration maps' maxima,
#: so about 5 % of normal images have any pixel above it (the 0.99 quantile of all pixels puts
#: some pixels of most normal images above it: a region on most of them).
FP40_CALIBRATION: Mapping[str, Any] = {"pixel_strategy": PIXEL_IMAGE_MAX, "pixel_quantile": 0.95}

HIGHRES_TILING = TilingSpec(tile=512, stride=384, blend="hann", score_reduction="topk_mean", topk=100)


def _fp40_defaults() -> dict[str, Any]:
    from pyimgano_deploy.postprocess.defects import DEFECTS_PRESETS

    return DEFECTS_PRESETS["fp40"].to_dict()


@dataclass(frozen=True)
class Recipe:
    """A named training recipe."""

    name: str
    summary: str
    steps: tuple[str, ...]
    tiling: TilingSpec | None = None  # defaults of the tiling block; None = no tiling allowed
    defects_preset: str | None = None  # name of the defects preset filled into infer_config.json
    model: str = "vision_patchcore"  # the model when the config names none
    #: defaults for the recipe's own model (model.kwargs given in the config win); not applied to another model
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: defaults of the calibration block (keys given in the config win)
    calibration: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def defaults(self) -> dict[str, Any]:
        """The config defaults this recipe sets (beyond the common ones)."""
        return {
            "model": {"name": self.model, "kwargs": dict(self.model_kwargs) or "registry defaults (see `pyimgano-deploy models info NAME`)"},
            "calibration": {**CALIBRATION_DEFAULTS, "seed": "top-level seed", **self.calibration},
            "output": {"save_maps": False, "report": True},
            "device": "cpu",
            "seed": 0,
            "tiling": None if self.tiling is None else self.tiling.to_dict(),
            "defects": None if self.defects_preset is None else _fp40_defaults(),
        }

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "steps": list(self.steps), "notes": list(self.notes),
                "defaults": self.defaults()}

    def model_block(self, model: Any) -> Any:
        """The config's ``model`` block with this recipe's model filled in when it names none, and
        the recipe's ``model_kwargs`` under the config's own kwargs when the model is the recipe's."""
        if model is None:
            model = {}
        if not isinstance(model, Mapping):
            return model
        block = {**model, "name": model.get("name", self.model)}
        if block["name"] == self.model and self.model_kwargs:
            given = block.get("kwargs")
            if given is None or isinstance(given, Mapping):  # anything else is ModelConfig's error to report
                block["kwargs"] = {**self.model_kwargs, **(given or {})}
        return block

    def calibration_block(self, calibration: Any) -> Any:
        """The config's ``calibration`` block over this recipe's calibration defaults."""
        if calibration is None:
            calibration = {}
        if not isinstance(calibration, Mapping):
            return calibration  # CalibrationConfig reports the type error
        return {**self.calibration, **calibration}

    def resolve_blocks(self, tiling: Any, defects: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Merge user-given ``tiling`` / ``defects`` over this recipe's defaults and validate them."""
        from pyimgano_deploy.postprocess.defects import DefectsConfig

        resolved_tiling = None
        if self.tiling is None:
            if tiling is not None:
                raise ConfigError(f"tiling: recipe {self.name!r} does not tile images; use recipe "
                                  "'industrial-adapt-highres' (or set tiling to null)")
        else:
            if tiling is not None and not isinstance(tiling, Mapping):
                raise ConfigError(f"tiling: expected an object with keys {list(self.tiling.to_dict())}, got {tiling!r}")
            try:
                resolved_tiling = TilingSpec.from_dict({**self.tiling.to_dict(), **dict(tiling or {})}).to_dict()
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"tiling: {exc}") from None
        base = _fp40_defaults() if self.defects_preset else {}
        if defects is None and not base:
            return resolved_tiling, None
        if defects is not None and not isinstance(defects, Mapping):
            raise ConfigError(f"defects: expected an object of DefectsConfig keys or null, got {defects!r}")
        try:
            resolved_defects = DefectsConfig.from_dict({**base, **dict(defects or {})}).to_dict()
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"defects: {exc}") from None
        return resolved_tiling, resolved_defects

    def check(self, cfg: Any) -> None:
        """Recipe-specific checks of a resolved ``workbench.config.TrainConfig`` (raise ConfigError).

        Typed ``Any`` so that recipes never import the config module (which imports recipes)."""
        from pyimgano_deploy.models.registry import model_info

        if cfg.defects is not None:
            if "pixel_map" not in model_info(cfg.model.name)["tags"]:
                raise ConfigError(f"defects: model {cfg.model.name!r} has no pixel map (tag 'pixel_map'); "
                                  "defects need an anomaly map")
            if cfg.defects.get("pixel_threshold_source") == "bundle" and cfg.calibration.pixel_quantile is None:
                raise ConfigError("calibration.pixel_quantile: required when defects.pixel_threshold_source is "
                                  "'bundle' (the defects take the calibrated pixel threshold); set a quantile "
                                  "in (0, 1] or change defects.pixel_threshold_source to 'fixed'")
        if self.tiling is not None and cfg.tiling is not None:
            if cfg.model.kwargs.get("center_crop") is not None:
                raise ConfigError("model.kwargs.center_crop: must be null with tiling (each tile map must cover its whole tile)")
            size = cfg.model.kwargs.get("image_size")
            size = max(size) if isinstance(size, (list, tuple)) and size else size
            if isinstance(size, int) and size > cfg.tiling["tile"]:
                raise ConfigError(f"tiling.tile: {cfg.tiling['tile']} px is smaller than model.kwargs.image_size "
                                  f"{size}: tiles would be upsampled; use tile >= image_size")


def _aligned_padim(name: str, summary: str, model_kwargs: Mapping[str, Any], short_side: int, measured: str, memory: str) -> Recipe:
    """A PaDiM recipe for aligned parts at the fit images' aspect ratio with a ``short_side`` px short side."""
    return Recipe(
        name=name,
        summary=summary,
        steps=(COMMON_STEPS[0], COMMON_STEPS[1],
               f"measure the median aspect ratio of the fit images and set image_size to {short_side} x ({short_side} x "
               "aspect, in multiples of 32 px); create PaDiM with it and fit it on the fit images",
               *COMMON_STEPS[3:]),
        model="vision_padim",
        model_kwargs=model_kwargs,
        notes=(measured, "per-position statistics: parts must sit where the training parts sat; use industrial-adapt otherwise", memory),
    )


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="industrial-adapt",
            summary="PatchCore (the training images' aspect ratio, 1 % memory bank): fit on normals, "
                    "calibrate thresholds on a held-out normal split, evaluate, write a run directory.",
            steps=COMMON_STEPS,
            model_kwargs=ADAPT_MODEL_KWARGS,
            notes=("image_size keep_aspect: short side 224 px, long side from the fit images' median aspect (multiples "
                   "of 32); square parts get 224 x 224",
                   "bsd_ballscrew (1130 x 460 -> 224 x 544): image AUROC 0.910, pixel AUROC 0.992, AUPRO 0.794 against "
                   "0.912 / 0.984 / 0.698 for the squashed 224 x 224, 10 % bank PatchCore",
                   "small defects, region reports: --model-kwargs '{\"neighbourhood\": 1}' drops the 3 x 3 feature "
                   "average (bsd_ballscrew AUPRO 0.842, fp40 region recall 0.657 against 0.034; images rank a little worse)",
                   "parts held in a fixture: industrial-adapt-aspect (PaDiM) localises better"),
        ),
        Recipe(
            name="industrial-adapt-highres",
            summary="industrial-adapt on tiles for 2K/4K images: fit on tiles, Hann-blended maps, top-k mean score.",
            steps=(
                COMMON_STEPS[0],
                COMMON_STEPS[1],
                "cut every fitting image into tile x tile crops (stride apart, the last row/column flush with "
                "the edge) and fit the detector on the tiles, so fit and inference see the same scale",
                "score each image tile by tile; blend the tile maps (resized to the tile size) with a Hann "
                "window into a full-resolution map; image score = top-k mean of that map",
                COMMON_STEPS[3],
                COMMON_STEPS[4] + " (maps are compared at model scale: the blended map is area-resized to "
                "image size x image_size / tile)",
                COMMON_STEPS[5] + "; the tiling block travels into infer_config.json",
            ),
            tiling=HIGHRES_TILING,
            notes=("tile >= model image_size (tiles are downsampled to the model input, never upsampled)",
                   "fitting keeps all tiles of the fitting images in memory",
                   "for position-free detectors (PatchCore, the memory banks): PaDiM's per-position Gaussians pool "
                   "tiles from different places of the part (bsd_ballscrew: image AUROC 0.886 tiled, 0.941 untiled)"),
        ),
        _aligned_padim(
            "industrial-adapt-aspect",
            "industrial-adapt with PaDiM for aligned parts (held in a fixture): per-position Gaussians of "
            "EfficientNet-Lite1 features at the training images' aspect ratio.",
            ALIGNED_MODEL_KWARGS, 224,
            "bsd_ballscrew (1130 x 460 -> 224 x 544): image AUROC 0.941, pixel AUROC 0.995, AUPRO 0.873 "
            "against 0.918 / 0.988 / 0.749 for PaDiM with Lite0 at 224 x 224",
            "memory: positions x 100 x 100 x 4 bytes (224 x 544: 305 MB)",
        ),
        _aligned_padim(
            "industrial-adapt-aspect-fine",
            "industrial-adapt-aspect at a 320 px short side for small defects on aligned parts: PaDiM "
            "(EfficientNet-Lite0) localises finer, at about 60 % of the speed and twice the bundle size.",
            FINE_ALIGNED_MODEL_KWARGS, 320,
            "bsd_ballscrew (1130 x 460 -> 320 x 800): image AUROC 0.934, pixel AUROC 0.995, AUPRO 0.912, fp40 "
            "region recall 0.713, against 0.941 / 0.995 / 0.873 / 0.455 for industrial-adapt-aspect; 27 against 45 img/s",
            "memory: positions x 100 x 100 x 4 bytes (320 x 800: 640 MB)",
        ),
        Recipe(
            name="micro-finetune-autoencoder",
            summary="Train a small convolutional autoencoder on the normals (the shared epoch loop, checkpoints, "
                    "--resume); map = per-pixel reconstruction error.",
            steps=(COMMON_STEPS[0], COMMON_STEPS[1],
                   "train vision_autoencoder on the remaining normals for its epochs (seeded, a checkpoint in model/ "
                   "after every epoch; `train --resume` continues an interrupted run to the same result)",
                   *COMMON_STEPS[3:]),
            model="vision_autoencoder",
            notes=("any trained detector (tag 'trained') may be chosen with --model instead",
                   "set model.kwargs.early_stop_patience to stop when the calibration split's mean score stops improving"),
        ),
        Recipe(
            name="industrial-adapt-fp40",
            summary="industrial-adapt plus the fp40 defects defaults (false-positive control) in infer_config.json; "
                    "pixel threshold from the calibration maps' maxima.",
            steps=COMMON_STEPS[:3] + (
                "calibrate the image threshold (quantile of calibration scores) and the pixel threshold: the 0.95 "
                "quantile of the calibration maps' per-image maxima (calibration.pixel_strategy image_max), with provenance",
                COMMON_STEPS[4],
            ) + (
                "run the fp40 defects pipeline on the calibration and test maps and report how many images "
                "get at least one region (false-positive check on normals)",
                COMMON_STEPS[-1] + "; infer_config.json carries the defects block (DefectsConfig preset fp40)",
            ),
            defects_preset="fp40",
            model_kwargs=ADAPT_MODEL_KWARGS,
            calibration=FP40_CALIBRATION,
            notes=("needs a pixel threshold: calibration.pixel_quantile must not be null",
                   "calibration.pixel_strategy pixels and pixel_quantile 0.99 restore the pixel threshold of industrial-adapt",
                   "needs a model with a pixel map (tag pixel_map)",
                   "defects keys given in the config override the preset's values"),
        ),
    )
}


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: Any) -> Recipe:
    """The recipe called ``name``; KeyError listing the known names otherwise."""
    if not isinstance(name, str) or name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known recipes: {list_recipes()}")
    return RECIPES[name]

"""Training configuration: dataclasses with ``from_dict`` validation and a resolved ``to_dict``.

Every error is a :class:`ConfigError` naming the key (dotted path) and what is allowed,
unknown keys included. ``TrainConfig.from_dict`` applies the recipe's defaults (tiling for
``industrial-adapt-highres``, the fp40 defects block for ``industrial-adapt-fp40``) and fills
the model's constructor defaults, so ``to_dict()`` is the complete, reproducible config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pyimgano_deploy.workbench.config_checks import (
    CALIBRATION_DEFAULTS,
    ConfigError,
    as_bool,
    as_choice,
    as_fraction,
    as_int,
    as_str,
    check_keys,
    mapping_of,
)
from pyimgano_deploy.inputs.formats import validate_u16_max
from pyimgano_deploy.postprocess.thresholds import PIXEL_ALL
from pyimgano_deploy.workbench.recipes import get_recipe
from pyimgano_deploy.workbench.size_policy import is_size_policy, short_side

DATASET_KINDS = ("mvtec", "folder", "synthetic")
DEVICES = ("cpu", "cuda")
# Detector arguments owned by the top level (or by the CLI) rather than by model.kwargs.
RESERVED_MODEL_KWARGS = {"device": "device", "seed": "seed", "progress": "(the CLI's progress bars)"}
FOLDER_DEFAULTS = {"train_dir": "train", "test_normal_dir": "test/normal", "test_anomalous_dir": "test/anomalous", "mask_dir": "masks"}


# ---------------------------------------------------------------------------- sections
@dataclass
class ModelConfig:
    name: str = "vision_patchcore"
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, *, device: str = "cpu") -> "ModelConfig":
        from pyimgano_deploy.models.registry import create_model, list_models, model_parameters

        d = mapping_of(data, "model")
        check_keys(d, ("name", "kwargs"), "model")
        name = d.get("name", cls.name)
        if name not in list_models():
            raise ConfigError(f"model.name: unknown model {name!r}; registered models: {list_models()}")
        kwargs = dict(mapping_of(d.get("kwargs") or {}, "model.kwargs"))
        for key, owner in RESERVED_MODEL_KWARGS.items():
            if key in kwargs:
                raise ConfigError(f"model.kwargs.{key}: not allowed here; it is set by {owner}")
        params = model_parameters(name)
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            allowed = sorted(set(params) - set(RESERVED_MODEL_KWARGS))
            raise ConfigError(f"model.kwargs: unknown argument(s) {unknown} for {name}; allowed: {allowed}")
        resolved = {k: v for k, v in params.items() if k not in RESERVED_MODEL_KWARGS}
        resolved.update(kwargs)
        check = dict(resolved)
        if is_size_policy(check.get("image_size")):  # resolved from the fit images when the run starts
            try:
                check["image_size"] = short_side(check["image_size"])
            except ValueError as exc:
                raise ConfigError(f"model.kwargs: {exc}") from None
        try:  # constructing a detector only validates its arguments (no weights are loaded)
            create_model(name, **check, progress=False, device=device)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model.kwargs: {exc}") from None
        return cls(name=name, kwargs=resolved)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs)}


@dataclass
class DatasetConfig:
    kind: str
    root: str | None = None
    category: str | None = None
    # folder layout
    train_dir: str | None = None
    test_normal_dir: str | None = None
    test_anomalous_dir: str | None = None
    mask_dir: str | None = None
    #: full-scale value of 16-bit image files (4095 for a 12-bit camera); None: 16-bit files are refused
    u16_max: int | None = None
    # synthetic
    seed: int | None = None
    n_train: int = 40
    n_test: int = 20
    size: int = 128

    PER_KIND = {
        "mvtec": ("kind", "root", "category", "u16_max"),
        "folder": ("kind", "root", "category", "train_dir", "test_normal_dir", "test_anomalous_dir", "mask_dir", "u16_max"),
        "synthetic": ("kind", "root", "category", "seed", "n_train", "n_test", "size"),
    }

    @classmethod
    def from_dict(cls, data: Any, *, default_seed: int) -> "DatasetConfig":
        d = mapping_of(data, "dataset")
        if "kind" not in d:
            raise ConfigError(f"dataset.kind: required; expected one of {list(DATASET_KINDS)}")
        kind = as_choice(d["kind"], "dataset.kind", DATASET_KINDS)
        check_keys(d, cls.PER_KIND[kind], f"dataset (kind {kind})")
        root = as_str(d.get("root"), "dataset.root", optional=True)
        category = as_str(d.get("category"), "dataset.category", optional=True)
        out = cls(kind=kind, root=None if root is None else str(Path(root).expanduser().absolute()), category=category)
        if d.get("u16_max") is not None:
            try:
                out.u16_max = validate_u16_max(d["u16_max"])
            except ValueError as exc:
                raise ConfigError(f"dataset.u16_max: {exc}; e.g. 4095 for a 12-bit camera, 65535 for the full range") from exc
        if kind == "mvtec":
            if out.root is None:
                raise ConfigError("dataset.root: required for kind 'mvtec' (a category folder or a folder of categories)")
        elif kind == "folder":
            out._resolve_folder(d)
        else:
            out.category = category or "surface"
            if out.category == "all":
                raise ConfigError("dataset.category: 'all' is only for kind 'mvtec'")
            out.seed = as_int(d.get("seed", default_seed), "dataset.seed", lo=0)
            out.n_train = as_int(d.get("n_train", cls.n_train), "dataset.n_train", lo=2)  # type: ignore[assignment]
            out.n_test = as_int(d.get("n_test", cls.n_test), "dataset.n_test", lo=2)  # type: ignore[assignment]
            out.size = as_int(d.get("size", cls.size), "dataset.size", lo=32)  # type: ignore[assignment]
            if out.size > 4096:
                raise ConfigError(f"dataset.size: expected an integer in [32, 4096], got {out.size}")
        return out

    def _resolve_folder(self, d: Mapping[str, Any]) -> None:
        if self.category == "all":
            raise ConfigError("dataset.category: 'all' is only for kind 'mvtec'")
        base = None if self.root is None else Path(self.root)
        for key, default in FOLDER_DEFAULTS.items():
            value = as_str(d.get(key), f"dataset.{key}", optional=True)
            if value is None and base is not None:
                candidate = base / default
                # train_dir is always filled in (the loader reports a missing one); the optional
                # test/mask folders only when they exist.
                value = str(candidate) if key == "train_dir" or candidate.is_dir() else None
            elif value is not None:
                p = Path(value).expanduser()
                value = str(p if p.is_absolute() or base is None else base / p)
            setattr(self, key, None if value is None else str(Path(value).absolute()))
        if self.train_dir is None:
            raise ConfigError("dataset.train_dir: required for kind 'folder' (or give dataset.root holding train/)")
        self.category = self.category or "folder"

    def to_dict(self) -> dict[str, Any]:
        """The config's ``dataset`` block; ``u16_max`` only when declared (older runs stay as they were)."""
        return {k: getattr(self, k) for k in self.PER_KIND[self.kind] if k != "u16_max" or self.u16_max is not None}


@dataclass
class CalibrationConfig:
    fraction: float = CALIBRATION_DEFAULTS["fraction"]
    quantile: float = CALIBRATION_DEFAULTS["quantile"]
    pixel_quantile: float | None = CALIBRATION_DEFAULTS["pixel_quantile"]
    seed: int = 0
    #: image-threshold strategy (postprocess.thresholds.ALL_STRATEGIES) and its parameters
    strategy: str = "quantile"
    margin: float = 0.1
    target_fpr: float = 0.01
    #: labelled folder (good/ + defect sub-folders) of the f1_validation strategy
    validation_dir: str | None = None
    #: pixel threshold from all calibration pixels or from each calibration map's maximum (PIXEL_STRATEGIES)
    pixel_strategy: str = PIXEL_ALL

    @classmethod
    def from_dict(cls, data: Any, *, default_seed: int) -> "CalibrationConfig":
        from pyimgano_deploy.postprocess.thresholds import ALL_STRATEGIES, F1_STRATEGY, PIXEL_STRATEGIES

        d = mapping_of(data, "calibration")
        check_keys(d, ("fraction", "quantile", "pixel_quantile", "seed", "strategy", "margin", "target_fpr",
                       "validation_dir", "pixel_strategy"), "calibration")
        margin = d.get("margin", cls.margin)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
            raise ConfigError(f"calibration.margin: expected a number >= 0, got {margin!r}")
        strategy = as_choice(d.get("strategy", cls.strategy), "calibration.strategy", ALL_STRATEGIES)
        validation_dir = d.get("validation_dir")
        if validation_dir is not None and (not isinstance(validation_dir, str) or not validation_dir):
            raise ConfigError(f"calibration.validation_dir: expected a folder path (str) or null, got {validation_dir!r}")
        if (strategy == F1_STRATEGY) != (validation_dir is not None):
            raise ConfigError(
                f"calibration.validation_dir: required by calibration.strategy {F1_STRATEGY!r} and used only by it "
                f"(a labelled folder: good/ plus one sub-folder per defect type); got strategy {strategy!r} "
                f"and validation_dir {validation_dir!r}")
        return cls(
            strategy=strategy,
            validation_dir=validation_dir,
            pixel_strategy=as_choice(d.get("pixel_strategy", cls.pixel_strategy), "calibration.pixel_strategy", PIXEL_STRATEGIES),
            margin=float(margin),
            target_fpr=as_fraction(d.get("target_fpr", cls.target_fpr), "calibration.target_fpr", lo_open=True, hi_open=True),  # type: ignore[arg-type]
            fraction=as_fraction(d.get("fraction", cls.fraction), "calibration.fraction", lo_open=True, hi_open=True),  # type: ignore[arg-type]
            quantile=as_fraction(d.get("quantile", cls.quantile), "calibration.quantile", lo_open=True, hi_open=False),  # type: ignore[arg-type]
            pixel_quantile=as_fraction(d.get("pixel_quantile", cls.pixel_quantile), "calibration.pixel_quantile",
                                     lo_open=True, hi_open=False, optional=True),
            seed=as_int(d.get("seed", default_seed), "calibration.seed", lo=0),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "quantile": self.quantile, "pixel_quantile": self.pixel_quantile, "seed": self.seed,
                "strategy": self.strategy, "margin": self.margin, "target_fpr": self.target_fpr,
                "validation_dir": self.validation_dir, "pixel_strategy": self.pixel_strategy}


@dataclass
class OutputConfig:
    dir: str
    save_maps: bool = False
    report: bool = True

    @classmethod
    def from_dict(cls, data: Any) -> "OutputConfig":
        d = mapping_of(data, "output")
        check_keys(d, ("dir", "save_maps", "report"), "output")
        if d.get("dir") is None:
            raise ConfigError("output.dir: required (the run directory to write, e.g. runs/NAME)")
        out_dir = as_str(d["dir"], "output.dir")
        return cls(
            dir=str(Path(out_dir).expanduser().absolute()),  # type: ignore[arg-type]
            save_maps=as_bool(d.get("save_maps", False), "output.save_maps"),
            report=as_bool(d.get("report", True), "output.report"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"dir": self.dir, "save_maps": self.save_maps, "report": self.report}


CONFIG_SCHEMA_VERSION = "1.0"
TOP_KEYS = ("schema_version", "name", "recipe", "model", "dataset", "calibration", "tiling", "defects", "output", "device", "seed")


@dataclass
class TrainConfig:
    """The whole training configuration (see docs/RECIPES.md for every key)."""

    name: str
    recipe: str
    model: ModelConfig
    dataset: DatasetConfig
    calibration: CalibrationConfig
    output: OutputConfig
    tiling: dict[str, Any] | None = None
    defects: dict[str, Any] | None = None
    device: str = "cpu"
    seed: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> "TrainConfig":
        d = mapping_of(data, "")
        check_keys(d, TOP_KEYS, "")
        version = d.get("schema_version", CONFIG_SCHEMA_VERSION)
        if str(version).split(".")[0] != CONFIG_SCHEMA_VERSION.split(".")[0]:
            raise ConfigError(f"schema_version: {version!r} is not supported; expected {CONFIG_SCHEMA_VERSION!r}")
        recipe_name = d.get("recipe", "industrial-adapt")
        try:
            recipe = get_recipe(recipe_name)
        except KeyError as exc:
            raise ConfigError(f"recipe: {exc.args[0]}") from None
        seed = as_int(d.get("seed", 0), "seed", lo=0)
        device = d.get("device", "cpu")
        if not (device in DEVICES or (isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit())):
            raise ConfigError(f"device: expected one of {list(DEVICES)} or 'cuda:N', got {device!r}")
        if device != "cpu":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"device: {device!r} requested but torch sees no CUDA device here; use 'cpu'")
        if "dataset" not in d:
            raise ConfigError(f"dataset: required; e.g. {{'kind': 'mvtec', 'root': DIR, 'category': C}} (kinds: {list(DATASET_KINDS)})")
        if "output" not in d:
            raise ConfigError("output: required; e.g. {'dir': 'runs/NAME'}")
        output = OutputConfig.from_dict(d["output"])
        name = d.get("name") or Path(output.dir).name
        cfg = cls(
            name=as_str(name, "name"),  # type: ignore[arg-type]
            recipe=recipe.name,
            model=ModelConfig.from_dict(recipe.model_block(d.get("model")), device=device),
            dataset=DatasetConfig.from_dict(d["dataset"], default_seed=seed),  # type: ignore[arg-type]
            calibration=CalibrationConfig.from_dict(recipe.calibration_block(d.get("calibration")), default_seed=seed),  # type: ignore[arg-type]
            output=output,
            device=device,
            seed=seed,  # type: ignore[arg-type]
        )
        cfg.tiling, cfg.defects = recipe.resolve_blocks(d.get("tiling"), d.get("defects"))
        if cfg.calibration.validation_dir is not None and cfg.dataset.category == "all":
            raise ConfigError("calibration.validation_dir: one labelled folder cannot set the thresholds of every "
                              "category of dataset.category 'all'; train the categories one at a time")
        recipe.check(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": CONFIG_SCHEMA_VERSION,
            "name": self.name,
            "recipe": self.recipe,
            "model": self.model.to_dict(),
            "dataset": self.dataset.to_dict(),
            "calibration": self.calibration.to_dict(),
            "tiling": None if self.tiling is None else dict(self.tiling),
            "defects": None if self.defects is None else dict(self.defects),
            "output": self.output.to_dict(),
            "device": self.device,
            "seed": self.seed,
        }

    def model_kwargs(self, *, progress: bool) -> dict[str, Any]:
        """Keyword arguments for ``create_model``: the resolved kwargs plus device, seed, progress."""
        return {**self.model.kwargs, "device": self.device, "seed": self.seed, "progress": progress}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON config, or YAML (``.yaml``/``.yml``) when PyYAML is installed."""
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config: file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise ConfigError(f"--config {p}: reading YAML needs PyYAML (pip install pyyaml), or write the config as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {p}: invalid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config {p}: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {p}: expected an object at the top level, got {type(data).__name__}")
    return data

"""The constructor parameters every detector shares, declared once (torch-free).

A detector's spec names a dataclass that extends :class:`CommonParams` with its own fields;
the registry reads the fields (names, defaults) without importing torch, and the detector's
constructor validates its keyword arguments through that dataclass.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from pyimgano_deploy.models.illumination import ILLUMINATION

#: Fields that say *how* to run, not *what* the fitted model is: not saved as hyperparameters.
RUNTIME_FIELDS = ("device", "batch_size", "progress")


def size_pair(value: Any, key: str) -> tuple[int, int]:
    """An int or ``(height, width)`` of at least 16 px → ``(h, w)``; ValueError naming ``key``."""
    if isinstance(value, bool):
        raise ValueError(f"{key}: expected an int or (height, width), got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair) or min(pair) < 16:
        raise ValueError(f"{key}: expected an int or (height, width) of at least 16 px, got {value!r}")
    return (int(pair[0]), int(pair[1]))


#: The three finest feature stages of each backbone (PaDiM's, STFPM's and Reverse Distillation's default pyramid).
THREE_FINEST_STAGES: dict[str, tuple[str, ...]] = {
    "efficientnet_lite0": ("s4", "s8", "s16"),
    "efficientnet_lite1": ("s4", "s8", "s16"),
    "efficientnet_lite2": ("s4", "s8", "s16"),
    "resnet18": ("layer1", "layer2", "layer3"),
    "wide_resnet50_2": ("layer1", "layer2", "layer3"),
}


def stages_or_default(stages: Any, backbone: str, table: dict[str, tuple[str, ...]], detector: str) -> tuple[str, ...]:
    """``stages`` when given, else ``table[backbone]``; ValueError naming the detector otherwise."""
    if stages is not None:
        return tuple(stages)
    if backbone not in table:
        raise ValueError(f"backbone {backbone!r} has no {detector} default stages; pass stages=[...] (backbones with defaults: {sorted(table)})")
    return table[backbone]


def require_multiple(size: tuple[int, int], step: int, why: str) -> None:
    """Refuse a model input ``size`` (H, W) that is not a multiple of ``step`` px, saying ``why``."""
    if any(int(v) % step for v in size):
        raise ValueError(f"image_size (or center_crop) must be multiples of {step} px ({why}), got {list(size)}")


def require_neighbourhood(value: Any) -> int:
    """A local-aggregation neighbourhood (the side of the square of grid positions a patch feature
    is averaged over): an odd int >= 1, 1 = none; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"neighbourhood must be an odd number >= 1 (1 = no aggregation, 3 = the paper's 3 × 3), got {value!r}")
    return value


def alias_field(of: str) -> Any:
    """A field that is an old name of ``of``: accepted, folded into ``of``, never saved."""
    return field(default=None, metadata={"alias_of": of})


@dataclass
class CommonParams:
    """Backbone, preprocessing, seed and execution settings of any detector.

    ``image_size``/``center_crop``: int or (height, width) px; ``pretrained``: False (random
    init), True (the backbone's published weights) or a path to a local state-dict file;
    ``illumination``: "standardize" rescales each image to a fixed mean and spread of its pixel
    values before the backbone (in the graph, so fit and runtime match), for parts whose
    brightness varies; "clahe" equalises each image's local contrast on the host, in the
    preprocessing step the bundle carries, for light that varies across a part; "none" leaves
    them as they are.
    """

    backbone: str = "efficientnet_lite0"
    pretrained: bool | str = True
    stages: tuple[str, ...] | list[str] | None = None
    image_size: int | tuple[int, int] | list[int] = 224
    interpolation: str = "linear"
    center_crop: int | tuple[int, int] | list[int] | None = None
    blur_sigma: float = 4.0
    illumination: str = "none"
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            target = f.metadata.get("alias_of")
            if target is not None and getattr(self, f.name) is not None:
                setattr(self, target, getattr(self, f.name))
                setattr(self, f.name, None)
        self.image_size = size_pair(self.image_size, "image_size")
        if self.center_crop is not None:
            self.center_crop = size_pair(self.center_crop, "center_crop")
        if self.stages is not None:
            self.stages = (self.stages,) if isinstance(self.stages, str) else tuple(self.stages)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.blur_sigma is not None and (not isinstance(self.blur_sigma, (int, float)) or self.blur_sigma < 0):
            raise ValueError(f"blur_sigma must be >= 0, got {self.blur_sigma!r}")
        if self.illumination not in ILLUMINATION:
            raise ValueError(f"illumination must be one of {list(ILLUMINATION)}, got {self.illumination!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        device = str(self.device)
        if device not in ("cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.blur_sigma is not None:
            self.blur_sigma = float(self.blur_sigma)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field with its default, in declaration order (aliases included, as None)."""
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
            else:
                out[f.name] = None
        return out

    def hyperparameters(self) -> dict[str, Any]:
        """JSON-ready keyword arguments that rebuild the fitted model (no aliases, no runtime fields)."""
        skip = set(RUNTIME_FIELDS) | {f.name for f in fields(self) if f.metadata.get("alias_of")}
        out = {}
        for key, value in asdict(self).items():
            if key in skip:
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


#: how a map-scored detector reduces its anomaly map to the image score
IMAGE_SCORES = ("max", "mean")


@dataclass
class MapScoreParams(CommonParams):
    """:class:`CommonParams` of a detector whose image score is a reduction of its anomaly map:
    ``image_score`` "max" (the default, the papers' rule) or "mean" (whole-map evidence, for
    defects that spread over the part; it dilutes one small defect on a large part)."""

    image_score: str = "max"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score must be one of {list(IMAGE_SCORES)}, got {self.image_score!r}")


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
AMP_MODES = ("off", "fp16", "bf16")


@dataclass
class TrainedParams(CommonParams):
    """:class:`CommonParams` plus the training loop of trained detectors.

    ``epochs``; ``min_steps``: at least this many optimiser steps, so a small fit set runs
    more epochs (0: exactly ``epochs``); ``optimizer`` (adam, adamw, sgd) with ``lr``, ``weight_decay`` and
    ``momentum`` (sgd); ``schedule``: constant or cosine decay of the learning rate per
    epoch; ``amp``: autocast on CUDA (off, fp16, bf16; refused on CPU);
    ``early_stop_patience``: stop when the calibration split's mean score has not improved
    for this many epochs (None: never; the calibration images are only scored, never fit).
    """

    epochs: int = 20
    min_steps: int = 0
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "constant"
    amp: str = "off"
    early_stop_patience: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {self.epochs!r}")
        if not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ValueError(f"min_steps must be an int >= 0, got {self.min_steps!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {list(AMP_MODES)}, got {self.amp!r}")
        if self.amp != "off" and not str(self.device).startswith("cuda"):
            raise ValueError(f"amp={self.amp!r} needs device 'cuda' (autocast is for GPUs here); use amp='off' on CPU")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"expected lr > 0, weight_decay >= 0 and 0 <= momentum < 1, got {self.lr}, {self.weight_decay}, {self.momentum}")
        if self.early_stop_patience is not None and (not isinstance(self.early_stop_patience, int) or self.early_stop_patience < 1):
            raise ValueError(f"early_stop_patience must be None or an int >= 1, got {self.early_stop_patience!r}")

"""The score ensemble's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyimgano_deploy.models.detectors.params import CommonParams
from pyimgano_deploy.models.detectors.spec import DetectorSpec

NORMALIZATIONS = ("quantile", "zscore")
#: Parameters the ensemble sets for every member: one input contract, one seed, one device.
SHARED_WITH_MEMBERS = ("pretrained", "image_size", "interpolation", "center_crop", "seed", "device", "batch_size", "progress")
#: Parameters the ensemble passes on only when given (None: each member's own default).
OPTIONAL_FOR_MEMBERS = ("backbone", "stages", "blur_sigma")
ENSEMBLE_NAME = "vision_ensemble"


def _default_members() -> list[dict[str, Any]]:
    return [{"name": "vision_patchcore", "kwargs": {}}, {"name": "vision_padim", "kwargs": {}}]


@dataclass
class EnsembleParams(CommonParams):
    """``members``: ``[{"name": registered model, "kwargs": {...}}, …]`` (at least two);
    ``normalization``: how each member's score and map are put on one scale, from the
    **calibration split** only: ``"quantile"`` ((x − median) / (q − median), q the
    ``quantile``) or ``"zscore"`` ((x − mean) / std). ``backbone``, ``stages``,
    ``blur_sigma``: None keeps each member's own; given, they apply to every member."""

    backbone: str | None = None  # type: ignore[assignment]
    blur_sigma: float | None = None  # type: ignore[assignment]
    members: list[dict[str, Any]] = field(default_factory=_default_members)
    normalization: str = "quantile"
    quantile: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {self.normalization!r}")
        if not 0.5 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0.5, 1), got {self.quantile}")
        if not isinstance(self.members, list) or len(self.members) < 2:
            raise ValueError(f"members: expected a list of at least two {{'name': ..., 'kwargs': {{...}}}}, got {self.members!r}")
        checked = []
        for i, member in enumerate(self.members):
            if not isinstance(member, dict) or not isinstance(member.get("name"), str) or set(member) - {"name", "kwargs"}:
                raise ValueError(f"members[{i}]: expected {{'name': str, 'kwargs': {{...}}}}, got {member!r}")
            if member["name"] == ENSEMBLE_NAME:
                raise ValueError(f"members[{i}]: an ensemble cannot be a member of an ensemble")
            kwargs = member.get("kwargs") or {}
            if not isinstance(kwargs, dict):
                raise ValueError(f"members[{i}].kwargs: expected an object, got {kwargs!r}")
            owned = sorted(set(kwargs) & set(SHARED_WITH_MEMBERS))
            if owned:
                raise ValueError(f"members[{i}].kwargs: {owned} are set on the ensemble for every member; remove them here")
            checked.append({"name": member["name"], "kwargs": dict(kwargs)})
        self.members = checked


SPEC = DetectorSpec(
    name=ENSEMBLE_NAME,
    family="ensemble",
    target="pyimgano_deploy.models.detectors.ensemble.model:Ensemble",
    params=EnsembleParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "ensemble", "fp16"}),
    summary="mean of member scores and maps, each normalised by its calibration-split statistics (never by the batch)",
    paper="score-level ensemble with calibration-split normalisation (this toolkit)",
    head="every member's graph, then (x − loc) / scale per member and a mean, in one ONNX graph",
    memory="the sum of the members' memory (see each member's `models info`) + 4 × 4 bytes per member",
    small_kwargs={"members": [{"name": "vision_patchcore", "kwargs": {"coreset_ratio": 0.25}}, {"name": "vision_padim", "kwargs": {"n_channels": 8}}]},
)

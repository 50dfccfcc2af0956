"""PaDiM's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.params import THREE_FINEST_STAGES, MapScoreParams, alias_field
from pyimgano_deploy.models.detectors.spec import DetectorSpec


@dataclass
class PaDiMParams(MapScoreParams):
    """``n_channels``: feature channels kept (a seeded random subset; the paper's ``d``; ``d``
    is its old name, still accepted so saved runs and configs keep loading); ``eps``:
    covariance regularisation added to the diagonal."""

    n_channels: int = 100
    eps: float = 0.01
    d: int | None = alias_field("n_channels")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages is None and self.backbone in THREE_FINEST_STAGES:  # other backbones: their own default
            self.stages = THREE_FINEST_STAGES[self.backbone]
        if self.n_channels < 1:
            raise ValueError(f"n_channels (number of selected feature channels) must be >= 1, got {self.n_channels}")
        if self.eps <= 0:
            raise ValueError(f"eps (covariance regularisation) must be > 0, got {self.eps}")


SPEC = DetectorSpec(
    name="vision_padim",
    family="padim",
    target="pyimgano_deploy.models.detectors.padim.model:PaDiM",
    params=PaDiMParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "gaussian", "fp16"}),
    summary="per-position multivariate Gaussian of patch features, Mahalanobis distance map",
    paper="Defard et al., PaDiM: a Patch Distribution Modeling Framework (ICPR 2021)",
    head="per-position Gaussian, Mahalanobis distance",
    memory="positions × n_channels × n_channels × 4 bytes for the inverse covariances (+ positions × n_channels × 4 for the means)",
    small_kwargs={"n_channels": 8},
)

"""Reverse Distillation's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.params import THREE_FINEST_STAGES, TrainedParams, stages_or_default
from pyimgano_deploy.models.detectors.spec import DetectorSpec


@dataclass
class ReverseDistillationParams(TrainedParams):
    """``backbone``/``pretrained``: the frozen encoder; ``stages``: its three feature stages,
    finest first (the paper's WRN-50 layer1–3); ``bottleneck_channels``: width of the one-class
    embedding (the paper's 2048 for WRN-50; scaled down with the encoder). Training: Adam,
    lr 0.005 (the paper's), fewer epochs for CPU. Sizes must be multiples of 2 × the deepest
    stage's stride."""

    epochs: int = 50
    lr: float = 0.005
    bottleneck_channels: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stages = stages_or_default(self.stages, self.backbone, THREE_FINEST_STAGES, "Reverse Distillation")
        if len(self.stages) != 3:
            raise ValueError(f"stages: Reverse Distillation takes exactly three encoder stages, finest first, got {self.stages!r}")
        if not isinstance(self.bottleneck_channels, int) or self.bottleneck_channels < 8:
            raise ValueError(f"bottleneck_channels must be an int >= 8, got {self.bottleneck_channels!r}")


SPEC = DetectorSpec(
    name="vision_reverse_distillation",
    family="reverse_distillation",
    target="pyimgano_deploy.models.detectors.reverse_distillation.model:ReverseDistillation",
    params=ReverseDistillationParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "trained", "amp", "student_teacher", "fp16"}),
    summary="frozen encoder → one-class bottleneck → student decoder that reconstructs the encoder's features; map = Σ (1 − cos)",
    paper="Deng & Li, Anomaly Detection via Reverse Distillation from One-Class Embedding (CVPR 2022)",
    head="per stage 1 − cos(encoder, decoder) per position, upsampled, summed, blurred; score = map maximum",
    memory="the encoder up to its deepest stage + bottleneck + decoder parameters × 4 bytes",
    small_kwargs={"epochs": 2, "bottleneck_channels": 16},
)

"""STFPM's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.params import THREE_FINEST_STAGES, TrainedParams, stages_or_default
from pyimgano_deploy.models.detectors.spec import DetectorSpec


@dataclass
class StfpmParams(TrainedParams):
    """``backbone``/``pretrained``: the teacher (published weights by default); the student
    has the same architecture from random init. ``stages``: the feature pyramid (default: the
    backbone's three finest stages, as the paper's ResNet-18 layer1–3). Training defaults
    follow the paper's SGD (lr 0.4, momentum 0.9, weight decay 1e-4) with fewer epochs for CPU."""

    epochs: int = 20
    optimizer: str = "sgd"
    lr: float = 0.4
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stages = stages_or_default(self.stages, self.backbone, THREE_FINEST_STAGES, "STFPM")


SPEC = DetectorSpec(
    name="vision_stfpm",
    family="stfpm",
    target="pyimgano_deploy.models.detectors.stfpm.model:Stfpm",
    params=StfpmParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "trained", "amp", "student_teacher", "fp16"}),
    summary="student–teacher feature pyramid matching: a random-init student regresses a pretrained teacher's normalised features",
    paper="Wang et al., Student-Teacher Feature Pyramid Matching for Anomaly Detection (BMVC 2021)",
    head="per stage ½‖t̂ − ŝ‖² of L2-normalised features, upsampled, multiplied over stages, blurred; score = map maximum",
    memory="2 × the backbone's parameters up to the deepest stage × 4 bytes (teacher and student)",
    small_kwargs={"epochs": 2, "stages": ["s4", "s8"]},
)

"""STFPM (Wang et al., 2021): a student network learns to reproduce a teacher's feature pyramid.

Choices, stated once:
- Teacher: the backbone with its published weights (frozen, eval). Student: the same
  architecture from random init, trained; its BatchNorm runs in training mode during fit.
- Loss: Σ over stages of the mean over positions of ½‖t̂ − ŝ‖², features L2-normalised along
  channels (the paper's loss).
- Map: each stage's ½‖t̂ − ŝ‖² upsampled bilinearly to the input size, then the **product**
  over stages (the paper's choice), then blurred (σ = ``blur_sigma``). Score: the map maximum.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.inference_module import MapMaximum, ScopedModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher
from pyimgano_deploy.models.detectors.stfpm.spec import SPEC, StfpmParams
from pyimgano_deploy.models.detectors.trained import TrainedDetector


def stage_distances(teacher: list[torch.Tensor], student: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per stage ``½‖t̂ − ŝ‖²`` over channels → ``[B, h_i, w_i]`` fp32."""
    out = []
    for t, s in zip(teacher, student):
        t = F.normalize(t.to(torch.float32), dim=1)
        s = F.normalize(s.to(torch.float32), dim=1)
        out.append(0.5 * ((t - s) ** 2).sum(dim=1))
    return out


class PyramidProduct(nn.Module):
    """Teacher and student pyramids → product over stages of the upsampled distances ``[B, H, W]``."""

    def __init__(self, grids: list[tuple[int, int]], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.upsample = nn.ModuleList(AnomalyMapFinisher(out_size, 0.0, in_size=g) for g in grids)

    def forward(self, teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
        maps = [up(d) for up, d in zip(self.upsample, stage_distances(teacher, student))]
        product = maps[0]
        for m in maps[1:]:
            product = product * m
        return product


class StfpmInferenceModule(ScopedModule):
    fp32_scopes = ("scorer", "finisher", "score_head")

    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor, scorer: PyramidProduct, finisher: AnomalyMapFinisher) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.scorer = scorer
        self.finisher = finisher
        self.score_head = MapMaximum()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = self.finisher(self.scorer(self.teacher(images), self.student(images)))
        return self.score_head(anomaly_map), anomaly_map


class _Task:
    def __init__(self, teacher: FeatureExtractor, student: FeatureExtractor) -> None:
        self.teacher = teacher
        self.module = student

    def loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            t = self.teacher(images)
        return sum(d.mean() for d in stage_distances(t, self.module(images)))  # type: ignore[return-value]


class Stfpm(TrainedDetector):
    """STFPM anomaly detector; see the module docstring."""

    family = SPEC.family
    model_name = SPEC.name
    Params = StfpmParams

    def _networks(self, pretrained: bool | str) -> tuple[FeatureExtractor, FeatureExtractor]:
        teacher = self._make_extractor(pretrained=pretrained)
        torch.manual_seed(self.seed + 1)
        student = self._make_extractor(pretrained=False)
        student.requires_grad_(True)
        return teacher.to(self.device), student.to(self.device)

    def _training_task(self) -> _Task:
        return _Task(*self._networks(self.pretrained))

    def _assemble(self, teacher: FeatureExtractor, student: FeatureExtractor) -> StfpmInferenceModule:
        h, w = self.input_size
        grids = [(-(-h // teacher.stage_strides[s]), -(-w // teacher.stage_strides[s])) for s in teacher.stages]
        return StfpmInferenceModule(teacher, student, PyramidProduct(grids, self.input_size),
                                    AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=self.input_size))

    def _inference_module(self, task: _Task) -> StfpmInferenceModule:  # type: ignore[override]
        return self._assemble(task.teacher, task.module)

    def _empty_module(self, fitted: dict[str, Any]) -> StfpmInferenceModule:
        return self._assemble(*self._networks(False))

"""Reverse Distillation (Deng & Li, CVPR 2022): a student decoder reconstructs a frozen
encoder's features from a compact one-class embedding.

Structure, faithful to the paper with widths scaled to the encoder (EfficientNet-Lite0 here,
WRN-50 in the paper):
- **Encoder**: the pretrained backbone, frozen, three stages ``f1, f2, f3`` (finest first).
- **One-class bottleneck (OCBE)**: multi-scale feature fusion — ``f1`` through two and ``f2``
  through one 3×3 stride-2 convolution (BatchNorm, ReLU) to ``f3``'s grid, concatenated with
  ``f3``, fused by a 1×1 convolution — then a residual block with stride 2 (the one-class
  embedding, ``bottleneck_channels`` wide, at twice ``f3``'s stride).
- **Student decoder**: mirrors the encoder: per stage, deepest first, a 2×2 stride-2
  transposed convolution (BatchNorm, ReLU) to that stage's grid and width, then a residual
  block; its outputs ``d3, d2, d1`` are compared with ``f3, f2, f1``.
- **Loss**: Σ over stages of the mean over positions of ``1 − cos(f_k, d_k)``.
- **Map**: Σ over stages of the upsampled ``1 − cos`` maps, blurred (σ = ``blur_sigma``, the
  paper's 4); score: the map maximum.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.inference_module import MapMaximum, ScopedModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher
from pyimgano_deploy.models.detectors.params import require_multiple
from pyimgano_deploy.models.detectors.reverse_distillation.spec import SPEC, ReverseDistillationParams
from pyimgano_deploy.models.detectors.trained import TrainedDetector


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a (projected, when the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                  nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class OneClassBottleneck(nn.Module):
    """Encoder stages ``[f1, f2, f3]`` → one-class embedding (multi-scale fusion + a stride-2 residual block)."""

    def __init__(self, channels: list[int], width: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.align1 = nn.Sequential(_conv_bn_relu(c1, c2, 2), _conv_bn_relu(c2, c3, 2))
        self.align2 = _conv_bn_relu(c2, c3, 2)
        self.fuse = nn.Sequential(nn.Conv2d(3 * c3, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.embed = ResidualBlock(width, width, stride=2)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = features
        return self.embed(self.fuse(torch.cat([self.align1(f1), self.align2(f2), f3], dim=1)))


class StudentDecoder(nn.Module):
    """One-class embedding → ``[d1, d2, d3]`` with the encoder stages' widths and grids."""

    def __init__(self, channels: list[int], width: int) -> None:
        super().__init__()
        ups, blocks = [], []
        c_in = width
        for c in reversed(channels):
            ups.append(nn.Sequential(nn.ConvTranspose2d(c_in, c, 2, stride=2, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
            blocks.append(ResidualBlock(c, c))
            c_in = c
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for up, block in zip(self.ups, self.blocks):
            x = block(up(x))
            out.append(x)
        return out[::-1]  # finest first, like the encoder


class Student(nn.Module):
    """The trained part: bottleneck + decoder."""

    def __init__(self, channels: list[int], width: int) -> None:
        super().__init__()
        self.bottleneck = OneClassBottleneck(channels, width)
        self.decoder = StudentDecoder(channels, width)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.decoder(self.bottleneck(features))


def cosine_distances(encoder: list[torch.Tensor], decoder: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per stage ``1 − cos`` along channels → ``[B, h_k, w_k]`` fp32."""
    return [1.0 - F.cosine_similarity(e.to(torch.float32), d.to(torch.float32), dim=1) for e, d in zip(encoder, decoder)]


class CosineSum(nn.Module):
    """Encoder and decoder features → Σ over stages of the upsampled ``1 − cos`` maps ``[B, H, W]``."""

    def __init__(self, grids: list[tuple[int, int]], out_size: tuple[int, int]) -> None:
        super().__init__()
        self.upsample = nn.ModuleList(AnomalyMapFinisher(out_size, 0.0, in_size=g) for g in grids)

    def forward(self, encoder: list[torch.Tensor], decoder: list[torch.Tensor]) -> torch.Tensor:
        maps = [up(d) for up, d in zip(self.upsample, cosine_distances(encoder, decoder))]
        total = maps[0]
        for m in maps[1:]:
            total = total + m
        return total


class ReverseDistillationInferenceModule(ScopedModule):
    fp32_scopes = ("scorer", "finisher", "score_head")

    def __init__(self, encoder: FeatureExtractor, student: Student, scorer: CosineSum, finisher: AnomalyMapFinisher) -> None:
        super().__init__()
        self.encoder = encoder
        self.student = student
        self.scorer = scorer
        self.finisher = finisher
        self.score_head = MapMaximum()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(images)
        anomaly_map = self.finisher(self.scorer(features, self.student(features)))
        return self.score_head(anomaly_map), anomaly_map


class _Task:
    def __init__(self, encoder: FeatureExtractor, student: Student) -> None:
        self.encoder = encoder
        self.module = student

    def loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            features = self.encoder(images)
        return sum(d.mean() for d in cosine_distances(features, self.module(features)))  # type: ignore[return-value]


class ReverseDistillation(TrainedDetector):
    """Reverse Distillation anomaly detector; see the module docstring."""

    family = SPEC.family
    model_name = SPEC.name
    Params = ReverseDistillationParams

    def _check_size(self, encoder: FeatureExtractor) -> None:
        require_multiple(self.input_size, 2 * encoder.stage_strides[encoder.stages[-1]], "the bottleneck halves the deepest stage")

    def _networks(self, pretrained: bool | str) -> tuple[FeatureExtractor, Student]:
        encoder = self._make_extractor(pretrained=pretrained)
        self._check_size(encoder)
        torch.manual_seed(self.seed + 1)
        student = Student([encoder.stage_channels[s] for s in encoder.stages], self.params.bottleneck_channels)
        return encoder.to(self.device), student.to(self.device)

    def _training_task(self) -> _Task:
        return _Task(*self._networks(self.pretrained))

    def _assemble(self, encoder: FeatureExtractor, student: Student) -> ReverseDistillationInferenceModule:
        h, w = self.input_size
        grids = [(h // encoder.stage_strides[s], w // encoder.stage_strides[s]) for s in encoder.stages]
        return ReverseDistillationInferenceModule(encoder, student, CosineSum(grids, self.input_size),
                                                  AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=self.input_size))

    def _inference_module(self, task: _Task) -> ReverseDistillationInferenceModule:  # type: ignore[override]
        return self._assemble(task.encoder, task.module)

    def _empty_module(self, fitted: dict[str, Any]) -> ReverseDistillationInferenceModule:
        return self._assemble(*self._networks(False))

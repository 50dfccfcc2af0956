"""The one inference module every detector owns (ARCHITECTURE §3, "Detectors").

``uint8 [B, H, W, 3]`` RGB → ``score float32 [B]``, ``anomaly_map float32 [B, H, W]``. Eager
scoring and the ONNX exporter call this same module, so parity holds by construction.
"""

from __future__ import annotations

import torch
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, PatchEmbedding


class AnomalyInferenceModule(nn.Module):
    """extractor → embedding → scorer (fp32 distances) → map finisher → score = max of map.

    ``scorer`` maps an embedding ``[B, D, h, w]`` to patch scores ``[B, h, w]``. The
    extractor and embedding may run in fp16 (``half_backbone()``); the scorer always
    receives fp32 (cancellation in the expanded distance form, ARCHITECTURE §4).
    """

    def __init__(self, extractor: FeatureExtractor, embedding: PatchEmbedding, scorer: nn.Module, finisher: AnomalyMapFinisher) -> None:
        super().__init__()
        self.extractor = extractor
        self.embedding = embedding
        self.scorer = scorer
        self.finisher = finisher

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extractor(images)
        emb = self.embedding(features).to(torch.float32)
        patch_scores = self.scorer(emb)
        anomaly_map = self.finisher(patch_scores)
        score = anomaly_map.amax(dim=(1, 2))
        return score, anomaly_map

    def half_backbone(self) -> "AnomalyInferenceModule":
        """Put the feature extractor (and embedding constants) in fp16; the head stays fp32."""
        self.extractor.half()
        return self

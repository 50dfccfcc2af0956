"""The inference-module protocol every detector's model satisfies (ARCHITECTURE §3).

``uint8 [B, H, W, 3]`` RGB → ``score float32 [B]``, ``anomaly_map float32 [B, H, W]``. Eager
scoring and the ONNX exporter call the same module, so parity holds by construction. Each
module declares its **fp32 scopes**: the dotted module paths whose ops must stay fp32 in
fp16 / TensorRT builds (distances, statistics, map finishing, score reduction). The exporter
records them in the manifest; fp16 export halves everything outside them, and the TensorRT
builder pins every layer inside them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, PatchEmbedding
from pyimgano_deploy.models.detectors.params import IMAGE_SCORES


@runtime_checkable
class InferenceModule(Protocol):
    """What the exporter, the eager scorer and the TensorRT builder rely on."""

    fp32_scopes: tuple[str, ...]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def half_outside_fp32_scopes(self) -> nn.Module: ...


def half_outside(module: nn.Module, scopes: tuple[str, ...], prefix: str = "") -> None:
    """Cast to fp16 every submodule of ``module`` that is not inside one of ``scopes``
    (dotted paths relative to the root); parameters of a scope stay fp32."""
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if path in scopes:
            continue
        if any(s.startswith(path + ".") for s in scopes):
            half_outside(child, scopes, path + ".")
        else:
            child.half()


class ScopedModule(nn.Module):
    """Base of inference modules: ``fp32_scopes`` plus the fp16 conversion that honours them.

    Forward methods cast to fp32 where data enters a scope, so a half-precision backbone
    feeds an fp32 head.
    """

    fp32_scopes: tuple[str, ...] = ()

    def half_outside_fp32_scopes(self) -> "ScopedModule":
        half_outside(self, tuple(self.fp32_scopes))
        return self


class MapMaximum(nn.Module):
    """Anomaly map ``[B, H, W]`` → image score ``[B]``: its maximum (fp32)."""

    def forward(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        return anomaly_map.to(torch.float32).amax(dim=(1, 2))


class MapMean(nn.Module):
    """Anomaly map ``[B, H, W]`` → image score ``[B]``: its mean (fp32)."""

    def forward(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        return anomaly_map.to(torch.float32).mean(dim=(1, 2))


def image_score_head(kind: str) -> nn.Module:
    """The reduction named by ``kind`` (:data:`~.params.IMAGE_SCORES`)."""
    heads = dict(zip(IMAGE_SCORES, (MapMaximum, MapMean)))
    if kind not in heads:
        raise ValueError(f"image_score must be one of {list(IMAGE_SCORES)}, got {kind!r}")
    return heads[kind]()


class AnomalyInferenceModule(ScopedModule):
    """extractor → embedding → scorer (fp32 distances) → map finisher → score = max (or mean) of map.

    ``scorer`` maps an embedding ``[B, D, h, w]`` to patch scores ``[B, h, w]``.
    """

    fp32_scopes = ("scorer", "finisher", "score_head")

    def __init__(self, extractor: FeatureExtractor, embedding: PatchEmbedding, scorer: nn.Module, finisher: AnomalyMapFinisher,
                 *, image_score: str = "max") -> None:
        super().__init__()
        self.extractor = extractor
        self.embedding = embedding
        self.scorer = scorer
        self.finisher = finisher
        self.score_head = image_score_head(image_score)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding ``[B, D, h, w]`` in fp32 (the scorer's input)."""
        return self.embedding(self.extractor(images)).to(torch.float32)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = self.finisher(self.scorer(self.embed(images)))
        return self.score_head(anomaly_map), anomaly_map

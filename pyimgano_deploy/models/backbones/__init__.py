"""Backbones (ResNet-18, Wide-ResNet-50-2, EfficientNet-Lite0/1/2, DINOv2 ViT-S/14) and the multi-stage feature extractor.

Written in-project (no torchvision/timm import); parameter names match the published
checkpoints so local weight files load with ``strict=True``.
"""

from pyimgano_deploy.models.backbones.efficientnet_lite import (
    EfficientNetLite,
    efficientnet_lite,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    lite0_weights_file,
    lite_weights_file,
)
from pyimgano_deploy.models.backbones.feature_extractor import (
    FeatureExtractor,
    create_feature_extractor,
    feature_extractor_from_spec,
    list_backbones,
)
from pyimgano_deploy.models.backbones.resnet import TORCHVISION_URLS, ResNet, resnet18, wide_resnet50_2

__all__ = [
    "EfficientNetLite",
    "FeatureExtractor",
    "ResNet",
    "TORCHVISION_URLS",
    "create_feature_extractor",
    "efficientnet_lite",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "feature_extractor_from_spec",
    "lite0_weights_file",
    "lite_weights_file",
    "list_backbones",
    "resnet18",
    "wide_resnet50_2",
]

"""ResNet-18 and Wide-ResNet-50-2, laid out so torchvision's published checkpoints load strictly.

Module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc`` ...) and
shapes follow torchvision's ImageNet models, so a ``resnet18-f37072fd.pth`` or
``wide_resnet50_2-95faca4d.pth`` saved by torchvision loads with ``strict=True``. The
bottleneck puts its stride on the 3x3 convolution ("ResNet v1.5"), as torchvision does.

Besides the classifier ``forward``, every network here offers the small stage protocol used by
:class:`~pyimgano_deploy.models.backbones.feature_extractor.FeatureExtractor`:
``stage_names``, ``stage_channels``, ``stage_strides``, ``forward_stages(x, upto)`` and
``truncate(upto)``.
"""

from __future__ import annotations

import os
from typing import Type, Union

import torch
from torch import Tensor, nn

from pyimgano_deploy.models.backbones.weights import (
    PretrainedArg,
    download_state_dict,
    is_local_source,
    load_local_state_dict,
    load_strict,
    resolve_pretrained,
)

TORCHVISION_BASE_URL = "https://download.pytorch.org/models/"
TORCHVISION_URLS: dict[str, str] = {
    "resnet18": TORCHVISION_BASE_URL + "resnet18-f37072fd.pth",
    "wide_resnet50_2": TORCHVISION_BASE_URL + "wide_resnet50_2-95faca4d.pth",
}

RESNET_STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
RESNET_STRIDES: dict[str, int] = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}

# ImageNet statistics the torchvision checkpoints were trained with (RGB, on [0, 1] inputs).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, base_width: int = 64) -> None:
        super().__init__()
        if base_width != 64:
            raise ValueError(f"base_width: BasicBlock supports only 64, got {base_width}")
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(in_ch, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4; ``base_width`` 128 gives the 'wide' variant."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = planes * base_width // 64
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = Union[Type[BasicBlock], Type[Bottleneck]]


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (keys ``downsample.0`` conv, ``downsample.1`` BN) when shapes change."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class ResNet(nn.Module):
    """ImageNet ResNet: 7x7/2 stem, 3x3/2 max-pool, four stages, global pool, linear classifier."""

    stage_names: tuple[str, ...] = RESNET_STAGES
    stage_strides: dict[str, int] = RESNET_STRIDES

    def __init__(
        self,
        block: Block,
        blocks_per_stage: tuple[int, int, int, int],
        *,
        base_width: int = 64,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        in_ch = 64
        self.stage_channels: dict[str, int] = {}
        for index, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            stride = 1 if index == 0 else 2
            layers = []
            for i in range(n_blocks):
                layers.append(block(in_ch, planes, stride if i == 0 else 1, base_width))
                in_ch = planes * block.expansion
            name = RESNET_STAGES[index]
            setattr(self, name, nn.Sequential(*layers))
            self.stage_channels[name] = in_ch

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's scheme: Kaiming-normal (fan_out, ReLU) convs, BN γ=1 β=0, default Linear."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stages(self, x: Tensor, upto: str) -> dict[str, Tensor]:
        """Stage outputs from ``layer1`` through ``upto`` (inclusive); later stages are not run."""
        last = self.stage_names.index(upto)
        out: dict[str, Tensor] = {}
        x = self.stem(x)
        for name in self.stage_names[: last + 1]:
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def truncate(self, upto: str) -> None:
        """Drop every module after stage ``upto`` (and the classifier) to save memory."""
        last = self.stage_names.index(upto)
        for name in self.stage_names[last + 1 :]:
            delattr(self, name)
        del self.avgpool, self.fc

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits for a normalised float NCHW batch."""
        x = self.forward_stages(x, "layer4")["layer4"]
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _build(name: str, pretrained: PretrainedArg, weights: str | os.PathLike[str] | None) -> ResNet:
    pretrained = resolve_pretrained(pretrained, weights)
    if name == "resnet18":
        model = ResNet(BasicBlock, (2, 2, 2, 2))
    elif name == "wide_resnet50_2":
        model = ResNet(Bottleneck, (3, 4, 6, 3), base_width=128)
    else:
        raise ValueError(f"name: unknown ResNet {name!r}; expected one of {sorted(TORCHVISION_URLS)}")
    if is_local_source(pretrained):
        state = load_local_state_dict(pretrained)  # type: ignore[arg-type]
        load_strict(model, state, model_name=name, source=str(pretrained))
    elif pretrained:
        url = TORCHVISION_URLS[name]
        load_strict(model, download_state_dict(url, model_name=name), model_name=name, source=url)
    return model


def resnet18(pretrained: PretrainedArg = False, *, weights: str | os.PathLike[str] | None = None) -> ResNet:
    """ResNet-18 (11.7 M parameters); ``pretrained`` False, True (torchvision weights) or a path.

    ``weights=path`` is an alias of ``pretrained=path``.
    """
    return _build("resnet18", pretrained, weights)


def wide_resnet50_2(
    pretrained: PretrainedArg = False, *, weights: str | os.PathLike[str] | None = None
) -> ResNet:
    """Wide-ResNet-50-2 (68.9 M parameters); ``pretrained`` False, True or a path (or ``weights=path``)."""
    return _build("wide_resnet50_2", pretrained, weights)

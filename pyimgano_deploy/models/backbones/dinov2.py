"""DINOv2 ViT-S/14 (Oquab et al., 2023), written in-project with the official state-dict keys.

Keys match Meta's ``dinov2_vits14_pretrain.pth`` (``cls_token``, ``pos_embed``, ``mask_token``,
``patch_embed.proj.*``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}.*``,
``norm.*``), so that file loads with ``strict=True``. The weights cannot be installed from a
package registry: they load only from a local file the user downloaded.

Feature stages ``block1`` … ``block12`` are the patch tokens after that block, passed through
the final LayerNorm (as ``get_intermediate_layers(norm=True)``), laid out ``[B, 384, H/14, W/14]``.
Position embeddings are interpolated bicubically from the 37 × 37 training grid, with the
official 0.1 offset and no antialiasing.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyimgano_deploy.models.backbones.weights import PretrainedArg, is_local_source, load_local_state_dict, load_strict, resolve_pretrained

PATCH = 14
DIM = 384
DEPTH = 12
HEADS = 6
MLP_RATIO = 4
TRAIN_GRID = 37  # 518 px / 14
WEIGHTS_FILE = "dinov2_vits14_pretrain.pth"
WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"


class PatchEmbed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, DIM, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, h·w, DIM]


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        self.scale = (DIM // HEADS) ** -0.5

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        qkv = self.qkv(x).reshape(-1, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)), dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(-1, n, DIM))


class LayerScale(nn.Module):
    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((DIM,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(DIM, DIM * MLP_RATIO)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(DIM * MLP_RATIO, DIM)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM, eps=1e-6)
        self.attn = Attention()
        self.ls1 = LayerScale()
        self.norm2 = nn.LayerNorm(DIM, eps=1e-6)
        self.mlp = Mlp()
        self.ls2 = LayerScale()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViTS14(nn.Module):
    """ViT-S/14 trunk (no head); :meth:`forward_stages` gives per-block patch-token maps."""

    stage_names: tuple[str, ...] = tuple(f"block{i}" for i in range(1, DEPTH + 1))
    stage_strides: dict[str, int] = {name: PATCH for name in stage_names}
    stage_channels: dict[str, int] = {name: DIM for name in stage_names}

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, TRAIN_GRID * TRAIN_GRID + 1, DIM))
        self.mask_token = nn.Parameter(torch.zeros(1, DIM))  # unused at inference; kept for the official keys
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _pos_embed(self, rows: int, cols: int) -> Tensor:
        if rows == TRAIN_GRID and cols == TRAIN_GRID:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patch_pos.reshape(1, TRAIN_GRID, TRAIN_GRID, DIM).permute(0, 3, 1, 2)
        scale = ((rows + 0.1) / TRAIN_GRID, (cols + 0.1) / TRAIN_GRID)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, DIM)], dim=1)

    def _stage_end(self, name: str) -> int:
        return self.stage_names.index(name)

    def forward_stages(self, x: Tensor, upto: str) -> dict[str, Tensor]:
        """``x [B, 3, H, W]`` normalised → ``{block_i: [B, 384, H//14, W//14]}`` for blocks 1..``upto``."""
        with warnings.catch_warnings():
            # H and W are static in the input contract (only the batch axis varies), so the
            # grid is a constant of the traced graph, as the tracer warns it will be.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            rows, cols = int(x.shape[2]) // PATCH, int(x.shape[3]) // PATCH
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self._pos_embed(rows, cols)
        out: dict[str, Tensor] = {}
        for index in range(self._stage_end(upto) + 1):
            tokens = self.blocks[index](tokens)
            patches = self.norm(tokens)[:, 1:]
            out[self.stage_names[index]] = patches.transpose(1, 2).reshape(-1, DIM, rows, cols)
        return out

    def truncate(self, upto: str) -> None:
        """Keep the blocks up to ``upto``."""
        self.blocks = nn.ModuleList(list(self.blocks)[: self._stage_end(upto) + 1])


def dinov2_vits14(pretrained: PretrainedArg = False, *, weights: str | os.PathLike[str] | None = None) -> DinoV2ViTS14:
    """DINOv2 ViT-S/14 (22 M parameters); ``pretrained`` False or a path to the official file.

    ``pretrained=True`` is refused with where to get the file: no package registry ships it.
    """
    pretrained = resolve_pretrained(pretrained, weights)
    model = DinoV2ViTS14()
    if pretrained is True:
        raise RuntimeError(
            "dinov2_vits14 has no installable pretrained weights. Download "
            f"{WEIGHTS_URL} on a machine with network access, copy it here and pass "
            f"pretrained='/path/to/{WEIGHTS_FILE}' (or pretrained=False for a random-init backbone)"
        )
    if is_local_source(pretrained):
        load_strict(model, load_local_state_dict(pretrained), model_name="dinov2_vits14", source=str(pretrained))  # type: ignore[arg-type]
    return model


__all__ = ["DinoV2ViTS14", "PATCH", "WEIGHTS_FILE", "WEIGHTS_URL", "dinov2_vits14"]

"""DRAEM (Zavrtanik et al., ICCV 2021): reconstruction + discrimination, trained on simulated anomalies.

Structure, faithful to the paper with widths scaled down for CPU (``reconstruction_width`` 16
and ``segmentation_width`` 16 instead of 128 and 64):
- **Reconstructive subnetwork**: an encoder–decoder without skips (four levels of two 3×3
  conv + BatchNorm + ReLU, 2× max-pooling; bilinear upsampling back), trained to restore the
  anomaly-free image from the augmented one. Loss: L2 + (1 − SSIM) (11 × 11 Gaussian window).
- **Discriminative subnetwork**: a U-Net on ``[image, reconstruction]`` (6 channels) with skip
  connections and two output channels; focal loss (γ = 2) against the simulated mask.
- **Simulated anomalies**: Perlin masks of random scale filled with a texture, blended with
  β ~ U(0, 0.8), on half of the images (:mod:`.anomalies`). Texture source: ``texture_dir``
  when given (the paper's DTD cannot be downloaded here); otherwise the fit images
  themselves, drawn at random and augmented (flips, rotation, brightness, contrast).
- **Map**: the softmax anomaly channel of the discriminative output (blurred only when
  ``blur_sigma`` > 0); **score**: the maximum of its ``score_pool`` × ``score_pool`` average-pooled
  map (the paper's 21).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.draem.anomalies import simulate
from pyimgano_deploy.models.detectors.draem.spec import SPEC, DraemParams
from pyimgano_deploy.models.detectors.inference_module import ScopedModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, gaussian_kernel1d
from pyimgano_deploy.models.detectors.trained import TrainedDetector


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class EncoderDecoder(nn.Module):
    """Four-level encoder–decoder; ``skips`` makes it a U-Net. ``[B, c_in, H, W]`` → ``[B, c_out, H, W]``."""

    def __init__(self, c_in: int, c_out: int, width: int, *, skips: bool) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.skips = skips
        self.down = nn.ModuleList()
        c = c_in
        for w in widths:
            self.down.append(_double_conv(c, w))
            c = w
        self.middle = _double_conv(c, c)
        self.up = nn.ModuleList()
        for w in reversed(widths):
            self.up.append(_double_conv(c + (w if skips else 0), w))
            c = w
        self.head = nn.Conv2d(c, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = []
        for block in self.down:
            x = block(x)
            kept.append(x)
            x = F.max_pool2d(x, 2)
        x = self.middle(x)
        for block, skip in zip(self.up, reversed(kept)):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1) if self.skips else x)
        return self.head(x)


class DraemNetworks(nn.Module):
    """uint8 ``[B, H, W, 3]`` → (reconstruction, segmentation logits ``[B, 2, H, W]``); :meth:`segment`
    does the same from an image in [0, 1] ``[B, 3, H, W]`` (training)."""

    def __init__(self, reconstruction_width: int, segmentation_width: int) -> None:
        super().__init__()
        self.reconstructive = EncoderDecoder(3, 3, reconstruction_width, skips=False)
        self.discriminative = EncoderDecoder(6, 2, segmentation_width, skips=True)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2).to(next(self.parameters()).dtype) / 255.0

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon = self.reconstructive(x)
        return recon, self.discriminative(torch.cat([x, recon], dim=1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.segment(self.to_unit(images))


class AnomalyChannel(nn.Module):
    """Segmentation logits ``[B, 2, H, W]`` → softmax probability of the anomaly channel ``[B, H, W]`` fp32."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.to(torch.float32), dim=1)[:, 1]


class PooledMaximum(nn.Module):
    """Map ``[B, H, W]`` → maximum of its ``k × k`` average pooling (zero padding counted) ``[B]``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = int(k)

    def forward(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(anomaly_map.to(torch.float32).unsqueeze(1), self.k, stride=1, padding=self.k // 2)
        return pooled.flatten(1).amax(dim=1)


class DraemInferenceModule(ScopedModule):
    fp32_scopes = ("segmentation", "finisher", "score_head")

    def __init__(self, nets: DraemNetworks, finisher: AnomalyMapFinisher, pool: int) -> None:
        super().__init__()
        self.nets = nets
        self.segmentation = AnomalyChannel()
        self.finisher = finisher
        self.score_head = PooledMaximum(pool)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, logits = self.nets(images)
        anomaly_map = self.finisher(self.segmentation(logits))
        return self.score_head(anomaly_map), anomaly_map


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two ``[B, C, H, W]`` images in [0, 1] (Gaussian window, per channel)."""
    k = gaussian_kernel1d(sigma, a.dtype).to(a.device)
    if k.numel() > window:  # the paper's 11-tap window, centred and renormalised
        mid, r = k.numel() // 2, window // 2
        k = k[mid - r : mid + r + 1]
        k = k / k.sum()
    c = a.shape[1]
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    pad = (k.numel() // 2, k.numel() // 2, k.numel() // 2, k.numel() // 2)

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, pad, mode="reflect")
        return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean()


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss of 2-class logits ``[B, 2, H, W]`` against a binary mask ``[B, 1, H, W]``."""
    log_p = F.log_softmax(logits.to(torch.float32), dim=1)
    target = mask.squeeze(1).long()
    log_pt = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    return (-((1.0 - log_pt.exp()) ** gamma) * log_pt).mean()


class _Task:
    def __init__(self, nets: DraemNetworks, textures: np.ndarray) -> None:
        self.module = nets
        self.textures = torch.from_numpy(textures).permute(0, 3, 1, 2)  # uint8 [T, 3, H, W]

    def loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x = self.module.to_unit(images)
        picks = torch.randint(0, self.textures.shape[0], (x.shape[0],), generator=generator)
        textures = self.textures[picks].to(x.device, x.dtype) / 255.0
        augmented, mask = simulate(x, textures, generator)
        recon, logits = self.module.segment(augmented)
        return F.mse_loss(recon, x) + (1.0 - ssim(recon, x)) + focal_loss(logits, mask)


class Draem(TrainedDetector):
    """DRAEM anomaly detector; see the module docstring."""

    family = SPEC.family
    model_name = SPEC.name
    Params = DraemParams

    def _fit(self, source: BatchSource) -> nn.Module:
        self._fit_source = source  # cached after the first pass: the default texture source
        return super()._fit(source)

    def _textures(self) -> np.ndarray:
        folder = self.params.texture_dir
        if folder is None:
            return np.concatenate(list(self._fit_source))
        files = sorted(p for p in Path(folder).iterdir() if p.is_file()) if Path(folder).is_dir() else []
        if not files:
            raise ValueError(f"texture_dir {folder}: expected a folder of texture images, found none")
        return np.concatenate(list(self.batch_source([str(p) for p in files], desc="reading textures")))

    def _networks(self) -> DraemNetworks:
        torch.manual_seed(self.seed)
        return DraemNetworks(self.params.reconstruction_width, self.params.segmentation_width).to(self.device)

    def _training_task(self) -> _Task:
        return _Task(self._networks(), self._textures())

    def _assemble(self, nets: DraemNetworks) -> DraemInferenceModule:
        finisher = AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=self.input_size)
        return DraemInferenceModule(nets, finisher, self.params.score_pool)

    def _inference_module(self, task: _Task) -> DraemInferenceModule:  # type: ignore[override]
        return self._assemble(task.module)

    def _empty_module(self, fitted: dict[str, Any]) -> DraemInferenceModule:
        return self._assemble(self._networks())

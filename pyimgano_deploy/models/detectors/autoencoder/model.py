"""A small convolutional autoencoder (the ``micro-finetune-autoencoder`` recipe).

Encoder: per width, a 3×3 stride-2 convolution, BatchNorm, ReLU; decoder: the mirror with 4×4
stride-2 transposed convolutions; a sigmoid gives the reconstruction in [0, 1]. Loss: mean
squared error on the [0, 1] image. Map: the mean over channels of the squared error per
pixel, blurred (σ = ``blur_sigma``); score: its maximum.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pyimgano_deploy.models.detectors.autoencoder.spec import SPEC, AutoencoderParams
from pyimgano_deploy.models.detectors.inference_module import MapMaximum, ScopedModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher
from pyimgano_deploy.models.detectors.trained import TrainedDetector


class ConvAutoencoder(nn.Module):
    """uint8 ``[B, H, W, 3]`` → (image in [0, 1] ``[B, 3, H, W]``, reconstruction, same shape)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        enc: list[nn.Module] = []
        c = 3
        for w in widths:
            enc += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        dec: list[nn.Module] = []
        for w in list(reversed(widths[:-1])) + [None]:
            out = 3 if w is None else w
            dec.append(nn.ConvTranspose2d(c, out, 4, stride=2, padding=1, bias=w is None))
            if w is not None:
                dec += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec, nn.Sigmoid())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = next(self.parameters()).dtype
        x = images.permute(0, 3, 1, 2).to(dtype) / 255.0
        return x, self.decoder(self.encoder(x))


class ReconstructionError(nn.Module):
    """(image, reconstruction) ``[B, 3, H, W]`` → mean squared error over channels ``[B, H, W]`` fp32."""

    def forward(self, x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        return ((x.to(torch.float32) - recon.to(torch.float32)) ** 2).mean(dim=1)


class AutoencoderInferenceModule(ScopedModule):
    fp32_scopes = ("error", "finisher", "score_head")

    def __init__(self, net: ConvAutoencoder, finisher: AnomalyMapFinisher) -> None:
        super().__init__()
        self.net = net
        self.error = ReconstructionError()
        self.finisher = finisher
        self.score_head = MapMaximum()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        anomaly_map = self.finisher(self.error(*self.net(images)))
        return self.score_head(anomaly_map), anomaly_map


class _Task:
    def __init__(self, net: ConvAutoencoder) -> None:
        self.module = net

    def loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x, recon = self.module(images)
        return torch.mean((x - recon) ** 2)


class Autoencoder(TrainedDetector):
    """Convolutional autoencoder detector; see the module docstring."""

    family = SPEC.family
    model_name = SPEC.name
    Params = AutoencoderParams

    def _training_task(self) -> _Task:
        return _Task(ConvAutoencoder(list(self.params.widths)))

    def _assemble(self, net: ConvAutoencoder) -> AutoencoderInferenceModule:
        return AutoencoderInferenceModule(net, AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=self.input_size))

    def _inference_module(self, task: _Task) -> AutoencoderInferenceModule:  # type: ignore[override]
        return self._assemble(task.module)

    def _empty_module(self, fitted: dict[str, Any]) -> AutoencoderInferenceModule:
        return self._assemble(ConvAutoencoder(list(self.params.widths)))

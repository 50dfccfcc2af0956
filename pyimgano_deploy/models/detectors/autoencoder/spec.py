"""The autoencoder's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyimgano_deploy.models.detectors.params import TrainedParams, require_multiple
from pyimgano_deploy.models.detectors.spec import DetectorSpec


@dataclass
class AutoencoderParams(TrainedParams):
    """``widths``: channels of the encoder's stride-2 convolutions (the decoder mirrors them;
    sizes must be multiples of 2^len(widths)). ``backbone``/``stages``/``pretrained`` are not
    used: the network is trained from scratch."""

    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    epochs: int = 40
    pretrained: bool | str = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.widths or not all(isinstance(w, int) and w >= 1 for w in self.widths):
            raise ValueError(f"widths must be a non-empty list of channel counts >= 1, got {self.widths!r}")
        require_multiple(self.center_crop or self.image_size, 2 ** len(self.widths), f"{len(self.widths)} stride-2 levels")  # type: ignore[arg-type]


SPEC = DetectorSpec(
    name="vision_autoencoder",
    family="autoencoder",
    target="pyimgano_deploy.models.detectors.autoencoder.model:Autoencoder",
    params=AutoencoderParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "trained", "amp", "fp16"}),
    summary="small convolutional autoencoder trained on the normals; map = per-pixel reconstruction error (the micro-finetune-autoencoder recipe)",
    paper="(baseline) convolutional autoencoder, reconstruction error",
    head="mean over channels of the squared reconstruction error, blurred; score = its maximum",
    memory="the network's parameters × 4 bytes (≈ 9 × Σ widths[i−1]·widths[i] × 2 for encoder and decoder)",
    small_kwargs={"widths": [8, 16], "epochs": 2},
)

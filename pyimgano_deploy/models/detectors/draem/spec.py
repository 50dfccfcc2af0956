"""DRAEM's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.params import TrainedParams, require_multiple
from pyimgano_deploy.models.detectors.spec import DetectorSpec


@dataclass
class DraemParams(TrainedParams):
    """``reconstruction_width`` / ``segmentation_width``: base channels of the two
    subnetworks (the paper's 128 and 64, scaled down for CPU); ``texture_dir``: a folder of
    texture images for the simulated anomalies (the paper's DTD); None uses the fit images
    themselves, shuffled and augmented. ``score_pool``: side of the average pooling before
    the image score's maximum (the paper's 21). ``backbone``/``stages``/``pretrained`` are
    unused: both networks train from scratch. Training: Adam; lr 1e-3 for a short CPU
    schedule (the paper's 1e-4 runs for 700 epochs). ``min_steps`` stays 0: 450 steps on the 22
    hazelnut images (150 epochs) made the map worse, not better (docs/DETECTORS.md). Sizes must
    be multiples of 16."""

    pretrained: bool | str = False
    blur_sigma: float = 0.0
    epochs: int = 15
    batch_size: int = 8
    lr: float = 1e-3
    reconstruction_width: int = 16
    segmentation_width: int = 16
    texture_dir: str | None = None
    score_pool: int = 21

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("reconstruction_width", "segmentation_width"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"{key} must be an int >= 2, got {value!r}")
        if not isinstance(self.score_pool, int) or self.score_pool < 1 or self.score_pool % 2 == 0:
            raise ValueError(f"score_pool must be an odd int >= 1, got {self.score_pool!r}")
        require_multiple(self.center_crop or self.image_size, 16, "four 2× poolings")  # type: ignore[arg-type]


SPEC = DetectorSpec(
    name="vision_draem",
    family="draem",
    target="pyimgano_deploy.models.detectors.draem.model:Draem",
    params=DraemParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "trained", "amp", "fp16"}),
    summary="reconstructive + discriminative networks trained on simulated (Perlin-mask) anomalies; map = the predicted anomaly mask",
    paper="Zavrtanik et al., DRÆM – A discriminatively trained reconstruction embedding for surface anomaly detection (ICCV 2021)",
    head="softmax anomaly channel of the discriminative U-Net; score = maximum of its 21 × 21 average-pooled map",
    memory="the two networks' parameters × 4 bytes (≈ 2 × 4 MB at the default widths)",
    small_kwargs={"epochs": 2, "reconstruction_width": 4, "segmentation_width": 4, "batch_size": 4},
)

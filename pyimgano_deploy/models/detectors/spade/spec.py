"""SPADE's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.params import CommonParams
from pyimgano_deploy.models.detectors.spec import DetectorSpec

#: Pixel stages and the (deeper) image stage per backbone: the pixel grid is that of the
#: first pixel stage; the image stage is pooled globally for the image-level kNN.
DEFAULT_STAGES = {"efficientnet_lite0": (("s8", "s16"), "s32"), "efficientnet_lite1": (("s8", "s16"), "s32"),
                  "efficientnet_lite2": (("s8", "s16"), "s32"), "resnet18": (("layer1", "layer2", "layer3"), "layer4"),
                  "wide_resnet50_2": (("layer1", "layer2", "layer3"), "layer4")}


@dataclass
class SpadeParams(CommonParams):
    """``k_images``: nearest normal images retrieved per query by pooled deep features (the
    paper's K; its MVTec setting is 50); ``image_stage``: the backbone stage pooled for that
    retrieval (None: the backbone's default); ``stages``: the pixel-feature stages;
    ``max_gallery_bytes``: refuse to fit a gallery larger than this (bytes, fp32)."""

    k_images: int = 10
    image_stage: str | None = None
    max_gallery_bytes: int = 2 << 30

    def __post_init__(self) -> None:
        super().__post_init__()
        pixel, image = DEFAULT_STAGES.get(self.backbone, (None, None))
        if self.stages is None:
            self.stages = pixel
        if self.image_stage is None:
            self.image_stage = image
        if self.stages is None or self.image_stage is None:
            raise ValueError(f"backbone {self.backbone!r} has no SPADE default stages; pass stages=[...] and image_stage=...")
        if self.image_stage in self.stages:
            raise ValueError(f"image_stage {self.image_stage!r} is also a pixel stage; choose a deeper stage than {list(self.stages)}")
        if not isinstance(self.k_images, int) or self.k_images < 1:
            raise ValueError(f"k_images must be an int >= 1, got {self.k_images!r}")
        if self.max_gallery_bytes < 1:
            raise ValueError(f"max_gallery_bytes must be >= 1, got {self.max_gallery_bytes}")


SPEC = DetectorSpec(
    name="vision_spade",
    family="spade",
    target="pyimgano_deploy.models.detectors.spade.model:Spade",
    params=SpadeParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "memory_bank", "knn", "fp16"}),
    summary="image-level kNN on pooled deep features, then pixel-level nearest neighbours in the K retrieved normal images",
    paper="Cohen & Hoshen, Sub-Image Anomaly Detection with Deep Pyramid Correspondences (arXiv 2020)",
    head="GEMM over the pooled gallery, TopK(K), Gather of the K feature-map galleries, batched GEMM, ReduceMin",
    memory="fit images × (pixel positions × (pixel feature dim + 1) + image feature dim + 1) × 4 bytes; capped by max_gallery_bytes",
    small_kwargs={"k_images": 3},
)

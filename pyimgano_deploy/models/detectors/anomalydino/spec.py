"""AnomalyDINO's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.coreset import DEFAULT_PROJECTION_DIM
from pyimgano_deploy.models.detectors.params import CommonParams, require_multiple
from pyimgano_deploy.models.detectors.spec import DetectorSpec

VIT_PATCH = 14


@dataclass
class AnomalyDinoParams(CommonParams):
    """DINOv2 ViT-S/14 patch features of the last block (``stages``), cosine distance to a
    memory bank of normal patches. ``pretrained``: the path of Meta's
    ``dinov2_vits14_pretrain.pth`` (True is refused: no package ships it; False: random init).
    ``image_size``: multiples of 14 px (the paper's default 448). ``top_fraction``: image score
    = mean of this share of the highest patch distances (the paper's 1 %). ``coreset_ratio``:
    share of patches kept in the bank (1.0 = the paper's full bank). ``masking``: zero-shot
    foreground masking by the first principal component of the fit patches."""

    backbone: str = "dinov2_vits14"
    image_size: int | tuple[int, int] | list[int] = 448
    top_fraction: float = 0.01
    coreset_ratio: float = 0.1
    coreset_projection_dim: int = DEFAULT_PROJECTION_DIM
    masking: bool = False
    bank_chunk_size: int = 16384

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stages is None:
            self.stages = ("block12",)
        require_multiple(self.center_crop or self.image_size, VIT_PATCH, "the ViT's 14 px patches")  # type: ignore[arg-type]
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if self.bank_chunk_size < 256:
            raise ValueError(f"bank_chunk_size must be >= 256, got {self.bank_chunk_size}")


SPEC = DetectorSpec(
    name="vision_anomalydino",
    family="anomalydino",
    target="pyimgano_deploy.models.detectors.anomalydino.model:AnomalyDino",
    params=AnomalyDinoParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "memory_bank", "knn", "vit", "fp16"}),
    summary="DINOv2 ViT-S/14 patch features, cosine nearest neighbour in a bank of normal patches, mean of the top 1 % patch distances",
    paper="Damm et al., AnomalyDINO: Boosting Patch-based Few-shot Anomaly Detection with DINOv2 (WACV 2025)",
    head="nearest neighbour (cosine distance on L2-normalised patches), TopK mean for the image score",
    memory="bank_size × (384 + 1) × 4 bytes; bank_size = coreset_ratio × fit images × (H/14 × W/14)",
    packaged_weights=False,
    notes=("weights: Meta's dinov2_vits14_pretrain.pth from a local file (pretrained='/path/...')",),
    small_kwargs={"stages": ["block1"], "image_size": 84, "coreset_ratio": 0.5},
)

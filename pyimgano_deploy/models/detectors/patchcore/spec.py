"""PatchCore's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.coreset import DEFAULT_PROJECTION_DIM
from pyimgano_deploy.models.detectors.params import MapScoreParams, require_neighbourhood
from pyimgano_deploy.models.detectors.spec import DetectorSpec

TOPK_LIMIT = 3840  # TensorRT's TopK limit


@dataclass
class PatchCoreParams(MapScoreParams):
    """``neighbourhood``: side of the square of grid positions each patch feature is averaged
    over (the paper's p; 1 = no aggregation); ``projection_dim``: channels after adaptive
    pooling (None: keep all); ``coreset_ratio``: share of patches kept in the bank; ``k``:
    nearest neighbours averaged per patch;
    ``reweight``: the paper's image-score re-weighting over ``reweight_neighbors`` bank rows;
    ``bank_chunk_size``: bank columns per static GEMM chunk in the graph."""

    neighbourhood: int = 3
    projection_dim: int | None = None
    coreset_ratio: float = 0.1
    coreset_projection_dim: int = DEFAULT_PROJECTION_DIM
    k: int = 1
    reweight: bool = False
    reweight_neighbors: int = 9
    bank_chunk_size: int = 16384

    def __post_init__(self) -> None:
        super().__post_init__()
        require_neighbourhood(self.neighbourhood)
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if not 1 <= self.k <= TOPK_LIMIT:
            raise ValueError(f"k must be in 1..{TOPK_LIMIT} (TensorRT's TopK limit), got {self.k}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1 or None, got {self.projection_dim}")
        if self.reweight and self.image_score != "max":
            raise ValueError(f"reweight re-weights the map maximum (the paper's eq. 7); use image_score='max' with it, got {self.image_score!r}")
        if self.reweight and self.reweight_neighbors < 2:
            raise ValueError(f"reweight_neighbors must be >= 2 when reweight=True, got {self.reweight_neighbors}")
        if self.bank_chunk_size < 256:
            raise ValueError(f"bank_chunk_size must be >= 256, got {self.bank_chunk_size}")


SPEC = DetectorSpec(
    name="vision_patchcore",
    family="patchcore",
    target="pyimgano_deploy.models.detectors.patchcore.model:PatchCore",
    params=PatchCoreParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "memory_bank", "knn", "fp16"}),
    summary="locally aware patch features, greedy k-centre coreset bank, nearest-neighbour patch distance",
    paper="Roth et al., Towards Total Recall in Industrial Anomaly Detection (CVPR 2022)",
    head="nearest neighbour in a greedy k-centre coreset memory bank",
    memory="bank_size × feature_dim × 4 bytes (plus ‖B‖², bank_size × 4 bytes); bank_size = coreset_ratio × fit images × grid positions",
    small_kwargs={"coreset_ratio": 0.25},
)

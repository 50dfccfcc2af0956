"""SoftPatch's spec and parameters (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from pyimgano_deploy.models.detectors.patchcore.spec import PatchCoreParams
from pyimgano_deploy.models.detectors.spec import DetectorSpec

OUTLIER_METHODS = ("lof", "knn")


@dataclass
class SoftPatchParams(PatchCoreParams):
    """PatchCore's parameters, plus patch-level denoising before the coreset:
    ``outlier``: per-position outlier score across fit images, ``"lof"`` (local outlier
    factor, the paper's best) or ``"knn"`` (mean distance to the ``outlier_k`` nearest);
    ``outlier_k``: neighbours of that score (the paper's LOF k = 6); ``denoise_ratio``: share
    of the noisiest patches dropped at every position; ``soft_weight``: multiply each
    nearest-neighbour distance by the matched bank entry's weight (its outlier score
    relative to its position's median). ``k`` and ``reweight`` are PatchCore's and are not
    used here (k = 1)."""

    outlier: str = "lof"
    outlier_k: int = 6
    denoise_ratio: float = 0.1
    soft_weight: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.outlier not in OUTLIER_METHODS:
            raise ValueError(f"outlier must be one of {list(OUTLIER_METHODS)}, got {self.outlier!r}")
        if not isinstance(self.outlier_k, int) or self.outlier_k < 1:
            raise ValueError(f"outlier_k must be an int >= 1, got {self.outlier_k!r}")
        if not 0.0 <= self.denoise_ratio < 1.0:
            raise ValueError(f"denoise_ratio must be in [0, 1), got {self.denoise_ratio}")
        if self.k != 1 or self.reweight:
            raise ValueError("SoftPatch scores with the single nearest neighbour and its soft weight: leave k = 1 and reweight = False")


SPEC = DetectorSpec(
    name="vision_softpatch",
    family="softpatch",
    target="pyimgano_deploy.models.detectors.softpatch.model:SoftPatch",
    params=SoftPatchParams,
    tags=frozenset({"numpy", "pixel_map", "onnx", "tensorrt", "memory_bank", "knn", "noise_robust"}),
    summary="PatchCore with patch-level denoising (per-position outlier scores across fit images) and soft-weighted distances",
    paper="Jiang et al., SoftPatch: Unsupervised Anomaly Detection with Noisy Data (NeurIPS 2022)",
    head="nearest neighbour in a coreset of denoised patches, distance × the matched entry's soft weight",
    memory="bank_size × (feature_dim + 2) × 4 bytes; bank_size = coreset_ratio × (1 − denoise_ratio) × fit images × grid positions",
    notes=("no fp16 tag: an fp16 backbone can change which bank entry is nearest, and the soft weight of that entry "
           "moves the score with it; on bsd_ballscrew the fp16 parity gate refuses the engine (max |Δscore| 0.35), so export fp32",),
    small_kwargs={"coreset_ratio": 0.25},
)

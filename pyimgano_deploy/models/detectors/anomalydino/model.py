"""AnomalyDINO (Damm et al., WACV 2025): DINOv2 patch features and a cosine nearest-neighbour bank.

Choices, stated once:
- Features: patch tokens of the last ViT-S/14 block after the final LayerNorm, L2-normalised.
- Patch distance: cosine distance ``1 − cos = ‖q − b‖² / 2`` on unit vectors, to the nearest
  bank patch (exact expanded form in fp32, no ``cdist``).
- Bank: a greedy coreset (``coreset_ratio``; the paper keeps every patch, which is 10×
  slower per image on a CPU for a few hundred fit images).
- Image score: the mean of the ``top_fraction`` (1 %) highest patch distances, before
  upsampling. Map: patch distances upsampled and blurred (σ = ``blur_sigma``).
- Masking (optional): the paper masks the background with a PCA of each test image's
  patches. One fixed direction is exportable: the first principal component of the fit
  patches, oriented so that image centres are foreground; a patch with a negative projection
  is background and its distance counts as 0.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.anomalydino.spec import SPEC, AnomalyDinoParams
from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.inference_module import AnomalyInferenceModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, NearestNeighbourDistance, PatchEmbedding
from pyimgano_deploy.models.detectors.memory_bank import coreset_bank, embedder, patch_features


class CosineScorer(nn.Module):
    """Embedding ``[B, D, h, w]`` → cosine distance to the nearest bank patch ``[B, h, w]``
    (times the foreground mask when masking is on)."""

    def __init__(self, bank: torch.Tensor, grid: tuple[int, int], *, chunk_size: int, mask_mean: torch.Tensor | None, mask_direction: torch.Tensor | None) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.distance = NearestNeighbourDistance(bank, k=1, chunk_size=chunk_size)
        self.masking = mask_direction is not None
        if self.masking:
            self.register_buffer("mask_mean", mask_mean.to(torch.float32))  # type: ignore[union-attr]
            self.register_buffer("mask_direction", mask_direction.to(torch.float32))  # type: ignore[union-attr]

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        q = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).to(torch.float32)
        qn = F.normalize(q, dim=1)
        d = self.distance(qn)
        dist = d * d * 0.5
        if self.masking:
            foreground = (torch.mv(q - self.mask_mean, self.mask_direction) > 0).to(dist.dtype)
            dist = dist * foreground
        return dist.reshape(-1, self.grid[0], self.grid[1])


class TopFractionMean(nn.Module):
    """Patch distances ``[B, h, w]`` → mean of the ``k`` largest per image ``[B]``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = int(k)

    def forward(self, patch: torch.Tensor) -> torch.Tensor:
        return torch.topk(patch.reshape(patch.shape[0], -1), self.k, dim=1).values.mean(dim=1)


class AnomalyDinoInferenceModule(AnomalyInferenceModule):
    """extractor → embedding → cosine scorer → (finisher: map, top-fraction mean: score)."""

    def __init__(self, *args: Any, top_k: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.score_head = TopFractionMean(top_k)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch = self.scorer(self.embed(images))
        return self.score_head(patch), self.finisher(patch)


def first_component(features: np.ndarray, grid: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, unit first principal direction) of ``features [N, P, D]``, oriented so the
    central half of the grid projects positive on average."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = flat[rng.choice(flat.shape[0], size=min(flat.shape[0], 50000), replace=False)]
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    direction = vt[0]
    h, w = grid
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    centre = ((np.abs(rows - (h - 1) / 2) <= h / 4) & (np.abs(cols - (w - 1) / 2) <= w / 4)).reshape(-1)
    if float(((features[:, centre] - mean) @ direction).mean()) < 0:
        direction = -direction
    return mean.astype(np.float32), direction.astype(np.float32)


class AnomalyDino(Detector):
    """AnomalyDINO anomaly detector; see the module docstring for the exact scoring rules."""

    family = SPEC.family
    model_name = SPEC.name
    Params = AnomalyDinoParams
    fits_in_one_pass = True

    def _embedding(self, extractor: FeatureExtractor) -> PatchEmbedding:
        return PatchEmbedding.of_stages(extractor, extractor.stages, self._grid(extractor), neighbourhood=1)

    def _grid(self, extractor: FeatureExtractor) -> tuple[int, int]:
        stride = extractor.stage_strides[extractor.stages[0]]
        h, w = self.input_size
        return (h // stride, w // stride)  # the ViT drops a remainder; sizes are multiples of 14

    def _top_k(self, extractor: FeatureExtractor) -> int:
        h, w = self._grid(extractor)
        return max(1, int(round(self.params.top_fraction * h * w)))

    def _assemble(self, extractor: FeatureExtractor, bank: torch.Tensor, mask: tuple[torch.Tensor, torch.Tensor] | None) -> AnomalyDinoInferenceModule:
        grid = self._grid(extractor)
        scorer = CosineScorer(bank, grid, chunk_size=self.params.bank_chunk_size,
                              mask_mean=None if mask is None else mask[0], mask_direction=None if mask is None else mask[1])
        finisher = AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=grid)
        return AnomalyDinoInferenceModule(extractor, self._embedding(extractor), scorer, finisher, top_k=self._top_k(extractor))

    def _fit_head(self, extractor: FeatureExtractor, batches: BatchSource) -> AnomalyDinoInferenceModule:
        p = self.params
        embedding = self._embedding(extractor).to(self.device)
        t0 = time.perf_counter()
        features = patch_features(embedder(extractor, embedding, self.device), batches)  # [N, P, D]
        t1 = time.perf_counter()
        mask = None
        if p.masking:
            mean, direction = first_component(features, self._grid(extractor), self.seed)
            mask = (torch.from_numpy(mean), torch.from_numpy(direction))
        flat = features.reshape(-1, features.shape[-1])
        unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
        idx, coreset = coreset_bank(unit, p.coreset_ratio, projection_dim=p.coreset_projection_dim, seed=self.seed,
                                    progress_bar=self._progress_bar)
        bank = torch.from_numpy(np.ascontiguousarray(unit[idx], dtype=np.float32))
        self.fit_summary = {
            "n_images": len(batches), "n_patches": int(flat.shape[0]), "bank_size": int(bank.shape[0]),
            "feature_dim": int(bank.shape[1]), "grid": list(self._grid(extractor)), "top_k": self._top_k(extractor),
            "masking": bool(p.masking), "weights_source": extractor.weights_source,
            "timings_s": {"features": round(t1 - t0, 4), "coreset": coreset.pop("seconds")}, "coreset": coreset,
        }
        return self._assemble(extractor, bank, mask)

    def _empty_module(self, fitted: dict[str, Any]) -> AnomalyDinoInferenceModule:
        extractor = self._make_extractor(pretrained=False)
        d = int(fitted["feature_dim"])
        mask = (torch.zeros(d), torch.zeros(d)) if fitted.get("masking") else None
        return self._assemble(extractor, torch.zeros(int(fitted["bank_size"]), d), mask)

    def memory_bytes(self) -> int:
        """Size of the bank and its norms in bytes, fp32."""
        f = self.fit_summary
        return int(f.get("bank_size", 0)) * (int(f.get("feature_dim", 0)) + 1) * 4

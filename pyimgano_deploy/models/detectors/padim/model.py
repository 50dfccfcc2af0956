"""PaDiM (Defard et al., ICPR 2021): per-position multivariate Gaussian of patch features.

Features of three stages are upsampled to the finest grid and concatenated; ``n_channels`` (d) channels
are selected at random (seeded); each grid position gets a mean and a covariance
``Σ + eps·I``; the inverse is computed once at fit (float64, stored fp32). The map is the
Mahalanobis distance upsampled and blurred (σ = 4); the image score is its maximum.
Memory: positions × n_channels × n_channels × 4 bytes for the inverse covariances.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.inference_module import AnomalyInferenceModule
from pyimgano_deploy.models.detectors.memory_bank import embedder
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, MahalanobisDistance, PatchEmbedding
from pyimgano_deploy.models.detectors.padim.spec import SPEC, PaDiMParams

class PaDiM(Detector):
    """PaDiM anomaly detector (Gaussian head, Mahalanobis map)."""

    family = SPEC.family
    model_name = SPEC.name

    Params = PaDiMParams
    fits_in_one_pass = True

    def _embedding(self, extractor: FeatureExtractor) -> PatchEmbedding:
        total = sum(extractor.stage_channels[s] for s in extractor.stages)
        gen = torch.Generator().manual_seed(self.seed)
        select = torch.sort(torch.randperm(total, generator=gen)[: min(self.params.n_channels, total)]).values
        return PatchEmbedding.of_stages(extractor, extractor.stages, self._grid(extractor), neighbourhood=1, select_channels=select)

    def _assemble(self, extractor: FeatureExtractor, embedding: PatchEmbedding, mean: torch.Tensor, inv_cov: torch.Tensor) -> AnomalyInferenceModule:
        scorer = MahalanobisDistance(mean, inv_cov, self._grid(extractor))
        return AnomalyInferenceModule(extractor, embedding, scorer, AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=self._grid(extractor)),
                                      image_score=self.params.image_score)

    def _fit_head(self, extractor: FeatureExtractor, batches: BatchSource) -> AnomalyInferenceModule:
        embedding = self._embedding(extractor).to(self.device)
        t0 = time.perf_counter()
        n = 0
        s1 = s2 = None
        embed = embedder(extractor, embedding, self.device)
        for batch in batches:
            emb = embed(batch).to(torch.float64)
            x = emb.flatten(2).permute(2, 0, 1)  # [P, B, d]
            b1 = x.sum(1)
            b2 = torch.einsum("pbi,pbj->pij", x, x)
            s1 = b1 if s1 is None else s1 + b1
            s2 = b2 if s2 is None else s2 + b2
            n += x.shape[1]
        if n < 2:
            raise ValueError(f"PaDiM needs at least 2 training images to estimate a covariance, got {n}")
        mean = s1 / n
        cov = (s2 - n * torch.einsum("pi,pj->pij", mean, mean)) / (n - 1)
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        inv_cov = torch.linalg.inv(cov + self.params.eps * eye)
        t1 = time.perf_counter()
        grid = self._grid(extractor)
        self.fit_summary = {
            "n_images": int(n),
            "positions": int(grid[0] * grid[1]),
            "feature_dim": int(mean.shape[1]),
            "grid": list(grid),
            "covariance_bytes": int(grid[0] * grid[1] * mean.shape[1] ** 2 * 4),
            "timings_s": {"features_and_statistics": round(t1 - t0, 4)},
        }
        return self._assemble(extractor, embedding, mean.to(torch.float32).cpu(), inv_cov.to(torch.float32).cpu())

    def _empty_module(self, fitted: dict[str, Any]) -> AnomalyInferenceModule:
        extractor = self._make_extractor(pretrained=False)
        embedding = self._embedding(extractor)
        p, d = int(fitted["positions"]), int(fitted["feature_dim"])
        return self._assemble(extractor, embedding, torch.zeros(p, d), torch.zeros(p, d, d))

    def memory_bytes(self) -> int:
        """Size of the inverse covariances in bytes, fp32 (positions × n_channels × n_channels × 4)."""
        return int(self.fit_summary.get("covariance_bytes", 0))

"""SPADE (Cohen & Hoshen 2020): kNN retrieval of normal images, then pixel correspondences.

Choices, stated once:
- Image features: the ``image_stage`` map averaged over space (the paper pools the last
  ResNet stage). Image score: the **mean Euclidean distance to the K nearest** normal images
  (the paper's score), not the maximum of the map.
- Pixel features: the ``stages`` maps upsampled to the finest grid and concatenated (no
  neighbourhood averaging, as in the paper). Each query position's distance is to its nearest
  position in the feature maps of the K retrieved images only (κ = 1).
- Map: those distances upsampled and blurred (σ = ``blur_sigma``, the paper's 4).

In the graph: one GEMM of pooled queries against the pooled gallery, TopK(K), a Gather of the
K galleries, one batched GEMM, ReduceMin. Distances use the expanded form with norms
precomputed (no ``cdist``) and stay fp32. The gallery's size is checked against
``max_gallery_bytes`` before it is built.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.inference_module import ScopedModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, PatchEmbedding, augmented_bank
from pyimgano_deploy.models.detectors.spade.spec import SPEC, SpadeParams


class SpadeScorer(nn.Module):
    """(pixel embedding ``[B, D, h, w]``, deep map ``[B, C, h', w']``) → (image score ``[B]``,
    patch distances ``[B, h, w]``), all fp32."""

    def __init__(self, pooled: torch.Tensor, galleries: torch.Tensor, grid: tuple[int, int], k: int) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.k = int(k)
        self.register_buffer("pooled_aug", augmented_bank(pooled))  # [C + 1, N]
        # [N, D + 1, P]: per image, [−2·Fᵀ; ‖F‖²] of its P position features
        self.register_buffer("gallery_aug", torch.stack([augmented_bank(g) for g in galleries]) if galleries.shape[0] else galleries)

    def forward(self, emb: torch.Tensor, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = deep.to(torch.float32).mean(dim=(2, 3))  # [B, C]
        g1 = torch.cat([g, torch.ones_like(g[:, :1])], dim=1)
        d2 = torch.mm(g1, self.pooled_aug) + (g * g).sum(1, keepdim=True)  # [B, N]
        near, idx = torch.topk(d2, self.k, dim=1, largest=False)  # [B, K]
        image_score = near.clamp(min=0.0).sqrt().mean(dim=1)
        b = emb.shape[0]
        gal = self.gallery_aug.index_select(0, idx.reshape(-1))  # [B·K, D + 1, P]
        gal = gal.reshape(b, self.k, gal.shape[1], gal.shape[2]).permute(0, 2, 1, 3).reshape(b, gal.shape[1], -1)
        q = emb.to(torch.float32).flatten(2).transpose(1, 2)  # [B, P, D]
        q1 = torch.cat([q, torch.ones_like(q[:, :, :1])], dim=2)
        partial = torch.bmm(q1, gal).amin(dim=2)  # [B, P]
        patch = (partial + (q * q).sum(2)).clamp(min=0.0).sqrt()
        return image_score, patch.reshape(b, self.grid[0], self.grid[1])


class SpadeInferenceModule(ScopedModule):
    """extractor → (pixel embedding, deep map) → SPADE scorer → map finisher."""

    fp32_scopes = ("scorer", "finisher")

    def __init__(self, extractor: FeatureExtractor, embedding: PatchEmbedding, scorer: SpadeScorer, finisher: AnomalyMapFinisher, n_pixel_stages: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.embedding = embedding
        self.scorer = scorer
        self.finisher = finisher
        self.n_pixel_stages = int(n_pixel_stages)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel embedding ``[B, D, h, w]`` fp32, deep map of the image stage)."""
        feats = self.extractor(images)
        return self.embedding(feats[: self.n_pixel_stages]).to(torch.float32), feats[self.n_pixel_stages]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb, deep = self.features(images)
        score, patch = self.scorer(emb, deep)
        return score, self.finisher(patch)


class Spade(Detector):
    """SPADE anomaly detector; see the module docstring for the exact scoring rules."""

    family = SPEC.family
    model_name = SPEC.name
    Params = SpadeParams
    fits_in_one_pass = True

    def _extractor_stages(self) -> tuple[str, ...]:
        return tuple(self.params.stages) + (self.params.image_stage,)  # type: ignore[arg-type, operator]

    def _embedding(self, extractor: FeatureExtractor) -> PatchEmbedding:
        return PatchEmbedding.of_stages(extractor, extractor.stages[:-1], self._grid(extractor), neighbourhood=1)

    def gallery_bytes(self, n_images: int, extractor: FeatureExtractor) -> int:
        """fp32 bytes of the galleries for ``n_images`` fit images (the spec's memory formula)."""
        h, w = self._grid(extractor)
        d = self._embedding(extractor).out_dim
        c = extractor.stage_channels[extractor.stages[-1]]
        return int(n_images) * (h * w * (d + 1) + c + 1) * 4

    def _assemble(self, extractor: FeatureExtractor, pooled: torch.Tensor, galleries: torch.Tensor) -> SpadeInferenceModule:
        grid = self._grid(extractor)
        scorer = SpadeScorer(pooled, galleries, grid, k=min(self.params.k_images, pooled.shape[0]))
        finisher = AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=grid)
        return SpadeInferenceModule(extractor, self._embedding(extractor), scorer, finisher, len(extractor.stages) - 1)

    def _fit_head(self, extractor: FeatureExtractor, batches: BatchSource) -> SpadeInferenceModule:
        need = self.gallery_bytes(len(batches), extractor)
        if need > self.params.max_gallery_bytes:
            raise ValueError(
                f"the SPADE gallery of {len(batches)} fit images would take {need / 2**30:.2f} GiB, over "
                f"max_gallery_bytes = {self.params.max_gallery_bytes / 2**30:.2f} GiB: lower image_size, fit on fewer "
                "images, or raise max_gallery_bytes")
        module = self._assemble(extractor, torch.zeros(1, 1), torch.zeros(0))
        module.to(self.device)
        t0 = time.perf_counter()
        pooled, maps = [], []
        with torch.no_grad():
            for batch in batches:
                emb, deep = module.features(torch.from_numpy(batch).to(self.device))
                pooled.append(deep.to(torch.float32).mean(dim=(2, 3)).cpu())
                maps.append(emb.flatten(2).transpose(1, 2).cpu())  # [B, P, D]
        pooled_t, galleries = torch.cat(pooled), torch.cat(maps)
        grid = self._grid(extractor)
        self.fit_summary = {
            "n_images": int(pooled_t.shape[0]), "grid": list(grid), "positions": int(grid[0] * grid[1]),
            "feature_dim": int(galleries.shape[2]), "image_feature_dim": int(pooled_t.shape[1]),
            "k_images": int(min(self.params.k_images, pooled_t.shape[0])), "gallery_bytes": int(need),
            "timings_s": {"features": round(time.perf_counter() - t0, 4)},
        }
        return self._assemble(extractor, pooled_t, galleries)

    def _empty_module(self, fitted: dict[str, Any]) -> SpadeInferenceModule:
        extractor = self._make_extractor(pretrained=False)
        n, p, d = int(fitted["n_images"]), int(fitted["positions"]), int(fitted["feature_dim"])
        return self._assemble(extractor, torch.zeros(n, int(fitted["image_feature_dim"])), torch.zeros(n, p, d))

    def memory_bytes(self) -> int:
        """Size of the pooled and pixel galleries in bytes, fp32."""
        return int(self.fit_summary.get("gallery_bytes", 0))

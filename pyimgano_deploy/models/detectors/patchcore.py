"""PatchCore (Roth et al., CVPR 2022): locally aware patch features, a greedy k-centre
coreset memory bank, nearest-neighbour patch scores.

Choices, stated once:
- Patch features: two mid-level stages, 3×3 neighbourhood average, the deeper stage
  upsampled bilinearly to the finer grid, concatenated; optional projection to a fixed
  dimension by channel-wise adaptive average pooling (as in the paper).
- Patch score: Euclidean distance to the nearest bank entry (mean over the ``k`` nearest
  when ``k > 1``).
- Map: patch scores upsampled bilinearly to the model input size, Gaussian blur σ = 4.
- Image score: the **maximum of the final map**. The paper takes the maximum patch
  distance; taking it after the blur makes the score agree with what the map shows and
  is robust to single-patch noise. With ``reweight=True`` the score is additionally
  multiplied by the paper's weight ``1 − softmax(−‖q − m‖ over the b neighbours of m*)[m*]``
  computed for the most anomalous patch (eq. 7, b = ``reweight_neighbors``).
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.coreset import greedy_coreset
from pyimgano_deploy.models.detectors.inference_module import AnomalyInferenceModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, NearestNeighbourDistance, PatchEmbedding


class PatchCoreScorer(nn.Module):
    """Embedding ``[B, D, h, w]`` → patch scores ``[B, h, w]`` via the memory bank."""

    def __init__(self, bank: torch.Tensor, grid: tuple[int, int], *, k: int, chunk_size: int) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.distance = NearestNeighbourDistance(bank, k=k, chunk_size=chunk_size)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        q = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
        return self.distance(q).reshape(-1, self.grid[0], self.grid[1])


class ReweightedInferenceModule(AnomalyInferenceModule):
    """PatchCore's optional image-score re-weighting (paper eq. 7) on top of the base module."""

    def __init__(self, *args: Any, bank_neighbors: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("bank_neighbors", bank_neighbors.to(torch.int64))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extractor(images)
        emb = self.embedding(features).to(torch.float32)
        q = emb.permute(0, 2, 3, 1).reshape(emb.shape[0], -1, emb.shape[1])  # [B, P, D]
        dist = self.scorer.distance
        patch = dist(q.reshape(-1, q.shape[-1])).reshape(q.shape[0], -1)  # [B, P]
        anomaly_map = self.finisher(patch.reshape(-1, self.scorer.grid[0], self.scorer.grid[1]))
        worst = patch.argmax(dim=1)  # [B]
        q_star = torch.gather(q, 1, worst.view(-1, 1, 1).expand(-1, 1, q.shape[-1])).squeeze(1)  # [B, D]
        bank = dist.bank  # [M, D]
        d2_star = (q_star * q_star).sum(1, keepdim=True) + dist.partial_sq_distances(dist.augment_queries(q_star))
        m_star = d2_star.argmin(dim=1)  # [B]
        neigh = self.bank_neighbors.index_select(0, m_star)  # [B, b], column 0 is m* itself
        nb = bank.index_select(0, neigh.reshape(-1)).reshape(neigh.shape[0], neigh.shape[1], -1)
        nd = ((nb - q_star.unsqueeze(1)) ** 2).sum(-1).clamp(min=0.0).sqrt()  # [B, b]
        weight = 1.0 - torch.softmax(-nd, dim=1)[:, 0]
        score = weight * anomaly_map.amax(dim=(1, 2))
        return score, anomaly_map


def bank_self_neighbors(bank: torch.Tensor, b: int, chunk: int = 4096) -> torch.Tensor:
    """For each bank row, the indices of its ``b`` nearest bank rows (itself first)."""
    sq = (bank * bank).sum(1)
    out = []
    for s in range(0, bank.shape[0], chunk):
        d2 = sq[s : s + chunk, None] - 2.0 * bank[s : s + chunk] @ bank.t() + sq[None, :]
        d2[torch.arange(d2.shape[0]), torch.arange(s, s + d2.shape[0])] = -1.0  # self first
        out.append(torch.topk(d2, b, dim=1, largest=False).indices)
    return torch.cat(out)


class PatchCore(Detector):
    """PatchCore anomaly detector; see the module docstring for the exact scoring rules."""

    family = "patchcore"
    model_name = "vision_patchcore"

    def __init__(
        self,
        *,
        backbone: str = "efficientnet_lite0",
        pretrained: bool | str = True,
        stages: tuple[str, ...] | list[str] | None = None,
        image_size: int | tuple[int, int] = 224,
        interpolation: str = "linear",
        center_crop: int | tuple[int, int] | None = None,
        projection_dim: int | None = None,
        coreset_ratio: float = 0.1,
        coreset_projection_dim: int = 128,
        k: int = 1,
        reweight: bool = False,
        reweight_neighbors: int = 9,
        bank_chunk_size: int = 16384,
        blur_sigma: float = 4.0,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 16,
        progress: bool = True,
    ) -> None:
        super().__init__(
            backbone=backbone, pretrained=pretrained, stages=stages, image_size=image_size,
            interpolation=interpolation, center_crop=center_crop, blur_sigma=blur_sigma,
            seed=seed, device=device, batch_size=batch_size, progress=progress,
        )
        if not 0.0 < coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        if not 1 <= k <= 3840:
            raise ValueError(f"k must be in 1..3840 (TensorRT's TopK limit), got {k}")
        if projection_dim is not None and projection_dim < 1:
            raise ValueError(f"projection_dim must be >= 1 or None, got {projection_dim}")
        if reweight and reweight_neighbors < 2:
            raise ValueError(f"reweight_neighbors must be >= 2 when reweight=True, got {reweight_neighbors}")
        if bank_chunk_size < 256:
            raise ValueError(f"bank_chunk_size must be >= 256, got {bank_chunk_size}")
        self.projection_dim = projection_dim
        self.coreset_ratio = float(coreset_ratio)
        self.coreset_projection_dim = int(coreset_projection_dim)
        self.k = int(k)
        self.reweight = bool(reweight)
        self.reweight_neighbors = int(reweight_neighbors)
        self.bank_chunk_size = int(bank_chunk_size)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **self._common_hyperparameters(),
            "projection_dim": self.projection_dim,
            "coreset_ratio": self.coreset_ratio,
            "coreset_projection_dim": self.coreset_projection_dim,
            "k": self.k,
            "reweight": self.reweight,
            "reweight_neighbors": self.reweight_neighbors,
            "bank_chunk_size": self.bank_chunk_size,
        }

    def _embedding(self, extractor: FeatureExtractor) -> PatchEmbedding:
        channels = [extractor.stage_channels[s] for s in extractor.stages]
        strides = [extractor.stage_strides[s] for s in extractor.stages]
        return PatchEmbedding(channels, strides, self._grid(extractor), aggregate=True, projection_dim=self.projection_dim)

    def _assemble(self, extractor: FeatureExtractor, embedding: PatchEmbedding, bank: torch.Tensor, neighbors: torch.Tensor | None) -> AnomalyInferenceModule:
        grid = self._grid(extractor)
        k = min(self.k, bank.shape[0])
        scorer = PatchCoreScorer(bank, grid, k=k, chunk_size=self.bank_chunk_size)
        finisher = AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=grid)
        if self.reweight:
            return ReweightedInferenceModule(extractor, embedding, scorer, finisher, bank_neighbors=neighbors)
        return AnomalyInferenceModule(extractor, embedding, scorer, finisher)

    def _fit_head(self, extractor: FeatureExtractor, batches: Iterator[np.ndarray], total: int) -> AnomalyInferenceModule:
        embedding = self._embedding(extractor).to(self.device)
        t0 = time.perf_counter()
        feats = []
        for batch in batches:
            emb = self._embed(extractor, embedding, batch)
            feats.append(emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).cpu().numpy())
        features = np.concatenate(feats)
        t1 = time.perf_counter()
        n_select = max(1, int(round(self.coreset_ratio * features.shape[0])))
        with self._progress_bar(n_select, "coreset", "centre") as bar:
            idx, stats = greedy_coreset(features, n_select, projection_dim=self.coreset_projection_dim, seed=self.seed, progress=bar.update)
        t2 = time.perf_counter()
        bank = torch.from_numpy(np.ascontiguousarray(features[idx]))
        neighbors = None
        if self.reweight:
            b = min(self.reweight_neighbors, bank.shape[0])
            neighbors = bank_self_neighbors(bank, b)
        self.fit_summary = {
            "n_images": int(total),
            "n_patches": int(features.shape[0]),
            "bank_size": int(bank.shape[0]),
            "feature_dim": int(bank.shape[1]),
            "grid": list(self._grid(extractor)),
            "reweight_neighbors": None if neighbors is None else int(neighbors.shape[1]),
            "timings_s": {"features": round(t1 - t0, 4), "coreset": round(t2 - t1, 4)},
            "coreset": {"projection_dim": stats.projection_dim, "levels": stats.levels, "flushes": stats.flushes},
        }
        return self._assemble(extractor, embedding, bank, neighbors)

    def _empty_module(self, fitted: dict[str, Any]) -> AnomalyInferenceModule:
        extractor = self._make_extractor(pretrained=False)
        embedding = self._embedding(extractor)
        bank = torch.zeros(int(fitted["bank_size"]), int(fitted["feature_dim"]))
        neighbors = None
        if self.reweight:
            neighbors = torch.zeros(int(fitted["bank_size"]), int(fitted["reweight_neighbors"]), dtype=torch.int64)
        return self._assemble(extractor, embedding, bank, neighbors)

    def memory_bytes(self) -> int:
        """Size of the memory bank (and its norms) in bytes, fp32."""
        f = self.fit_summary
        return int(f.get("bank_size", 0)) * (int(f.get("feature_dim", 0)) + 1) * 4

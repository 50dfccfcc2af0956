"""PatchCore (Roth et al., CVPR 2022): locally aware patch features, a greedy k-centre
coreset memory bank, nearest-neighbour patch scores.

Choices, stated once:
- Patch features: two mid-level stages, averaged over a ``neighbourhood`` square of grid
  positions (3 × 3 by default, the paper's p), the deeper stage
  upsampled bilinearly to the finer grid, concatenated; optional projection to a fixed
  dimension by channel-wise adaptive average pooling (as in the paper).
- Patch score: Euclidean distance to the nearest bank entry (mean over the ``k`` nearest
  when ``k > 1``).
- Map: patch scores upsampled bilinearly to the model input size, Gaussian blur σ = 4.
- Image score: the **maximum of the final map**. The paper takes the maximum patch
  distance; taking it after the blur makes the score agree with what the map shows and
  is robust to single-patch noise. With ``reweight=True`` the score is additionally
  multiplied by the paper's weight ``1 − softmax(‖q − m‖ over the b neighbours of m*)[m*]``
  computed for the most anomalous patch (eq. 7, b = ``reweight_neighbors``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.inference_module import AnomalyInferenceModule
from pyimgano_deploy.models.detectors.memory_bank import coreset_bank, embedder, patch_features
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, NearestNeighbourDistance, PatchEmbedding
from pyimgano_deploy.models.detectors.patchcore.spec import SPEC, PatchCoreParams


class PatchCoreScorer(nn.Module):
    """Embedding ``[B, D, h, w]`` → patch scores ``[B, h, w]`` via the memory bank."""

    def __init__(self, bank: torch.Tensor, grid: tuple[int, int], *, k: int, chunk_size: int) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.distance = NearestNeighbourDistance(bank, k=k, chunk_size=chunk_size)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        q = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
        return self.distance(q).reshape(-1, self.grid[0], self.grid[1])


class ImageScoreReweight(nn.Module):
    """PatchCore's image-score re-weighting (paper eq. 7) for the most anomalous patch."""

    def __init__(self, bank_neighbors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bank_neighbors", bank_neighbors.to(torch.int64))

    def forward(self, q: torch.Tensor, patch: torch.Tensor, map_max: torch.Tensor, dist: NearestNeighbourDistance) -> torch.Tensor:
        """``q [B, P, D]`` queries, ``patch [B, P]`` patch distances, ``map_max [B]`` → score ``[B]``."""
        worst = patch.argmax(dim=1)  # [B]
        q_star = torch.gather(q, 1, worst.view(-1, 1, 1).expand(-1, 1, q.shape[-1])).squeeze(1)  # [B, D]
        d2_star = (q_star * q_star).sum(1, keepdim=True) + dist.partial_sq_distances(dist.augment_queries(q_star))
        m_star = d2_star.argmin(dim=1)  # [B]
        neigh = self.bank_neighbors.index_select(0, m_star)  # [B, b], column 0 is m* itself
        nb = dist.bank.index_select(0, neigh.reshape(-1)).reshape(neigh.shape[0], neigh.shape[1], -1)
        nd = ((nb - q_star.unsqueeze(1)) ** 2).sum(-1).clamp(min=0.0).sqrt()  # [B, b]
        # Eq. 7: w = 1 − exp(‖q* − m*‖) / Σ_{m ∈ N_b(m*)} exp(‖q* − m‖), a softmax of the
        # distances themselves (not their negatives). m* is the nearest, so w ∈ [1 − 1/b, 1): it
        # rises towards 1 when m*'s own neighbours lie far from q* (m* a rare nominal patch).
        return (1.0 - torch.softmax(nd, dim=1)[:, 0]) * map_max


class ReweightedInferenceModule(AnomalyInferenceModule):
    """The base module with PatchCore's optional image-score re-weighting (an fp32 scope)."""

    fp32_scopes = AnomalyInferenceModule.fp32_scopes + ("reweight",)

    def __init__(self, *args: Any, bank_neighbors: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reweight = ImageScoreReweight(bank_neighbors)
        self._register_load_state_dict_pre_hook(_upgrade_reweight_state)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(images)
        patch = self.scorer(emb)  # [B, h, w]
        anomaly_map = self.finisher(patch)
        q = emb.permute(0, 2, 3, 1).reshape(emb.shape[0], -1, emb.shape[1])  # [B, P, D]
        score = self.reweight(q, patch.reshape(patch.shape[0], -1), self.score_head(anomaly_map), self.scorer.distance)
        return score, anomaly_map


def _upgrade_reweight_state(state: dict, prefix: str, *args: object) -> None:
    """Detectors saved before the re-weighting became its own scope held ``bank_neighbors`` at the root."""
    if prefix + "bank_neighbors" in state and prefix + "reweight.bank_neighbors" not in state:
        state[prefix + "reweight.bank_neighbors"] = state.pop(prefix + "bank_neighbors")


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

    family = SPEC.family
    model_name = SPEC.name

    Params = PatchCoreParams
    fits_in_one_pass = True

    def _embedding(self, extractor: FeatureExtractor) -> PatchEmbedding:
        return PatchEmbedding.of_stages(extractor, extractor.stages, self._grid(extractor), neighbourhood=self.params.neighbourhood,
                                        projection_dim=self.params.projection_dim)

    def _assemble(self, extractor: FeatureExtractor, embedding: PatchEmbedding, bank: torch.Tensor, neighbors: torch.Tensor | None) -> AnomalyInferenceModule:
        grid = self._grid(extractor)
        k = min(self.params.k, bank.shape[0])
        scorer = PatchCoreScorer(bank, grid, k=k, chunk_size=self.params.bank_chunk_size)
        finisher = AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=grid)
        if self.params.reweight:
            return ReweightedInferenceModule(extractor, embedding, scorer, finisher, bank_neighbors=neighbors)
        return AnomalyInferenceModule(extractor, embedding, scorer, finisher, image_score=self.params.image_score)

    def _fit_head(self, extractor: FeatureExtractor, batches: BatchSource) -> AnomalyInferenceModule:
        embedding = self._embedding(extractor).to(self.device)
        t0 = time.perf_counter()
        features = patch_features(embedder(extractor, embedding, self.device), batches)
        features = features.reshape(-1, features.shape[-1])
        t1 = time.perf_counter()
        idx, coreset = coreset_bank(features, self.params.coreset_ratio, projection_dim=self.params.coreset_projection_dim,
                                    seed=self.seed, progress_bar=self._progress_bar)
        bank = torch.from_numpy(np.ascontiguousarray(features[idx]))
        neighbors = None
        if self.params.reweight:
            neighbors = bank_self_neighbors(bank, min(self.params.reweight_neighbors, bank.shape[0]))
        self.fit_summary = {
            "n_images": len(batches),
            "n_patches": int(features.shape[0]),
            "bank_size": int(bank.shape[0]),
            "feature_dim": int(bank.shape[1]),
            "grid": list(self._grid(extractor)),
            "reweight_neighbors": None if neighbors is None else int(neighbors.shape[1]),
            "timings_s": {"features": round(t1 - t0, 4), "coreset": coreset.pop("seconds")},
            "coreset": coreset,
        }
        return self._assemble(extractor, embedding, bank, neighbors)

    def _empty_module(self, fitted: dict[str, Any]) -> AnomalyInferenceModule:
        extractor = self._make_extractor(pretrained=False)
        embedding = self._embedding(extractor)
        bank = torch.zeros(int(fitted["bank_size"]), int(fitted["feature_dim"]))
        neighbors = None
        if self.params.reweight:
            neighbors = torch.zeros(int(fitted["bank_size"]), int(fitted["reweight_neighbors"]), dtype=torch.int64)
        return self._assemble(extractor, embedding, bank, neighbors)

    def memory_bytes(self) -> int:
        """Size of the memory bank (and its norms) in bytes, fp32."""
        f = self.fit_summary
        return int(f.get("bank_size", 0)) * (int(f.get("feature_dim", 0)) + 1) * 4

"""SoftPatch (Jiang et al., NeurIPS 2022): PatchCore made robust to anomalies among the fit images.

Choices, stated once:
- Features, coreset, map and image score (maximum of the blurred map) are PatchCore's.
- Denoising: at every grid position, each fit image's patch gets an outlier score among the
  patches of all fit images at that position (LOF, or the mean distance to the k nearest).
  The ``denoise_ratio`` noisiest patches per position are dropped before the coreset.
- Soft weights: a kept patch's weight is its outlier score divided by the median score at
  its position (≈ 1 for typical patches, > 1 for suspicious ones). A query's patch distance
  is its nearest-neighbour distance times the matched bank entry's weight, so a match with a
  suspicious (possibly defective) training patch counts for less normality.
- Ties: when the two nearest rows are equally near within :data:`TIE_RTOL` (see
  :func:`tie_blended_weight`), their weights are blended. The paper's rule takes whichever row
  the arithmetic ranks first, so two fp32 engines (eager and ONNX Runtime, whose GEMMs round
  differently) could pick different rows and make the map jump by the weights' difference; the
  blend makes the score continuous in the distances, so both give the same map.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from pyimgano_deploy.models.backbones import FeatureExtractor
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.inference_module import AnomalyInferenceModule
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, NearestNeighbourDistance
from pyimgano_deploy.models.detectors.memory_bank import coreset_bank, embedder, patch_features
from pyimgano_deploy.models.detectors.patchcore.model import PatchCore
from pyimgano_deploy.models.detectors.softpatch.outliers import outlier_scores
from pyimgano_deploy.models.detectors.softpatch.spec import SPEC, SoftPatchParams


#: two nearest rows whose squared distances differ by less than this fraction of ``‖q‖² + d₁²`` count as
#: tied. fp32 rounds the expanded-form distance by up to about D × 6e-8 of that scale (9e-6 for
#: D = 152, 9e-5 for 1 536), so 1e-3 leaves a tenfold margin above rounding for the largest backbones,
#: while a query's score moves by at most half its two weights' difference, and only when the two rows
#: lie within 0.1 % of each other's distance.
TIE_RTOL = 1e-3


def tie_blended_weight(d2: torch.Tensor, w: torch.Tensor, q_sq: torch.Tensor) -> torch.Tensor:
    """The matched weight ``[R]`` from the two nearest rows' squared distances ``d2 [R, 2]`` (ascending),
    their weights ``w [R, 2]`` and the queries' squared norms ``q_sq [R]``.

    ``(w₁ + φ·w₂) / (1 + φ)`` with ``φ = max(0, 1 − (d₂² − d₁²) / (TIE_RTOL · (‖q‖² + d₁²)))``: the
    nearest row's weight when the second is clearly farther (φ = 0), their mean at an exact tie
    (φ = 1), and continuous in between and across the swap of the two rows."""
    width = TIE_RTOL * (q_sq + d2[:, 0]) + 1e-30  # the epsilon keeps 0 / 0 out of an all-zero query
    phi = torch.relu(1.0 - (d2[:, 1] - d2[:, 0]) / width)
    return (w[:, 0] + phi * w[:, 1]) / (1.0 + phi)


class SoftWeightedScorer(nn.Module):
    """Embedding ``[B, D, h, w]`` → ``[B, h, w]``: nearest-neighbour distance × the matched entry's
    weight (:func:`tie_blended_weight` when the two nearest rows tie)."""

    def __init__(self, bank: torch.Tensor, weights: torch.Tensor, grid: tuple[int, int], *, chunk_size: int) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.distance = NearestNeighbourDistance(bank, k=1, chunk_size=chunk_size)
        self.register_buffer("weights", weights.to(torch.float32).contiguous())

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        q = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
        d2, idx = self.distance.two_nearest(q)
        w = self.weights.index_select(0, idx.reshape(-1)).reshape(idx.shape)
        weight = tie_blended_weight(d2, w, (q * q).sum(1))
        return (d2[:, 0].sqrt() * weight).reshape(-1, self.grid[0], self.grid[1])


class SoftPatch(PatchCore):
    """SoftPatch anomaly detector; see the module docstring for the exact rules."""

    family = SPEC.family
    model_name = SPEC.name
    Params = SoftPatchParams

    def _assemble_soft(self, extractor: FeatureExtractor, bank: torch.Tensor, weights: torch.Tensor) -> AnomalyInferenceModule:
        grid = self._grid(extractor)
        scorer = SoftWeightedScorer(bank, weights, grid, chunk_size=self.params.bank_chunk_size)
        return AnomalyInferenceModule(extractor, self._embedding(extractor), scorer,
                                      AnomalyMapFinisher(self.input_size, self.blur_sigma, in_size=grid), image_score=self.params.image_score)

    def _fit_head(self, extractor: FeatureExtractor, batches: BatchSource) -> AnomalyInferenceModule:
        p = self.params
        embedding = self._embedding(extractor).to(self.device)
        t0 = time.perf_counter()
        features = patch_features(embedder(extractor, embedding, self.device), batches)  # [N, P, D]
        t1 = time.perf_counter()
        n, n_pos, dim = features.shape
        scores = outlier_scores(torch.from_numpy(features), p.outlier, p.outlier_k).numpy()  # [N, P]
        n_drop = int(np.floor(p.denoise_ratio * n)) if n > 2 else 0
        order = np.argsort(scores, axis=0, kind="stable")  # per position, most typical first
        keep = np.zeros((n, n_pos), dtype=bool)
        np.put_along_axis(keep, order[: n - n_drop], True, axis=0)
        weight = scores / np.maximum(np.median(scores, axis=0, keepdims=True), 1e-12)
        kept_features = features[keep]  # [M, D], row-major over (image, position)
        kept_weights = weight[keep] if p.soft_weight else np.ones(int(keep.sum()), dtype=np.float32)
        t2 = time.perf_counter()
        idx, coreset = coreset_bank(kept_features, p.coreset_ratio, projection_dim=p.coreset_projection_dim,
                                    seed=self.seed, progress_bar=self._progress_bar)
        bank = torch.from_numpy(np.ascontiguousarray(kept_features[idx]))
        weights = torch.from_numpy(np.ascontiguousarray(kept_weights[idx], dtype=np.float32))
        self.fit_summary = {
            "n_images": int(n), "n_patches": int(n * n_pos), "n_dropped": int(n_drop * n_pos),
            "bank_size": int(bank.shape[0]), "feature_dim": int(dim), "grid": list(self._grid(extractor)),
            "weights": {"min": float(weights.min()), "median": float(weights.median()), "max": float(weights.max())},
            "timings_s": {"features": round(t1 - t0, 4), "denoise": round(t2 - t1, 4), "coreset": coreset.pop("seconds")},
            "coreset": coreset,
        }
        return self._assemble_soft(extractor, bank, weights)

    def _empty_module(self, fitted: dict[str, Any]) -> AnomalyInferenceModule:
        extractor = self._make_extractor(pretrained=False)
        m, d = int(fitted["bank_size"]), int(fitted["feature_dim"])
        return self._assemble_soft(extractor, torch.zeros(m, d), torch.zeros(m))

    def memory_bytes(self) -> int:
        """Size of the bank, its norms and its weights in bytes, fp32."""
        f = self.fit_summary
        return int(f.get("bank_size", 0)) * (int(f.get("feature_dim", 0)) + 2) * 4

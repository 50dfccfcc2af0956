"""Per-position outlier scores of patch features across fit images (SoftPatch's noise discriminator)."""

from __future__ import annotations

import torch


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    """``x [P, N, D]`` → Euclidean distances ``[P, N, N]`` fp32 (expanded form, clamped)."""
    sq = (x * x).sum(-1)
    d2 = sq.unsqueeze(2) - 2.0 * torch.bmm(x, x.transpose(1, 2)) + sq.unsqueeze(1)
    return d2.clamp(min=0.0).sqrt()


def outlier_scores(features: torch.Tensor, method: str, k: int, chunk: int = 64) -> torch.Tensor:
    """Outlier score of every patch among the patches at the same position.

    ``features [N, P, D]`` (N fit images, P positions) → ``[N, P]`` float32, larger = more
    suspicious. ``"knn"``: mean distance to the ``k`` nearest other patches at that position;
    ``"lof"``: the local outlier factor with ``k`` neighbours (≈ 1 for inliers). Positions
    are processed ``chunk`` at a time so memory stays at ``chunk × N²`` floats.
    """
    n = features.shape[0]
    k = max(1, min(k, n - 1))
    out = []
    for start in range(0, features.shape[1], chunk):
        x = features[:, start : start + chunk].permute(1, 0, 2).to(torch.float32)  # [p, N, D]
        d = _pairwise(x)
        d.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # never your own neighbour
        near, idx = torch.topk(d, k, dim=2, largest=False)  # [p, N, k]
        if method == "knn":
            out.append(near.mean(2))
            continue
        k_dist = near[:, :, -1]  # distance to the k-th neighbour, [p, N]
        reach = torch.maximum(near, torch.gather(k_dist.unsqueeze(1).expand(-1, n, -1), 2, idx))
        lrd = 1.0 / (reach.mean(2) + 1e-12)  # local reachability density
        out.append(torch.gather(lrd.unsqueeze(1).expand(-1, n, -1), 2, idx).mean(2) / lrd)
    return torch.cat(out, dim=0).t().contiguous()

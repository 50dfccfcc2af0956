"""PatchCore's image-score re-weighting follows the paper's eq. 7 numerically."""

import numpy as np
import torch
from export_parity import eager_and_exported

from pyimgano_deploy.models.detectors.layers import NearestNeighbourDistance
from pyimgano_deploy.models.detectors.patchcore.model import ImageScoreReweight, bank_self_neighbors


def _weight(bank: np.ndarray, q_star: np.ndarray, b: int) -> float:
    """Eq. 7 in float64: 1 − exp‖q* − m*‖ / Σ_{m ∈ N_b(m*)} exp‖q* − m‖."""
    m_star = int(np.argmin(((bank - q_star) ** 2).sum(1)))
    order = np.argsort(((bank - bank[m_star]) ** 2).sum(1), kind="stable")[:b]
    d = np.sqrt(((bank[order] - q_star) ** 2).sum(1))
    return float(1.0 - np.exp(d[0]) / np.exp(d).sum())


def _reweighted(bank: np.ndarray, q_star: np.ndarray, b: int) -> float:
    t = torch.from_numpy(bank.astype(np.float32))
    head = ImageScoreReweight(bank_self_neighbors(t, b))
    q = torch.from_numpy(np.stack([q_star, q_star * 0.0]).astype(np.float32))[None]  # [1, 2, D]
    patch = torch.tensor([[1.0, 0.0]])  # the first query is the most anomalous patch
    return float(head(q, patch, torch.ones(1), NearestNeighbourDistance(t))[0])


def test_reweighting_equals_eq7() -> None:
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((40, 6))
    q_star = rng.standard_normal(6) * 2.0
    assert abs(_reweighted(bank, q_star, 5) - _weight(bank, q_star, 5)) < 1e-5


def test_an_isolated_nearest_patch_weighs_more_than_a_dense_one() -> None:
    """m* far from its own neighbours (a rare nominal patch) raises the score (w → 1); m* in a
    dense cluster leaves w near its floor 1 − 1/b."""
    b = 4
    dense = np.concatenate([np.zeros((1, 2)), 0.01 * np.eye(2), [[0.01, 0.01]], [[10.0, 10.0]], [[-10.0, 10.0]]])
    isolated = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [-5.0, 0.0], [0.0, -5.0], [9.0, 9.0]])
    q_star = np.array([0.5, 0.5])
    w_dense, w_isolated = _reweighted(dense, q_star, b), _reweighted(isolated, q_star, b)
    assert 1.0 - 1.0 / b - 1e-3 <= w_dense < 1.0 - 1.0 / b + 0.02
    assert w_isolated > 0.95 > w_dense


def test_the_exported_reweighted_score_matches_eager(tmp_path) -> None:
    (eager, _), (exported, _) = eager_and_exported("vision_patchcore", tmp_path, reweight=True, reweight_neighbors=4)
    assert np.allclose(exported, eager, rtol=1e-4, atol=1e-5)

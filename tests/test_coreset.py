import numpy as np

from pyimgano_deploy.models.detectors.coreset import greedy_coreset, greedy_coreset_reference


def _clustered(n=3000, d=48, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, d)).astype(np.float32) * 4
    return centers[rng.integers(20, size=n)] + rng.standard_normal((n, d)).astype(np.float32)


def test_lazy_greedy_equals_textbook_greedy():
    x = _clustered()
    fast, stats = greedy_coreset(x, 300, projection_dim=32, seed=1, block=16, top=64)
    ref = greedy_coreset_reference(x, 300, projection_dim=32, seed=1)
    assert np.array_equal(fast, ref)
    assert stats.flushes < 300  # centres were applied in blocks, not one pass each


def test_lazy_greedy_handles_duplicates_and_ties():
    rng = np.random.default_rng(4)
    x = np.repeat(rng.standard_normal((50, 16)).astype(np.float32), 6, axis=0)
    for block, top in ((1, 1), (7, 5), (128, 1024)):
        fast, _ = greedy_coreset(x, 60, projection_dim=0, seed=2, block=block, top=top)
        assert np.array_equal(fast, greedy_coreset_reference(x, 60, projection_dim=0, seed=2))


def test_coreset_is_sorted_unique_and_deterministic():
    x = _clustered(seed=2)
    a, _ = greedy_coreset(x, 100, seed=3)
    b, _ = greedy_coreset(x, 100, seed=3)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)


def test_coreset_covers_every_cluster():
    rng = np.random.default_rng(0)
    centers = np.eye(8, dtype=np.float32) * 100
    x = np.repeat(centers, 200, axis=0) + rng.standard_normal((1600, 8)).astype(np.float32)
    idx, _ = greedy_coreset(x, 8, projection_dim=0)
    assert sorted(set((idx // 200).tolist())) == list(range(8))

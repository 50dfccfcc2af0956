"""Export-friendly head layers: the folded map finisher, the augmented-bank distance and the
per-position Mahalanobis distance."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from pyimgano_deploy.exporters.onnx_export import trace_to_onnx
from pyimgano_deploy.models.detectors.layers import AnomalyMapFinisher, MahalanobisDistance, NearestNeighbourDistance, gaussian_kernel1d


def _reference_finish(p: torch.Tensor, out_size: tuple[int, int], sigma: float) -> torch.Tensor:
    """The textbook form: bilinear upsample, then a separable reflect-padded Gaussian (float64)."""
    m = F.interpolate(p.double().unsqueeze(1), size=out_size, mode="bilinear", align_corners=False)
    if sigma > 0:
        k = gaussian_kernel1d(sigma, torch.float64)
        r = (k.numel() - 1) // 2
        m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        m = F.conv2d(F.pad(m, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return m.squeeze(1)


@pytest.mark.parametrize(("grid", "out", "sigma"), [((28, 28), (224, 224), 4.0), ((7, 9), (64, 80), 1.5), ((8, 6), (32, 24), 0.0)])
def test_finisher_matches_upsample_then_blur(grid: tuple[int, int], out: tuple[int, int], sigma: float) -> None:
    p = torch.rand(3, *grid, generator=torch.Generator().manual_seed(0)) * 5.0
    got = AnomalyMapFinisher(out, sigma, in_size=grid)(p)
    want = _reference_finish(p, out, sigma)
    assert got.dtype == torch.float32 and tuple(got.shape) == (3, *out)
    assert torch.allclose(got.double(), want, rtol=0, atol=5e-6 * float(want.abs().max()))


def test_finisher_rejects_a_blur_wider_than_the_map() -> None:
    with pytest.raises(ValueError, match="blur_sigma"):
        AnomalyMapFinisher((16, 16), 8.0, in_size=(4, 4))


def _brute_force(q: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(q.double(), bank.double())
    return d.topk(k, dim=1, largest=False).values.mean(dim=1)


@pytest.mark.parametrize(("k", "chunk"), [(1, 300), (1, 4096), (3, 256)])
def test_distance_matches_brute_force(k: int, chunk: int) -> None:
    g = torch.Generator().manual_seed(1)
    bank, q = torch.randn(700, 24, generator=g), torch.randn(50, 24, generator=g)
    got = NearestNeighbourDistance(bank, k=k, chunk_size=chunk)(q)
    assert torch.allclose(got.double(), _brute_force(q, bank, k), atol=1e-4)


def test_distance_bank_round_trips_exactly() -> None:
    bank = torch.randn(40, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(NearestNeighbourDistance(bank).bank, bank)


def test_distance_loads_the_older_split_bank_state() -> None:
    bank = torch.randn(64, 8, generator=torch.Generator().manual_seed(3))
    old_state = {"bank_t_neg2": (-2.0 * bank).t().contiguous(), "bank_sq": (bank * bank).sum(1)}
    layer = NearestNeighbourDistance(torch.zeros(64, 8))
    layer.load_state_dict(old_state, strict=True)
    q = torch.randn(5, 8)
    assert torch.equal(layer(q), NearestNeighbourDistance(bank)(q))


class _Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.distance = NearestNeighbourDistance(torch.randn(300, 16), chunk_size=256)
        self.finisher = AnomalyMapFinisher((32, 32), 2.0, in_size=(8, 8))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.finisher(self.distance(q.reshape(-1, 16)).reshape(-1, 8, 8))


def test_head_exports_as_bias_free_matmuls(tmp_path) -> None:
    """The distance is a bias-free product on the augmented query (no bias pass over the
    output); the finisher is two MatMuls (no Resize / Conv on a 1-channel map)."""
    path = tmp_path / "head.onnx"
    head = _Head().eval()
    x = torch.randn(2, 64, 16)
    trace_to_onnx(head, (x,), path, opset=17, input_names=["q"], output_names=["map"],
                  dynamic_axes={"q": {0: "batch"}, "map": {0: "batch"}})
    nodes = onnx.load(str(path)).graph.node
    ops = [n.op_type for n in nodes]
    products = [n for n in nodes if n.op_type in ("MatMul", "Gemm")]
    assert len(products) == 2 + 2  # two bank chunks + rows and cols of the finisher
    assert all(len(n.input) == 2 for n in products)  # no bias operand
    assert ops.count("Concat") == 1 + 1  # the ones column once, then the chunk minima
    assert not {"Resize", "Conv", "Pad"} & set(ops)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        want = head(x).numpy()
    np.testing.assert_allclose(sess.run(None, {"q": x.numpy()})[0], want, rtol=1e-5, atol=1e-5)


def test_channel_selection_per_stage_equals_selecting_the_concatenation() -> None:
    from pyimgano_deploy.models.detectors.layers import PatchEmbedding

    g = torch.Generator().manual_seed(4)
    feats = [torch.randn(2, 6, 8, 8, generator=g), torch.randn(2, 5, 4, 4, generator=g), torch.randn(2, 3, 2, 2, generator=g)]
    select = torch.tensor([0, 2, 3, 9, 10])  # stage 0: some, stage 1: some, stage 2: none
    full = PatchEmbedding([6, 5, 3], [4, 8, 16], (8, 8), neighbourhood=1)(feats)
    got = PatchEmbedding([6, 5, 3], [4, 8, 16], (8, 8), neighbourhood=1, select_channels=select)(feats)
    assert torch.equal(got, full.index_select(1, select))


def test_channel_selection_must_be_sorted_and_unique() -> None:
    from pyimgano_deploy.models.detectors.layers import PatchEmbedding

    with pytest.raises(ValueError, match="sorted, unique"):
        PatchEmbedding([4, 4], [4, 8], (8, 8), select_channels=torch.tensor([3, 1]))


def test_mahalanobis_matches_the_per_position_quadratic_form() -> None:
    g = torch.Generator().manual_seed(0)
    b, d, h, w = 3, 5, 4, 6
    mean = torch.randn(h * w, d, generator=g)
    a = torch.randn(h * w, d, d, generator=g)
    inv_cov = a @ a.transpose(1, 2) + 0.1 * torch.eye(d)
    emb = torch.randn(b, d, h, w, generator=g)
    got = MahalanobisDistance(mean, inv_cov, (h, w))(emb)
    want = torch.empty(b, h, w, dtype=torch.float64)
    for i in range(b):
        for p in range(h * w):
            diff = emb[i, :, p // w, p % w].double() - mean[p].double()
            want[i, p // w, p % w] = torch.sqrt(diff @ inv_cov[p].double() @ diff)
    assert got.dtype == torch.float32 and tuple(got.shape) == (b, h, w)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5)

"""Fit-time memory of the memory-bank heads: features held once, the coreset's projection rounded
in place, and no batch cache for heads that read the fit images in one pass."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from pyimgano_deploy.inputs import Preprocess
from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.coreset import _projected, quantize
from pyimgano_deploy.models.detectors.memory_bank import patch_features
from pyimgano_deploy.models.registry import create_model


def _traced_peak(fn):  # numpy registers its buffers with tracemalloc
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


PEAK_SCRIPT = """
import resource, sys, numpy as np, torch
from pyimgano_deploy.models.detectors.memory_bank import patch_features
class Source:  # 32 batches of 8 images, each [8, 128, 32, 32] float32: 256 MiB of features in all
    def __len__(self): return 256
    def __iter__(self): return iter(range(32))
embed = lambda i: torch.full((8, 128, 32, 32), float(i))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
features = patch_features(embed, Source())
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
assert features.shape == (256, 1024, 128) and features[-1, 0, 0] == 31.0
print(grown / features.nbytes)
"""


def test_patch_features_holds_the_features_once() -> None:
    # peak RSS of a fresh process: per-batch arrays, then a concatenation, held the features twice
    ratio = float(subprocess.run([sys.executable, "-c", PEAK_SCRIPT], check=True, capture_output=True, text=True).stdout)
    assert ratio < 1.4


def test_coreset_projection_is_rounded_without_copies_and_never_rounds_the_callers_array() -> None:
    features = np.random.default_rng(0).standard_normal((20000, 64)).astype(np.float32)
    (q, sq, _), peak = _traced_peak(lambda: _projected(features, 32, seed=0))
    assert peak < 1.3 * q.nbytes + features.nbytes // 8  # the projection, once (x·s, rint and astype each held a copy)
    np.testing.assert_array_equal(sq, (q * q).sum(1))
    unprojected = features[:100].copy()
    q_same, _, _ = _projected(unprojected, 128, seed=0)  # 128 >= D: the features themselves are quantised
    assert np.array_equal(unprojected, features[:100]) and not np.shares_memory(q_same, unprojected)
    np.testing.assert_array_equal(quantize(features[:100].copy(), in_place=True)[0], quantize(features[:100])[0])


@pytest.mark.parametrize("name, cached", [("vision_patchcore", False), ("vision_padim", False), ("vision_softpatch", False),
                                          ("vision_autoencoder", True)])
def test_one_pass_heads_fit_without_a_batch_cache(name: str, cached: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    original = Detector.batch_source

    def spy(self, images, **kwargs):  # type: ignore[no-untyped-def]
        source = original(self, images, **kwargs)
        seen.append(source._cacheable)
        return source

    monkeypatch.setattr(Detector, "batch_source", spy)
    kwargs = {"epochs": 1, "widths": [8, 16]} if name == "vision_autoencoder" else {}
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    create_model(name, pretrained=False, image_size=32, progress=False, **kwargs).fit(images, input_format="rgb_u8_hwc")
    assert seen[0] is cached


def test_a_fit_larger_than_the_available_memory_is_announced(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from pyimgano_deploy.models.detectors.memory_bank import available_memory_bytes, warn_if_features_exceed_memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    1048576 kB\n")
    assert available_memory_bytes(meminfo) == 1 << 30
    assert available_memory_bytes(tmp_path / "absent") is None
    warn_if_features_exceed_memory(1000, (1904, 152), 1 << 30)  # 2.0 GiB of features alone
    assert "fitting on 1000 images needs about 2.0 GiB" in caplog.text and "1.0 GiB are available" in caplog.text
    caplog.clear()
    warn_if_features_exceed_memory(100, (1904, 152), 1 << 30)
    warn_if_features_exceed_memory(10**6, (1904, 152), None)  # unknown: no claim
    assert caplog.text == ""

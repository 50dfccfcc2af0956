"""The bounded pixel sample behind a threshold on all map pixels (train and recalibrate)."""

from __future__ import annotations

import numpy as np
import pytest

from pyimgano_deploy.postprocess.thresholds import PixelSample, calibrate_thresholds


def _maps(n: int, shape: tuple[int, int] = (12, 10), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(shape, dtype=np.float32) for _ in range(n)]


def test_under_the_cap_the_sample_is_every_pixel_in_order() -> None:
    maps = _maps(3)
    sample = PixelSample.of(maps, max_values=360)
    assert sample.step == 1
    np.testing.assert_array_equal(sample.values(), np.concatenate([m.ravel() for m in maps]))


def test_past_the_cap_every_map_is_strided_alike_by_the_smallest_power_of_two_that_fits() -> None:
    maps = _maps(7)
    sample = PixelSample.of(maps, max_values=300)
    step = sample.step
    expected = np.concatenate([m[::step, ::step].ravel() for m in maps])
    np.testing.assert_array_equal(sample.values(), expected)
    assert sample.values().size <= 300
    half = step // 2
    assert step > 1 and sum(m[::half, ::half].size for m in maps) > 300


def test_the_sample_is_the_same_whether_the_cap_is_passed_early_or_late() -> None:
    small_first = [np.ones((2, 2), np.float32)] + _maps(6)
    streamed = PixelSample(max_values=200)
    for m in small_first:
        streamed.add(m)
    np.testing.assert_array_equal(streamed.values(), PixelSample.of(small_first, max_values=200).values())
    step = streamed.step
    np.testing.assert_array_equal(streamed.values(), np.concatenate([m[::step, ::step].ravel() for m in small_first]))


def test_a_sample_fed_again_is_unchanged() -> None:
    sample = PixelSample.of(_maps(9), max_values=250)
    again = PixelSample.of(sample.maps, max_values=250)
    assert again.step == 1
    np.testing.assert_array_equal(again.values(), sample.values())


def test_memory_stays_bounded_however_many_maps_come() -> None:
    sample = PixelSample(max_values=1000)
    for m in _maps(400, shape=(32, 32)):
        sample.add(m)
    assert sum(k.size for k in sample.maps) <= 1000 and len(sample.maps) == 400


def test_a_map_that_is_not_two_dimensional_is_refused() -> None:
    with pytest.raises(ValueError, match=r"2-D maps \[H, W\].*\(1, 4, 4\)"):
        PixelSample().add(np.zeros((1, 4, 4), np.float32))


def test_the_pixel_threshold_is_the_quantile_of_the_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyimgano_deploy.postprocess.thresholds as thresholds

    monkeypatch.setattr(thresholds, "MAX_PIXEL_VALUES", 256)
    maps = _maps(8)
    found = calibrate_thresholds(np.arange(8.0), maps, quantile=0.9, pixel_quantile=0.99)
    values = PixelSample.of(maps, max_values=256).values()
    assert found.pixel is not None
    assert found.pixel.value == pytest.approx(float(np.quantile(values.astype(np.float64), 0.99)))
    assert found.pixel.n_values == values.size <= 256

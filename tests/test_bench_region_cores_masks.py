"""benchmarks/bench_region_cores.py resizes masks to the whole map, so it refuses cropped or tiled runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_region_cores import maps_of_test_split  # noqa: E402


@pytest.mark.parametrize("config", [{"model": {"kwargs": {"center_crop": 192}}, "tiling": None},
                                    {"model": {"kwargs": {}}, "tiling": {"tile": 512}}])
def test_a_cropped_or_tiled_run_is_refused_with_its_path(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="neither a center crop nor tiling") as err:
        maps_of_test_split(tmp_path)
    assert str(tmp_path) in str(err.value)

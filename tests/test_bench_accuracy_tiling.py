"""bench_accuracy's tiled rows train under the tiling recipe with the fp40 recipe's defects and pixel threshold."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_accuracy  # noqa: E402

from pyimgano_deploy.workbench.config import TrainConfig  # noqa: E402


def _config(name: str, model: str, kwargs: dict, tmp_path: Path) -> TrainConfig:
    recipe, blocks = bench_accuracy.training_blocks(name)
    return TrainConfig.from_dict({"recipe": recipe, "model": {"name": model, "kwargs": kwargs},
                                  "dataset": {"kind": "synthetic"}, "output": {"dir": str(tmp_path / "run")}, **blocks})


@pytest.mark.parametrize("name", sorted(bench_accuracy.TILING))
def test_tiled_row_resolves_to_tiling_with_fp40_check(name: str, tmp_path: Path) -> None:
    _, model, kwargs = next(t for t in bench_accuracy.TRIED if t[0] == name)
    tiled = _config(name, model, kwargs, tmp_path)
    plain = _config(bench_accuracy.TRIED[0][0], "vision_patchcore", {}, tmp_path)
    assert tiled.recipe == "industrial-adapt-highres"
    assert tiled.tiling["tile"] == 256 and tiled.tiling["stride"] == 224
    assert tiled.tiling["score_reduction"] == bench_accuracy.TILING[name]["score_reduction"]
    assert tiled.defects == plain.defects is not None
    assert (tiled.calibration.pixel_strategy, tiled.calibration.pixel_quantile) == \
        (plain.calibration.pixel_strategy, plain.calibration.pixel_quantile) == ("image_max", 0.95)


def test_untiled_rows_use_the_fp40_recipe() -> None:
    assert all(bench_accuracy.training_blocks(n) == (bench_accuracy.RECIPE, {}) for n, _, _ in bench_accuracy.TRIED
               if n not in bench_accuracy.TILING)

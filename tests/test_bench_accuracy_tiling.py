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


def test_a_row_whose_export_fails_the_gate_keeps_its_eager_figures(tmp_path: Path, monkeypatch) -> None:
    import json

    import pyimgano_deploy.exporters.bundle_export as bundle_export
    from pyimgano_deploy.bundles.parity import ParityError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(json.dumps({
        "metrics": {"image": {"auroc": 0.9, "recall": 0.7, "precision": 0.8}, "pixel": {"auroc": 0.99, "aupro": 0.8}},
        "model": {"hyperparameters": {"backbone": "efficientnet_lite0", "neighbourhood": 1}, "input_size": [224, 224]},
        "timings_s": {"fit": 1.0}}))
    (tmp_path / "cat" / "test" / "good").mkdir(parents=True)
    (tmp_path / "cat" / "test" / "good" / "a.png").write_bytes(b"")
    monkeypatch.setattr(bench_accuracy, "train_cli_default", lambda *a, **k: run_dir)

    def refuse(*a, **k):
        raise ParityError("parity gate failed for model.onnx; nothing was written.")

    monkeypatch.setattr(bundle_export, "export_run", refuse)
    monkeypatch.setattr(bench_accuracy, "timed_infer", lambda *a: pytest.fail("no bundle to time"))
    got = bench_accuracy.row("x", "vision_softpatch", {}, tmp_path / "cat", tmp_path / "work", 1, True)
    assert got["image_auroc"] == 0.9 and got["aupro"] == 0.8 and got["neighbourhood"] == 1
    assert got["infer_images_per_s"] is None
    assert "parity gate failed" in got["export_error"]

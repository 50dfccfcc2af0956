"""benchmarks/bsd_time_split.py: map reductions, the days shared by both classes, the timestamp's AUROC."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bsd_time_split import analyse, capture_time, reductions, shared_days_auroc  # noqa: E402


def _run(tmp_path: Path, images: list[tuple[str, int, np.ndarray, float]]) -> Path:
    (tmp_path / "maps").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"model": {"name": "vision_patchcore", "kwargs": {}}}))
    lines = []
    for i, (name, y, amap, score) in enumerate(images):
        np.save(tmp_path / "maps" / f"test_{i}.npy", amap.astype(np.float32))
        lines.append(json.dumps({"split": "test", "input": f"/data/{name}", "y_true": y, "score": score,
                                 "threshold": 5.0, "map": f"maps/test_{i}.npy"}))
    (tmp_path / "per_image.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_capture_time_reads_the_second_field_and_refuses_other_names():
    assert capture_time("/x/01_200828110901_635000_270_crop_2.jpg") == "200828110901"
    with pytest.raises(ValueError, match="YYMMDDhhmmss"):
        capture_time("/x/000.png")


def test_reductions_of_a_map():
    amap = np.arange(100, dtype=np.float32).reshape(10, 10)
    r = reductions(amap)
    assert r["max"] == 99 and r["mean"] == pytest.approx(49.5) and r["median"] == pytest.approx(49.5)
    assert r["top1"] == 99 and r["top10"] == pytest.approx(94.5)


def test_max_minus_median_ignores_a_surface_wide_offset():
    amap = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert reductions(amap)["max_minus_median"] == pytest.approx(49.5)
    assert reductions(amap + 7.0)["max_minus_median"] == pytest.approx(49.5)


def test_a_whole_surface_shift_between_days_is_told_apart_from_the_shared_days(tmp_path):
    flat, raised = np.zeros((4, 4)), np.ones((4, 4))
    spike = flat.copy()
    spike[0, 0] = 9.0
    run = _run(tmp_path, [
        ("01_200801000000_a.jpg", 0, flat, 0.0),           # early day: normals only
        ("01_200801000001_a.jpg", 0, flat, 0.0),
        ("01_200805000000_a.jpg", 0, raised + spike, 9.0),  # shared day: a normal with a spike (above the threshold)
        ("01_200805000001_a.jpg", 1, raised, 1.0),         # shared day: a defect that raises the whole surface
        ("01_200806000000_a.jpg", 1, raised + spike, 10.0),
    ])
    out = analyse(run)
    assert out["timestamp_auroc"] == 1.0
    assert out["shared_days"] == ["200805"]
    assert out["shared_days_images"] == {"normal": 1, "defective": 1}
    assert out["auroc_all"]["median"] == pytest.approx(5 / 6, abs=1e-4)  # the days' shift separates most of the whole split
    assert out["auroc_shared_days"]["median"] == 0.5  # but not the images of one day
    assert out["auroc_shared_days"]["max"] == 0.0
    assert out["normals_above_threshold_by_day"]["200805"] == {"normal": 1, "above": 1}
    assert out["normals_above_threshold_by_day"]["200801"] == {"normal": 2, "above": 0}


def test_a_run_without_maps_is_refused_with_its_path(tmp_path):
    (tmp_path / "per_image.jsonl").write_text(json.dumps({"split": "test", "input": "a", "y_true": 0, "map": None}) + "\n")
    with pytest.raises(SystemExit, match="--save-maps") as err:
        analyse(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_shared_days_auroc_scores_only_the_days_with_both_classes(tmp_path):
    flat = np.zeros((2, 2))
    run = _run(tmp_path, [
        ("01_200828100000_a.jpg", 0, flat, 9.0),   # a day with normals only: left out
        ("01_200905100000_b.jpg", 0, flat, 2.0),
        ("01_200905110000_c.jpg", 1, flat, 3.0),
        ("01_200905120000_d.jpg", 0, flat, 4.0),
        ("01_200906100000_e.jpg", 1, flat, 1.0),   # defective only: left out
    ])
    # on 5 September the defective image (3.0) beats one of its two normals (2.0, 4.0)
    assert shared_days_auroc(run) == 0.5


def test_shared_days_auroc_is_none_for_names_without_a_capture_time(tmp_path):
    run = _run(tmp_path, [("000.png", 0, np.zeros((2, 2)), 1.0), ("001.png", 1, np.zeros((2, 2)), 2.0)])
    assert shared_days_auroc(run) is None

"""Plain-folder loader."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from image_files import flat_png
from pyimgano_deploy.datasets import DatasetError, load_folder


_png = flat_png


def _folders(root: Path) -> dict[str, Path]:
    dirs = {k: root / k for k in ("train", "normal", "defects", "masks")}
    for i in range(3):
        _png(dirs["train"] / f"{i}.png")
    _png(dirs["normal"] / "n0.jpg")
    for stem in ("a", "b", "c"):
        _png(dirs["defects"] / f"{stem}.png", 20)
    _png(dirs["masks"] / "a_mask.png", 255)  # MVTec naming
    _png(dirs["masks"] / "b.png", 255)  # same-stem naming
    return dirs


def test_full_folder_set(tmp_path: Path) -> None:
    d = _folders(tmp_path)
    ds = load_folder(d["train"], test_normal_dir=d["normal"], test_anomalous_dir=d["defects"], mask_dir=d["masks"], name="cans")
    assert ds.name == "cans" and ds.category == "cans"
    assert ds.root == str(tmp_path.absolute())
    assert [Path(s.path).name for s in ds.train] == ["0.png", "1.png", "2.png"]
    assert [(Path(s.path).name, s.label, s.defect_type) for s in ds.test] == [
        ("n0.jpg", 0, "good"),
        ("a.png", 1, "anomalous"),
        ("b.png", 1, "anomalous"),
        ("c.png", 1, "anomalous"),
    ]
    masks = {Path(s.path).name: s.mask_path for s in ds.test}
    assert masks == {"n0.jpg": None, "a.png": str(d["masks"] / "a_mask.png"), "b.png": str(d["masks"] / "b.png"), "c.png": None}
    summary = ds.summary()
    assert summary["train"]["n_images"] == 3
    assert summary["test"] == {
        "n_images": 4,
        "n_normal": 1,
        "n_anomalous": 3,
        "n_masks": 2,
        "by_defect_type": {"anomalous": 3, "good": 1},
    }


def test_train_only_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _folders(tmp_path)
    monkeypatch.chdir(tmp_path)
    ds = load_folder("train")
    assert ds.test == [] and len(ds.train) == 3
    assert all(os.path.isabs(s.path) for s in ds.train)
    assert ds.root == str(Path.cwd() / "train")


def test_unsupported_files_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = _folders(tmp_path)
    (d["train"] / "labels.csv").write_text("x")
    (d["train"] / ".cache").mkdir()
    _png(d["train"] / ".thumb.png")
    (d["masks"] / "Thumbs.db").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="pyimgano_deploy.datasets"):
        ds = load_folder(d["train"], test_anomalous_dir=d["defects"], mask_dir=d["masks"])
    assert len(ds.train) == 3
    assert ds.ignored == [str(d["masks"] / "Thumbs.db"), str(d["train"] / "labels.csv")]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "labels.csv" in messages and "Thumbs.db" in messages and ".thumb" not in messages


def test_hazelnut_as_folders(hazelnut_root: Path) -> None:
    ds = load_folder(
        hazelnut_root / "train" / "good",
        test_normal_dir=hazelnut_root / "test" / "good",
        test_anomalous_dir=hazelnut_root / "test" / "colour",
        mask_dir=hazelnut_root / "ground_truth" / "colour",
        name="hazelnut",
    )
    assert len(ds.train) == 28 and len(ds.test_normal) == 6 and len(ds.test_anomalous) == 17
    assert all(s.mask_path is not None for s in ds.test_anomalous)
    assert ds.root == str(hazelnut_root.absolute())


def test_errors(tmp_path: Path) -> None:
    d = _folders(tmp_path)
    with pytest.raises(DatasetError, match="train_dir does not exist"):
        load_folder(tmp_path / "missing")
    with pytest.raises(DatasetError, match="train_dir is not a directory"):
        load_folder(d["train"] / "0.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="empty train split.*empty"):
        load_folder(empty)
    with pytest.raises(DatasetError, match=r"empty test \(normal\) split"):
        load_folder(d["train"], test_normal_dir=empty)
    with pytest.raises(DatasetError, match=r"empty test \(anomalous\) split"):
        load_folder(d["train"], test_anomalous_dir=empty)
    with pytest.raises(DatasetError, match="test_normal_dir does not exist"):
        load_folder(d["train"], test_normal_dir=tmp_path / "nope")
    with pytest.raises(DatasetError, match="without test_anomalous_dir"):
        load_folder(d["train"], mask_dir=d["masks"])
    with pytest.raises(DatasetError, match="mask_dir does not exist"):
        load_folder(d["train"], test_anomalous_dir=d["defects"], mask_dir=tmp_path / "nope")
    with pytest.raises(DatasetError, match="name"):
        load_folder(d["train"], name="")


def test_mask_without_image_names_both_paths(tmp_path: Path) -> None:
    d = _folders(tmp_path)
    orphan = _png(d["masks"] / "zz_mask.png", 255)
    with pytest.raises(DatasetError) as info:
        load_folder(d["train"], test_anomalous_dir=d["defects"], mask_dir=d["masks"])
    assert str(orphan) in str(info.value)
    assert str(d["defects"] / "zz") in str(info.value)

"""MVTec-layout loader: real data, synthetic data, both mask namings, every error case."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from image_files import flat_png
from pyimgano_deploy.datasets import (
    AnomalyDataset,
    DatasetError,
    Sample,
    generate_synthetic_dataset,
    list_mvtec_categories,
    load_mvtec,
)


_png = flat_png


def _tree(root: Path, *, mask_style: str = "mvtec", category: str = "widget") -> Path:
    """root/category with 3 train, 2 good test, 2 'crack' (with masks) and 1 'dent' (no mask)."""
    cat = root / category
    for name in ("000.png", "001.png", "002.png"):
        _png(cat / "train" / "good" / name)
    for name in ("000.png", "001.png"):
        _png(cat / "test" / "good" / name)
    for stem in ("000", "001"):
        _png(cat / "test" / "crack" / f"{stem}.png", 30)
        mask_name = f"{stem}_mask.png" if mask_style == "mvtec" else f"{stem}.png"
        _png(cat / "ground_truth" / "crack" / mask_name, 255)
    _png(cat / "test" / "dent" / "000.jpg", 60)
    return cat


# --- real data -------------------------------------------------------------------------------


def test_hazelnut_root_is_a_category(hazelnut_root: Path) -> None:
    assert list_mvtec_categories(hazelnut_root) == ["hazelnut_toy"]
    ds = load_mvtec(hazelnut_root)
    assert ds.category == "hazelnut_toy"
    assert ds.root == str(hazelnut_root.absolute())
    assert len(ds.train) == 28 and all(s.label == 0 and s.defect_type == "good" for s in ds.train)
    assert len(ds.test_normal) == 6
    colour = [s for s in ds.test if s.defect_type == "colour"]
    assert len(colour) == 17 and all(s.label == 1 for s in colour)
    for s in colour:
        assert s.mask_path is not None and Path(s.mask_path).is_file()
        assert Path(s.mask_path).stem == Path(s.path).stem  # <stem>.png naming
        assert Path(s.mask_path).parent.parts[-2:] == ("ground_truth", "colour")
    assert all(s.mask_path is None for s in ds.test_normal)
    summary = ds.summary()
    assert summary["train"]["n_images"] == 28
    assert summary["test"]["by_defect_type"] == {"colour": 17, "good": 6}
    assert summary["test"]["n_masks"] == 17
    assert ds.defect_types == ["colour"]
    # explicit category name equal to the folder name works too, and the order is stable
    again = load_mvtec(hazelnut_root, "hazelnut_toy")
    assert again.to_dict() == ds.to_dict()
    assert [Path(s.path).name for s in ds.train][:3] == ["00.jpg", "01.jpg", "02.jpg"]


def test_hazelnut_unknown_category_lists_available(hazelnut_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown category 'hazelnut'.*available: hazelnut_toy"):
        load_mvtec(hazelnut_root, "hazelnut")


def test_synthetic_set_loads(tmp_path: Path) -> None:
    cat = generate_synthetic_dataset(tmp_path / "data", seed=1, n_train=5, n_test=9, size=32)
    assert list_mvtec_categories(tmp_path / "data") == ["surface"]
    ds = load_mvtec(tmp_path / "data", "surface")
    assert ds.root == str(cat)
    assert load_mvtec(tmp_path / "data").to_dict() == ds.to_dict()  # single category → no name needed
    s = ds.summary()
    assert s["train"]["n_images"] == 5
    assert s["test"]["n_normal"] == 4 and s["test"]["n_anomalous"] == 5 and s["test"]["n_masks"] == 5
    assert s["test"]["by_defect_type"] == {"good": 4, "hole": 1, "missing_texture": 1, "scratch": 2, "stain": 1}
    assert ds.test[0].defect_type == "good"  # good first, then defect types in order
    assert [t.defect_type for t in ds.test_anomalous] == ["hole", "missing_texture", "scratch", "scratch", "stain"]
    assert ds.ignored == []


# --- mask naming ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["mvtec", "stem"])
def test_both_mask_namings(tmp_path: Path, style: str) -> None:
    cat = _tree(tmp_path, mask_style=style)
    ds = load_mvtec(tmp_path, "widget")
    crack = [s for s in ds.test if s.defect_type == "crack"]
    assert [Path(s.path).name for s in crack] == ["000.png", "001.png"]
    expected = ["000_mask.png", "001_mask.png"] if style == "mvtec" else ["000.png", "001.png"]
    assert [Path(s.mask_path).name for s in crack] == expected  # type: ignore[arg-type]
    assert all(Path(s.mask_path).parent == cat / "ground_truth" / "crack" for s in crack)  # type: ignore[arg-type]
    dent = [s for s in ds.test if s.defect_type == "dent"]
    assert len(dent) == 1 and dent[0].label == 1 and dent[0].mask_path is None  # anomalous without mask: allowed
    assert ds.summary()["test"] == {
        "n_images": 5,
        "n_normal": 2,
        "n_anomalous": 3,
        "n_masks": 2,
        "by_defect_type": {"crack": 2, "dent": 1, "good": 2},
    }


def test_natural_sort_hidden_and_unsupported_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cat = _tree(tmp_path)
    _png(cat / "train" / "good" / "10.png")
    _png(cat / "train" / "good" / "9.PNG")
    _png(cat / "train" / "good" / ".hidden.png")
    (cat / "train" / "good" / ".DS_Store").write_bytes(b"x")
    (cat / "train" / "good" / "notes.txt").write_text("hello")
    (cat / "test" / ".ipynb_checkpoints").mkdir()
    with caplog.at_level(logging.WARNING, logger="pyimgano_deploy.datasets"):
        ds = load_mvtec(tmp_path, "widget")
    assert [Path(s.path).name for s in ds.train] == ["000.png", "001.png", "002.png", "9.PNG", "10.png"]
    assert ds.ignored == [str(cat / "train" / "good" / "notes.txt")]
    assert "notes.txt" in caplog.text
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert ".hidden.png" not in messages[0] and "DS_Store" not in messages[0] and "ipynb" not in messages[0]
    assert ds.summary()["n_ignored"] == 1


def test_image_directly_in_test_is_logged_as_misplaced_not_unsupported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cat = _tree(tmp_path)
    _png(cat / "test" / "stray.png")
    with caplog.at_level(logging.WARNING, logger="pyimgano_deploy.datasets"):
        ds = load_mvtec(cat)
    assert str(cat / "test" / "stray.png") in ds.ignored
    message = next(r.getMessage() for r in caplog.records if "stray.png" in r.getMessage())
    assert "directly in" in message and "good/ and <defect>/ sub-folders" in message and "unsupported" not in message


def test_a_dangling_link_is_logged_as_a_missing_target(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cat = _tree(tmp_path)
    (cat / "train" / "good" / "003.png").symlink_to(tmp_path / "gone.png")
    with caplog.at_level(logging.WARNING, logger="pyimgano_deploy.datasets"):
        ds = load_mvtec(cat)
    assert str(cat / "train" / "good" / "003.png") in ds.ignored and len(ds.train) == 3
    message = next(r.getMessage() for r in caplog.records if "003.png" in r.getMessage())
    assert "target does not exist" in message and "unsupported" not in message


def test_ground_truth_good_is_ignored(tmp_path: Path) -> None:
    cat = _tree(tmp_path)
    _png(cat / "ground_truth" / "good" / "000_mask.png", 0)
    ds = load_mvtec(tmp_path, "widget")
    assert all(s.mask_path is None for s in ds.test_normal)
    assert str(cat / "ground_truth" / "good") in ds.ignored


def test_non_ascii_paths(tmp_path: Path) -> None:
    root = tmp_path / "données_表面"
    _tree(root, category="pièce")
    assert list_mvtec_categories(root) == ["pièce"]
    ds = load_mvtec(root, "pièce")
    assert len(ds.train) == 3 and ds.category == "pièce"


def test_several_categories(tmp_path: Path) -> None:
    _tree(tmp_path, category="b_cat")
    _tree(tmp_path, category="a_cat")
    (tmp_path / "not_a_category").mkdir()
    (tmp_path / "LICENSE.txt").write_text("x")
    assert list_mvtec_categories(tmp_path) == ["a_cat", "b_cat"]
    assert load_mvtec(tmp_path, "b_cat").category == "b_cat"
    with pytest.raises(DatasetError, match=r"category is required.*a_cat, b_cat"):
        load_mvtec(tmp_path)
    with pytest.raises(DatasetError, match=r"unknown category 'c_cat'.*available: a_cat, b_cat"):
        load_mvtec(tmp_path, "c_cat")
    with pytest.raises(DatasetError, match=r"list_mvtec_categories"):
        load_mvtec(tmp_path, "all")
    with pytest.raises(DatasetError, match="plain folder name"):
        load_mvtec(tmp_path, "../a_cat")


# --- errors -----------------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist.*nowhere"):
        load_mvtec(tmp_path / "nowhere", "x")
    with pytest.raises(DatasetError, match="does not exist"):
        list_mvtec_categories(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        load_mvtec(tmp_path / "file.txt")


def test_no_categories(tmp_path: Path) -> None:
    assert list_mvtec_categories(tmp_path) == []
    with pytest.raises(DatasetError, match="no MVTec categories"):
        load_mvtec(tmp_path)
    with pytest.raises(DatasetError, match="available: none"):
        load_mvtec(tmp_path, "widget")


def test_empty_train_split(tmp_path: Path) -> None:
    cat = _tree(tmp_path)
    for p in (cat / "train" / "good").iterdir():
        p.unlink()
    (cat / "train" / "good" / "readme.md").write_text("x")
    with pytest.raises(DatasetError, match=r"empty train split.*train[/\\]good"):
        load_mvtec(tmp_path, "widget")


def test_missing_train_good(tmp_path: Path) -> None:
    cat = _tree(tmp_path)
    (cat / "train" / "good").rename(cat / "train" / "ok")
    with pytest.raises(DatasetError, match="missing train split"):
        load_mvtec(tmp_path, "widget")


def test_empty_test_split(tmp_path: Path) -> None:
    cat = tmp_path / "widget"
    _png(cat / "train" / "good" / "000.png")
    (cat / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty test split"):
        load_mvtec(tmp_path, "widget")


def test_missing_test_split(tmp_path: Path) -> None:
    _png(tmp_path / "widget" / "train" / "good" / "000.png")
    with pytest.raises(DatasetError, match="missing test split"):
        load_mvtec(tmp_path, "widget")


@pytest.mark.parametrize("style", ["mvtec", "stem"])
def test_mask_without_image_names_both_paths(tmp_path: Path, style: str) -> None:
    cat = _tree(tmp_path, mask_style=style)
    orphan = _png(cat / "ground_truth" / "crack" / ("007_mask.png" if style == "mvtec" else "007.png"), 255)
    with pytest.raises(DatasetError) as info:
        load_mvtec(tmp_path, "widget")
    message = str(info.value)
    assert str(orphan) in message
    assert str(cat / "test" / "crack" / "007") in message


def test_mask_for_missing_defect_folder(tmp_path: Path) -> None:
    cat = _tree(tmp_path)
    _png(cat / "ground_truth" / "scratch" / "000_mask.png", 255)
    with pytest.raises(DatasetError, match=r"no matching image.*test[/\\]scratch[/\\]000"):
        load_mvtec(tmp_path, "widget")


def test_two_masks_for_one_image(tmp_path: Path) -> None:
    cat = _tree(tmp_path)
    _png(cat / "ground_truth" / "crack" / "000.png", 255)
    with pytest.raises(DatasetError, match="has two masks"):
        load_mvtec(tmp_path, "widget")


def test_ambiguous_stem(tmp_path: Path) -> None:
    cat = _tree(tmp_path)
    _png(cat / "test" / "crack" / "000.jpg")
    with pytest.raises(DatasetError, match="ambiguous"):
        load_mvtec(tmp_path, "widget")


# --- records ----------------------------------------------------------------------------------


def test_sample_validation_and_round_trip(tmp_path: Path) -> None:
    s = Sample(path="a.png", label=1, defect_type="crack", mask_path="m.png")
    assert Sample.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="label"):
        Sample(path="a.png", label=2, defect_type="crack")
    with pytest.raises(ValueError, match="label"):
        Sample.from_dict({"path": "a.png", "label": True, "defect_type": "good"})
    with pytest.raises(ValueError, match="defect_type"):
        Sample(path="a.png", label=0, defect_type="crack")
    with pytest.raises(ValueError, match="defect_type"):
        Sample(path="a.png", label=1, defect_type="good")
    with pytest.raises(ValueError, match="mask_path"):
        Sample(path="a.png", label=0, defect_type="good", mask_path="m.png")
    with pytest.raises(ValueError, match=r"missing \['label'\]"):
        Sample.from_dict({"path": "a.png", "defect_type": "good"})
    _tree(tmp_path)
    ds = load_mvtec(tmp_path, "widget")
    assert AnomalyDataset.from_dict(ds.to_dict()) == ds
    with pytest.raises(ValueError, match="train must hold normal"):
        AnomalyDataset(name="x", category="x", root="r", train=[s], test=[])


def test_datasets_package_does_not_import_torch() -> None:
    code = "import sys, pyimgano_deploy.datasets; assert 'torch' not in sys.modules and 'onnx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])

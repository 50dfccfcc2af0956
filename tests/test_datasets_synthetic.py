"""Synthetic data-set generator: layout, determinism, exact masks, visibility, speed."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pyimgano_deploy.datasets import (
    DEFECT_KINDS,
    DatasetError,
    draw_defect,
    generate_synthetic_dataset,
    load_mvtec,
    render_sample,
    render_surface,
)


def _read(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), flags)
    assert image is not None, path
    return image


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_layout_and_counts(tmp_path: Path) -> None:
    cat = generate_synthetic_dataset(tmp_path, seed=0, n_train=6, n_test=11, size=48, category="plate")
    assert cat == tmp_path.absolute() / "plate"
    assert sorted(p.name for p in cat.iterdir()) == ["README.txt", "ground_truth", "test", "train"]
    assert "seed: 0" in (cat / "README.txt").read_text(encoding="utf-8")
    assert sorted(p.name for p in (cat / "train" / "good").iterdir()) == [f"{i:03d}.png" for i in range(6)]
    assert len(list((cat / "test" / "good").iterdir())) == 5
    assert not (cat / "ground_truth" / "good").exists()
    n_bad = {k: len(list((cat / "test" / k).iterdir())) for k in DEFECT_KINDS}
    assert n_bad == {"scratch": 2, "stain": 2, "missing_texture": 1, "hole": 1}  # 6 defective, kinds cycled
    for kind in DEFECT_KINDS:
        stems = sorted(p.stem for p in (cat / "test" / kind).iterdir())
        assert sorted(p.stem for p in (cat / "ground_truth" / kind).iterdir()) == [f"{s}_mask" for s in stems]
    for p in cat.rglob("*.png"):
        img = _read(p)
        assert img.shape[:2] == (48, 48) and img.dtype == np.uint8


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = _hashes(generate_synthetic_dataset(tmp_path / "a", seed=7, n_train=4, n_test=8, size=64))
    b = _hashes(generate_synthetic_dataset(tmp_path / "b", seed=7, n_train=4, n_test=8, size=64))
    c = _hashes(generate_synthetic_dataset(tmp_path / "c", seed=8, n_train=4, n_test=8, size=64))
    assert a == b
    assert len(a) == 4 + 8 + 4 + 1  # images, masks, README
    assert a.keys() == c.keys() and a["train/good/000.png"] != c["train/good/000.png"]
    # an image does not depend on how many others were generated
    d = _hashes(generate_synthetic_dataset(tmp_path / "d", seed=7, n_train=2, n_test=4, size=64))
    assert d["train/good/001.png"] == a["train/good/001.png"]
    assert d["ground_truth/stain/000_mask.png"] == a["ground_truth/stain/000_mask.png"]


def test_masks_cover_defects_exactly(tmp_path: Path) -> None:
    size = 64
    cat = generate_synthetic_dataset(tmp_path, seed=3, n_train=2, n_test=16, size=size)
    ds = load_mvtec(cat)
    assert all(s.mask_path is None for s in ds.test_normal)
    assert all(s.mask_path is not None for s in ds.test_anomalous)
    for i in range(8):
        rendered = render_sample(3, "test_defect", i, size)
        kind = DEFECT_KINDS[i % len(DEFECT_KINDS)]
        stem = f"{i // len(DEFECT_KINDS):03d}"
        image = cv2.cvtColor(_read(cat / "test" / kind / f"{stem}.png"), cv2.COLOR_BGR2RGB)
        mask = _read(cat / "ground_truth" / kind / f"{stem}_mask.png")
        assert rendered.defect_type == kind
        assert np.array_equal(image, rendered.image) and np.array_equal(mask, rendered.mask)
        assert mask.shape == (size, size) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 255}
        inside = mask > 0
        # inside the image, not touching the border
        assert not inside[0].any() and not inside[-1].any() and not inside[:, 0].any() and not inside[:, -1].any()
        changed = np.any(image != rendered.clean, axis=2)
        assert not (changed & ~inside).any(), f"{kind}: pixels changed outside the mask"
        assert changed[inside].mean() > 0.8, f"{kind}: mask larger than the drawn defect"
        # clearly visible: large mean change inside the mask
        diff = np.abs(image.astype(np.int16) - rendered.clean.astype(np.int16)).max(axis=2)
        assert diff[inside].mean() > 25, f"{kind}: defect too faint ({diff[inside].mean():.1f})"
        ys, xs = np.nonzero(inside)
        extent = min(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        if kind == "scratch":
            assert cv2.erode(mask, np.ones((2, 2), np.uint8)).any()  # >= 2 px wide
            assert np.median(image[inside].astype(np.float32)) > 200  # bright
        else:
            assert extent >= 0.1 * size, f"{kind}: smaller than 10% of the image side"
        if kind == "hole":
            assert image[inside].max() < 50  # dark
        if kind == "stain":
            px = image[inside].astype(np.float32)
            assert (px.max(axis=1) - px.min(axis=1)).mean() > 80  # strongly coloured
    for s in ds.test_normal:
        index = int(Path(s.path).stem)
        rendered = render_sample(3, "test_good", index, size)
        assert rendered.mask is None and rendered.defect_type == "good"
        assert np.array_equal(cv2.cvtColor(_read(s.path), cv2.COLOR_BGR2RGB), rendered.image)


def test_normal_images_vary_but_look_alike() -> None:
    images = [render_sample(0, "train", i, 64).image.astype(np.float32) for i in range(6)]
    means = [im.mean() for im in images]
    stds = [im.std() for im in images]
    for i in range(1, len(images)):
        assert not np.array_equal(images[0], images[i])
    assert max(means) - min(means) < 25 and 90 < min(means) and max(means) < 190
    assert max(stds) / min(stds) < 1.5 and min(stds) > 5  # textured, similar contrast


def test_draw_defect_helpers() -> None:
    rng = np.random.default_rng(0)
    surface = render_surface(rng, 32)
    for kind in DEFECT_KINDS:
        image, mask = draw_defect(surface, kind, rng)
        assert image.shape == surface.shape and mask.any()
        assert np.array_equal(image[mask == 0], surface[mask == 0])
    with pytest.raises(ValueError, match="kind must be one of"):
        draw_defect(surface, "dent", rng)
    with pytest.raises(ValueError, match="square RGB uint8"):
        draw_defect(surface[..., 0], "hole", rng)
    with pytest.raises(ValueError, match="split must be one of"):
        render_sample(0, "val", 0)


def test_regenerate_and_refuse_foreign_folder(tmp_path: Path) -> None:
    cat = generate_synthetic_dataset(tmp_path, n_train=4, n_test=8, size=32)
    first = _hashes(cat)
    again = generate_synthetic_dataset(tmp_path, n_train=2, n_test=4, size=32)  # our folder: rewritten in place
    assert len(_hashes(again)) == 2 + 4 + 2 + 1
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        generate_synthetic_dataset(tmp_path, n_train=2, n_test=4, size=32, category="mine")
    generate_synthetic_dataset(tmp_path, n_train=4, n_test=8, size=32, category="mine", overwrite=True)
    assert (foreign / "keep.txt").exists()
    generate_synthetic_dataset(tmp_path, n_train=4, n_test=8, size=32)
    assert _hashes(cat) == first


def test_parameter_validation(tmp_path: Path) -> None:
    for kwargs, key in (
        ({"seed": -1}, "seed"),
        ({"n_train": 0}, "n_train"),
        ({"n_test": 1}, "n_test"),
        ({"size": 16}, "size"),
        ({"size": 64.0}, "size"),
        ({"category": "a/b"}, "category"),
        ({"category": ".hidden"}, "category"),
    ):
        with pytest.raises(DatasetError, match=key):
            generate_synthetic_dataset(tmp_path, **kwargs)  # type: ignore[arg-type]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="not a directory"):
        generate_synthetic_dataset(tmp_path, category="afile")


def test_non_ascii_root(tmp_path: Path) -> None:
    cat = generate_synthetic_dataset(tmp_path / "données_表面", n_train=2, n_test=2, size=32, category="pièce")
    ds = load_mvtec(cat)
    assert len(ds.train) == 2 and len(ds.test) == 2 and ds.category == "pièce"
    assert _read(ds.test_anomalous[0].mask_path).any()  # type: ignore[arg-type]


def test_defaults_are_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    cat = generate_synthetic_dataset(tmp_path)
    elapsed = time.perf_counter() - start
    ds = load_mvtec(cat)
    assert len(ds.train) == 40 and len(ds.test) == 20 and len(ds.test_anomalous) == 10
    assert elapsed < 1.5, f"default generation took {elapsed:.2f} s"

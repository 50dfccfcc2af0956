"""MVTec-AD layout loader (stdlib only).

Layout of one category::

    <category>/train/good/*.png          normal images for fitting
    <category>/test/good/*.png           normal test images (no masks)
    <category>/test/<defect>/*.png       anomalous test images
    <category>/ground_truth/<defect>/    masks, <stem>_mask.png (MVTec) or <stem>.png

``root`` is either a directory of categories (``root/<category>/train/...``) or one category
itself (``root/train/...``; its category name is the folder's name).
Test samples come "good" first, then defect types in natural order; files in natural order.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyimgano_deploy.datasets._scan import logger, match_masks, natural_key, note_ignored, note_misplaced, scan_dir
from pyimgano_deploy.datasets.types import (
    IMAGE_EXTENSIONS,
    NORMAL_DEFECT_TYPE,
    AnomalyDataset,
    DatasetError,
    Sample,
)

DATASET_NAME = "mvtec"


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"data set root does not exist: {path}")
    if not path.is_dir():
        raise DatasetError(f"data set root is not a directory: {path}")
    return path.absolute()


def _is_category_dir(path: Path) -> bool:
    return (path / "train").is_dir()


def list_mvtec_categories(root: str | os.PathLike) -> list[str]:
    """Category names under ``root`` (sub-directories holding ``train/``), natural order.

    When ``root`` is itself a category (it holds ``train/``), returns ``[root.name]``.
    """
    path = _check_root(root)
    if _is_category_dir(path):
        return [path.name]
    return [d.name for d in scan_dir(path).subdirs if _is_category_dir(d)]


def _resolve_category(root: Path, category: str | None) -> Path:
    available = list_mvtec_categories(root)
    if category is None:
        if _is_category_dir(root):
            return root
        if len(available) == 1:
            return root / available[0]
        if not available:
            raise DatasetError(
                f"no MVTec categories under {root}: expected {root}/<category>/train/good or {root}/train/good"
            )
        raise DatasetError(f"a category is required for {root}; available: {', '.join(available)}")
    if not isinstance(category, str) or not category or Path(category).name != category or category in (".", ".."):
        raise DatasetError(f"category must be a plain folder name, got {category!r}")
    candidate = root / category
    if candidate.is_dir() and _is_category_dir(candidate):
        return candidate
    if _is_category_dir(root) and category == root.name:
        return root
    hint = " (category 'all' must be expanded by the caller with list_mvtec_categories)" if category == "all" else ""
    listed = ", ".join(available) if available else "none"
    raise DatasetError(f"unknown category {category!r} under {root}; available: {listed}{hint}")


def _load_train(cat_dir: Path, ignored: list[str]) -> list[Sample]:
    train_dir = cat_dir / "train" / NORMAL_DEFECT_TYPE
    if not train_dir.is_dir():
        raise DatasetError(f"missing train split: directory {train_dir} does not exist")
    scan = scan_dir(train_dir)
    note_ignored(scan.unsupported + scan.subdirs, train_dir, ignored)
    if not scan.images:
        raise DatasetError(
            f"empty train split: no image files in {train_dir} (supported extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return [Sample(path=str(p), label=0, defect_type=NORMAL_DEFECT_TYPE) for p in scan.images]


def _test_dirs(test_dir: Path, ignored: list[str]) -> list[Path]:
    scan = scan_dir(test_dir)
    note_misplaced(scan.images, test_dir, f"{NORMAL_DEFECT_TYPE}/ and <defect>/ sub-folders", ignored)
    note_ignored(scan.unsupported, test_dir, ignored)
    good = [d for d in scan.subdirs if d.name == NORMAL_DEFECT_TYPE]
    return good + [d for d in scan.subdirs if d.name != NORMAL_DEFECT_TYPE]


def _load_masks(cat_dir: Path, images_by_type: dict[str, list[Path]], ignored: list[str]) -> dict[Path, Path]:
    gt_dir = cat_dir / "ground_truth"
    if not gt_dir.is_dir():
        return {}
    scan = scan_dir(gt_dir)
    note_misplaced(scan.images, gt_dir, "ground_truth/<defect>/ sub-folders", ignored)
    note_ignored(scan.unsupported, gt_dir, ignored)
    masks: dict[Path, Path] = {}
    for defect_dir in scan.subdirs:
        if defect_dir.name == NORMAL_DEFECT_TYPE:
            logger.warning("ignored %s: normal test images have no masks", defect_dir)
            ignored.append(str(defect_dir))
            continue
        images = images_by_type.get(defect_dir.name, [])
        masks.update(match_masks(images, cat_dir / "test" / defect_dir.name, defect_dir, ignored))
    return masks


def _scan_labelled(test_dir: Path, ignored: list[str]) -> dict[str, list[Path]]:
    """Images of each ``<test_dir>/<good|defect>/`` folder, "good" first (files in natural order)."""
    images_by_type: dict[str, list[Path]] = {}
    for defect_dir in _test_dirs(test_dir, ignored):
        scan = scan_dir(defect_dir)
        note_ignored(scan.unsupported + scan.subdirs, defect_dir, ignored)
        images_by_type[defect_dir.name] = scan.images
    return images_by_type


def _labelled_samples(images_by_type: dict[str, list[Path]], masks: dict[Path, Path]) -> list[Sample]:
    samples: list[Sample] = []
    for defect_type, images in images_by_type.items():
        label = 0 if defect_type == NORMAL_DEFECT_TYPE else 1
        for image in images:
            mask = masks.get(image)
            samples.append(
                Sample(path=str(image), label=label, defect_type=defect_type, mask_path=None if mask is None else str(mask))
            )
    return samples


def _load_test(cat_dir: Path, ignored: list[str]) -> list[Sample]:
    test_dir = cat_dir / "test"
    if not test_dir.is_dir():
        raise DatasetError(f"missing test split: directory {test_dir} does not exist")
    images_by_type = _scan_labelled(test_dir, ignored)
    samples = _labelled_samples(images_by_type, _load_masks(cat_dir, images_by_type, ignored))
    if not samples:
        raise DatasetError(
            f"empty test split: no image files in {test_dir}/<good|defect>/ "
            f"(supported extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return samples


def load_labelled_dir(directory: str | os.PathLike, *, what: str = "labelled folder") -> list[Sample]:
    """Samples of a folder laid out like an MVTec ``test/`` split: ``good/`` holds normal images
    (label 0), every other sub-folder anomalous ones (label 1, defect type = the folder's name).

    Needs at least one normal and one anomalous image; DatasetError naming ``what`` otherwise.
    Masks are not read.
    """
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{what}: {path} is not a directory (expected {path}/good/ and {path}/<defect>/ sub-folders)")
    top = scan_dir(path)
    if top.images and not top.subdirs:
        hint = f"; did you mean its parent {path.parent}?" if path.name == NORMAL_DEFECT_TYPE else ""
        raise DatasetError(
            f"{what}: {path} holds {len(top.images)} image file(s) directly; a labelled folder keeps them in "
            f"{path}/{NORMAL_DEFECT_TYPE}/ (normal) and {path}/<defect>/ (anomalous) sub-folders{hint}"
        )
    samples = _labelled_samples(_scan_labelled(path.absolute(), []), {})
    n_normal = sum(1 for s in samples if s.label == 0)
    if n_normal == 0 or n_normal == len(samples):
        raise DatasetError(
            f"{what}: {path} has {n_normal} normal image(s) in good/ and {len(samples) - n_normal} anomalous image(s) "
            "in other sub-folders; at least one of each is needed"
        )
    return samples


def load_mvtec(root: str | os.PathLike, category: str | None = None) -> AnomalyDataset:
    """Load one category of an MVTec-AD-layout data set.

    ``category=None`` works when ``root`` is a category or holds exactly one category.
    An anomalous image without a mask gets ``mask_path=None``; a mask without its image, an
    unknown category, a missing or empty split raise :class:`DatasetError`.
    """
    root_path = _check_root(root)
    cat_dir = _resolve_category(root_path, category)
    ignored: list[str] = []
    train = _load_train(cat_dir, ignored)
    test = _load_test(cat_dir, ignored)
    ignored.sort(key=natural_key)
    return AnomalyDataset(
        name=DATASET_NAME, category=cat_dir.name, root=str(cat_dir), train=train, test=test, ignored=ignored
    )

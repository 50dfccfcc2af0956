"""Plain-folder loader: one folder of normal training images, optional test folders (stdlib only).

Anomalous test images get ``defect_type="anomalous"``; masks in ``mask_dir`` are matched to
them by stem (``<stem>_mask.<ext>`` or ``<stem>.<ext>``). Files are listed non-recursively
in natural order; hidden files are skipped silently, other unsupported entries are logged and
listed in ``AnomalyDataset.ignored``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyimgano_deploy.datasets._scan import match_masks, natural_key, note_ignored, scan_dir
from pyimgano_deploy.datasets.types import (
    IMAGE_EXTENSIONS,
    NORMAL_DEFECT_TYPE,
    AnomalyDataset,
    DatasetError,
    Sample,
)

ANOMALOUS_DEFECT_TYPE = "anomalous"


def _check_dir(path: str | os.PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{what} does not exist: {p}")
    if not p.is_dir():
        raise DatasetError(f"{what} is not a directory: {p}")
    return p.absolute()


def _images(directory: Path, split: str, ignored: list[str]) -> list[Path]:
    scan = scan_dir(directory)
    note_ignored(scan.unsupported + scan.subdirs, directory, ignored)
    if not scan.images:
        raise DatasetError(
            f"empty {split} split: no image files in {directory} (supported extensions: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return scan.images


def load_folder(
    train_dir: str | os.PathLike,
    *,
    test_normal_dir: str | os.PathLike | None = None,
    test_anomalous_dir: str | os.PathLike | None = None,
    mask_dir: str | os.PathLike | None = None,
    name: str = "folder",
) -> AnomalyDataset:
    """Build an :class:`AnomalyDataset` from plain folders.

    ``train_dir`` must hold at least one image. Each test folder that is given must hold at
    least one image; with no test folder the test split is empty. ``mask_dir`` needs
    ``test_anomalous_dir``. ``root`` is the common parent of the folders given; ``category``
    is ``name``.
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(f"name must be a non-empty str, got {name!r}")
    ignored: list[str] = []
    train_path = _check_dir(train_dir, "train_dir")
    dirs = [train_path]
    train = [Sample(path=str(p), label=0, defect_type=NORMAL_DEFECT_TYPE) for p in _images(train_path, "train", ignored)]

    test: list[Sample] = []
    if test_normal_dir is not None:
        normal_path = _check_dir(test_normal_dir, "test_normal_dir")
        dirs.append(normal_path)
        images = _images(normal_path, "test (normal)", ignored)
        test.extend(Sample(path=str(p), label=0, defect_type=NORMAL_DEFECT_TYPE) for p in images)

    if mask_dir is not None and test_anomalous_dir is None:
        raise DatasetError(f"mask_dir {mask_dir} was given without test_anomalous_dir: masks need their images")
    if test_anomalous_dir is not None:
        anomalous_path = _check_dir(test_anomalous_dir, "test_anomalous_dir")
        dirs.append(anomalous_path)
        images = _images(anomalous_path, "test (anomalous)", ignored)
        masks: dict[Path, Path] = {}
        if mask_dir is not None:
            mask_path = _check_dir(mask_dir, "mask_dir")
            dirs.append(mask_path)
            masks = match_masks(images, anomalous_path, mask_path, ignored)
        for p in images:
            mask = masks.get(p)
            test.append(
                Sample(
                    path=str(p),
                    label=1,
                    defect_type=ANOMALOUS_DEFECT_TYPE,
                    mask_path=None if mask is None else str(mask),
                )
            )

    ignored.sort(key=natural_key)
    root = os.path.commonpath([str(d) for d in dirs])
    return AnomalyDataset(name=name, category=name, root=root, train=train, test=test, ignored=ignored)

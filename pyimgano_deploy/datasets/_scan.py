"""Directory scanning and mask matching shared by the MVTec and folder loaders (stdlib only)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from pyimgano_deploy.datasets.types import IMAGE_EXTENSIONS, DatasetError

logger = logging.getLogger("pyimgano_deploy.datasets")

_DIGITS = re.compile(r"(\d+)")
MASK_SUFFIX = "_mask"


def natural_key(name: str) -> tuple:
    """Sort key: digit runs compare as numbers ("2.png" < "10.png"), ties broken by the name."""
    parts = _DIGITS.split(name)
    key = tuple((int(p), p) if i % 2 else p for i, p in enumerate(parts))
    return (key, name)


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class DirScan:
    """What one directory holds: images, unsupported files, and sub-directories (no hidden ones)."""

    images: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    subdirs: list[Path] = field(default_factory=list)


def scan_dir(directory: Path) -> DirScan:
    """List ``directory`` non-recursively, each list sorted with :func:`natural_key`."""
    scan = DirScan()
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        raise DatasetError(f"cannot list directory {directory}: {exc}") from exc
    for entry in entries:
        if is_hidden(entry):
            continue
        if entry.is_dir():
            scan.subdirs.append(entry)
        elif entry.is_file() and is_image_file(entry):
            scan.images.append(entry)
        else:
            scan.unsupported.append(entry)
    for items in (scan.images, scan.unsupported, scan.subdirs):
        items.sort(key=lambda p: natural_key(p.name))
    return scan


def note_ignored(paths: list[Path], where: Path, ignored: list[str]) -> None:
    """Record (and log once per directory) entries skipped because they are not supported images;
    links whose target is gone are logged as such, not as unsupported."""
    if not paths:
        return
    ignored.extend(str(p) for p in paths)
    dangling = [p for p in paths if p.is_symlink() and not p.exists()]
    other = [p for p in paths if p not in dangling]
    if dangling:
        logger.warning("ignored %d link%s in %s whose target does not exist: %s", len(dangling),
                       "" if len(dangling) == 1 else "s", where, _names(dangling))
    if other:
        logger.warning(
            "ignored %d unsupported entr%s in %s: %s (supported image extensions: %s)",
            len(other),
            "y" if len(other) == 1 else "ies",
            where,
            _names(other),
            ", ".join(IMAGE_EXTENSIONS),
        )


def _names(paths: list[Path]) -> str:
    return ", ".join(p.name for p in paths[:5]) + (", ..." if len(paths) > 5 else "")


def note_misplaced(images: list[Path], where: Path, expected: str, ignored: list[str]) -> None:
    """Record (and log once) image files skipped because they sit above the folders meant to hold them.

    ``expected`` names those folders, e.g. ``"good/ and <defect>/ sub-folders"``.
    """
    if not images:
        return
    ignored.extend(str(p) for p in images)
    logger.warning("ignored %d image file%s directly in %s: %s (images there belong in %s)", len(images),
                   "" if len(images) == 1 else "s", where, _names(images), expected)


def mask_target_stem(mask: Path, stems: set[str]) -> str:
    """The image stem a mask file refers to: ``<stem>_mask.<ext>`` first, then ``<stem>.<ext>``."""
    stem = mask.stem
    if stem.endswith(MASK_SUFFIX) and stem[: -len(MASK_SUFFIX)] in stems:
        return stem[: -len(MASK_SUFFIX)]
    return stem


def match_masks(images: list[Path], image_dir: Path, mask_dir: Path, ignored: list[str]) -> dict[Path, Path]:
    """Map each image to its mask in ``mask_dir`` (masks named ``<stem>_mask.*`` or ``<stem>.*``).

    Raises DatasetError for a mask whose image does not exist, for an ambiguous stem (two images
    with the same stem) and for two masks of the same image.
    """
    by_stem: dict[str, list[Path]] = {}
    for image in images:
        by_stem.setdefault(image.stem, []).append(image)
    scan = scan_dir(mask_dir)
    note_ignored(scan.unsupported + scan.subdirs, mask_dir, ignored)
    result: dict[Path, Path] = {}
    for mask in scan.images:
        target = mask_target_stem(mask, set(by_stem))
        candidates = by_stem.get(target)
        if not candidates:
            expected = image_dir / target
            raise DatasetError(
                f"mask {mask} has no matching image: expected {expected}.<ext> "
                f"(ext one of {', '.join(IMAGE_EXTENSIONS)}); masks must be named <stem>{MASK_SUFFIX}.png or <stem>.png"
            )
        if len(candidates) > 1:
            raise DatasetError(
                f"mask {mask} is ambiguous: several images share the stem {target!r}: "
                + ", ".join(str(c) for c in candidates)
            )
        image = candidates[0]
        if image in result:
            raise DatasetError(f"image {image} has two masks: {result[image]} and {mask}")
        result[image] = mask
    return result

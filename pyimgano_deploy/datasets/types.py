"""Data-set records shared by the loaders (stdlib only).

A data set is a list of file references, never pixels: loaders only look at the file tree,
images are read later by ``pyimgano_deploy.inputs``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

# Same values as ``pyimgano_deploy.inputs.reader.IMAGE_EXTENSIONS`` (kept here so that the
# data-set loaders stay independent of the reader module). Matching is case-insensitive.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

NORMAL_DEFECT_TYPE = "good"


class DatasetError(ValueError):
    """A data set on disk does not have the expected layout; the message names the path."""


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    ``label`` is 0 for normal and 1 for anomalous; ``defect_type`` is ``"good"`` exactly when
    ``label`` is 0; ``mask_path`` (a binary ground-truth mask) is only allowed for anomalous
    samples and may be ``None`` when the data set has no mask for that image.
    """

    path: str
    label: int
    defect_type: str
    mask_path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"Sample.path must be a non-empty str, got {self.path!r}")
        if isinstance(self.label, bool) or self.label not in (0, 1):
            raise ValueError(f"Sample.label must be 0 (normal) or 1 (anomalous), got {self.label!r} for {self.path}")
        if not isinstance(self.defect_type, str) or not self.defect_type:
            raise ValueError(f"Sample.defect_type must be a non-empty str, got {self.defect_type!r} for {self.path}")
        if self.label == 0 and self.defect_type != NORMAL_DEFECT_TYPE:
            raise ValueError(
                f"Sample.defect_type must be {NORMAL_DEFECT_TYPE!r} when label is 0, got {self.defect_type!r} for {self.path}"
            )
        if self.label == 1 and self.defect_type == NORMAL_DEFECT_TYPE:
            raise ValueError(f"Sample.defect_type {NORMAL_DEFECT_TYPE!r} needs label 0, got label 1 for {self.path}")
        if self.mask_path is not None:
            if not isinstance(self.mask_path, str) or not self.mask_path:
                raise ValueError(f"Sample.mask_path must be a non-empty str or None, got {self.mask_path!r}")
            if self.label == 0:
                raise ValueError(f"Sample.mask_path is only allowed for anomalous samples (label 1): {self.path}")

    @property
    def is_anomalous(self) -> bool:
        return self.label == 1

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "label": self.label, "defect_type": self.defect_type, "mask_path": self.mask_path}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Sample":
        missing = [k for k in ("path", "label", "defect_type") if k not in data]
        if missing:
            raise ValueError(f"sample record is missing {missing}; got keys {sorted(data)}")
        label = data["label"]
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError(f"sample key 'label' must be the int 0 or 1, got {label!r}")
        return cls(
            path=data["path"],
            label=label,
            defect_type=data["defect_type"],
            mask_path=data.get("mask_path"),
        )


def _split_summary(samples: list[Sample]) -> dict[str, Any]:
    by_type = Counter(s.defect_type for s in samples)
    return {
        "n_images": len(samples),
        "n_normal": sum(1 for s in samples if s.label == 0),
        "n_anomalous": sum(1 for s in samples if s.label == 1),
        "n_masks": sum(1 for s in samples if s.mask_path is not None),
        "by_defect_type": {k: by_type[k] for k in sorted(by_type)},
    }


@dataclass
class AnomalyDataset:
    """A train split (normal images only) and a test split (normal and anomalous).

    ``root`` is the directory the files live in (for MVTec: the category directory).
    ``ignored`` lists files that were skipped because their type is not supported
    (hidden files are skipped silently and are not listed).
    """

    name: str
    category: str
    root: str
    train: list[Sample]
    test: list[Sample]
    ignored: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("name", "category", "root"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"AnomalyDataset.{key} must be a non-empty str, got {value!r}")
        for split in ("train", "test"):
            for s in getattr(self, split):
                if not isinstance(s, Sample):
                    raise ValueError(f"AnomalyDataset.{split} must hold Sample objects, got {type(s).__name__}")
        bad = [s.path for s in self.train if s.label != 0]
        if bad:
            raise ValueError(f"AnomalyDataset.train must hold normal images only (label 0); anomalous: {bad[:3]}")

    @property
    def defect_types(self) -> list[str]:
        """Sorted anomalous defect types present in the test split."""
        return sorted({s.defect_type for s in self.test if s.label == 1})

    @property
    def test_normal(self) -> list[Sample]:
        return [s for s in self.test if s.label == 0]

    @property
    def test_anomalous(self) -> list[Sample]:
        return [s for s in self.test if s.label == 1]

    def summary(self) -> dict[str, Any]:
        """Counts per split and per defect type (JSON-ready)."""
        return {
            "name": self.name,
            "category": self.category,
            "root": self.root,
            "train": _split_summary(self.train),
            "test": _split_summary(self.test),
            "n_ignored": len(self.ignored),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "root": self.root,
            "train": [s.to_dict() for s in self.train],
            "test": [s.to_dict() for s in self.test],
            "ignored": list(self.ignored),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AnomalyDataset":
        missing = [k for k in ("name", "category", "root", "train", "test") if k not in data]
        if missing:
            raise ValueError(f"data-set record is missing {missing}; got keys {sorted(data)}")
        for key in ("train", "test"):
            if not isinstance(data[key], list):
                raise ValueError(f"data-set key {key!r} must be a list of samples, got {type(data[key]).__name__}")
        return cls(
            name=data["name"],
            category=data["category"],
            root=data["root"],
            train=[Sample.from_dict(d) for d in data["train"]],
            test=[Sample.from_dict(d) for d in data["test"]],
            ignored=[str(p) for p in data.get("ignored", [])],
        )

"""The one host-side preprocessing step: resize (+ optional centre crop, + optional contrast
equalisation, :mod:`.contrast`) -> uint8 NHWC RGB.

Used by training, eager inference and the runtime alike (ARCHITECTURE.md §3). Everything
after this (cast, scale, mean/std, layout) happens inside the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pyimgano_deploy.checks import is_int, unknown_keys
from pyimgano_deploy.inputs.contrast import CONTRASTS, equalize_contrast

__all__ = ["INTERPOLATIONS", "Preprocess"]

INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos4": cv2.INTER_LANCZOS4,
}

_KEYS = ("size", "interpolation", "center_crop", "contrast")


def _as_hw(value: object, key: str) -> tuple[int, int]:
    """Validate a ``(H, W)`` pair of positive ints; the message names ``key``."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2
    if ok:
        ok = all(is_int(v) and int(v) > 0 for v in value)
    if not ok:
        raise ValueError(f"preprocess '{key}' must be a pair of positive integers [H, W]; got {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``size`` ``(H, W)`` with a named OpenCV interpolation, then optionally crop
    the centre ``center_crop`` ``(H, W)``, then apply ``contrast`` (:data:`~.contrast.CONTRASTS`).

    The input must be a canonical image: ``(H, W, 3)`` uint8 RGB. When it already has
    ``size``, no resize is done (bit-exact identity). For the crop, the top-left corner is
    ``((H - h) // 2, (W - w) // 2)``.
    """

    size: tuple[int, int]
    interpolation: str = "linear"
    center_crop: tuple[int, int] | None = None
    contrast: str = "none"

    def __post_init__(self) -> None:
        size = _as_hw(self.size, "size")
        if not isinstance(self.contrast, str) or self.contrast not in CONTRASTS:
            raise ValueError(f"preprocess 'contrast' must be one of {list(CONTRASTS)}; got {self.contrast!r}")
        object.__setattr__(self, "size", size)
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"preprocess 'interpolation' must be one of {sorted(INTERPOLATIONS)}; got {self.interpolation!r}"
            )
        if self.center_crop is not None:
            crop = _as_hw(self.center_crop, "center_crop")
            if crop[0] > size[0] or crop[1] > size[1]:
                raise ValueError(
                    f"preprocess 'center_crop' {list(crop)} must not be larger than 'size' {list(size)}"
                )
            object.__setattr__(self, "center_crop", crop)

    @property
    def output_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images this step produces."""
        return self.center_crop if self.center_crop is not None else self.size

    def crop_box(self) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the centre crop inside the resized image (the
        whole resized image without a crop): the one place this arithmetic lives."""
        height, width = self.size
        if self.center_crop is None:
            return 0, 0, height, width
        ch, cw = self.center_crop
        return (height - ch) // 2, (width - cw) // 2, ch, cw

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Canonical ``(H, W, 3)`` uint8 image -> new C-contiguous ``(h, w, 3)`` uint8 image."""
        if not isinstance(image, np.ndarray):
            raise ValueError(f"Preprocess expects a (H, W, 3) uint8 numpy array; got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.size == 0:
            raise ValueError(
                "Preprocess expects a canonical non-empty (H, W, 3) uint8 RGB image; "
                f"got shape={tuple(image.shape)}, dtype={image.dtype}"
            )
        height, width = self.size
        if image.shape[:2] != (height, width):
            src = np.ascontiguousarray(image)
            resized = cv2.resize(src, (width, height), interpolation=INTERPOLATIONS[self.interpolation])
        else:
            resized = image
        if self.center_crop is not None:
            top, left, ch, cw = self.crop_box()
            resized = resized[top : top + ch, left : left + cw]
        if self.contrast != "none":
            return equalize_contrast(resized, self.contrast)  # a new C-contiguous array
        out = np.empty(resized.shape, dtype=np.uint8)
        out[...] = resized
        return out

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Preprocess each image and stack them: ``(N, h, w, 3)`` uint8 (N may be 0).

        A failing image raises ``ValueError`` naming its index.
        """
        h, w = self.output_size
        out = np.empty((len(images), h, w, 3), dtype=np.uint8)
        for i, image in enumerate(images):
            try:
                out[i] = self(image)
            except ValueError as exc:
                raise ValueError(f"images[{i}]: {exc}") from exc
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"size": [H, W], "interpolation": str, "center_crop": [h, w] | None}``,
        plus ``"contrast"`` when it is not "none" (so bundles without it read as before, and a
        reader that does not know the key refuses the bundle instead of skipping the step)."""
        out: dict[str, Any] = {
            "size": list(self.size),
            "interpolation": self.interpolation,
            "center_crop": list(self.center_crop) if self.center_crop is not None else None,
        }
        if self.contrast != "none":
            out["contrast"] = self.contrast
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        """Inverse of :meth:`to_dict`; ``size`` is required, unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise ValueError(f"preprocess must be a mapping with keys {list(_KEYS)}; got {type(data).__name__}")
        unknown = unknown_keys(data, _KEYS)
        if unknown:
            raise ValueError(f"preprocess has unknown key(s) {unknown}; allowed keys: {list(_KEYS)}")
        if "size" not in data:
            raise ValueError("preprocess is missing required key 'size' ([H, W])")
        return cls(
            size=_as_hw(data["size"], "size"),
            interpolation=data.get("interpolation", "linear"),
            center_crop=data.get("center_crop"),
            contrast=data.get("contrast", "none"),
        )

"""Host-side contrast equalisation: the last part of the one preprocessing step.

``clahe`` equalises the lightness of each model input with OpenCV's contrast-limited adaptive
histogram equalisation (CLAHE): the image goes to CIE L*a*b*, its L channel is equalised in
:data:`CLAHE_TILE_GRID` tiles with clip limit :data:`CLAHE_CLIP_LIMIT`, and it comes back to RGB.
Local contrast then no longer depends on how a part was lit: a shadowed end and a bright end
of the same part reach the backbone alike. It runs on the host, in
:class:`~pyimgano_deploy.inputs.preprocess.Preprocess`, so fitting, eager scoring and the
runtime apply the same code; the bundle's ``input.preprocess.contrast`` says it is on.
"""

from __future__ import annotations

import cv2
import numpy as np

#: host-side contrast steps; "none" leaves the resized image as it is
CONTRASTS = ("none", "clahe")
#: CLAHE's clip limit (OpenCV's histogram clip, relative to a uniform histogram) and tile grid
#: (columns, rows): the values of the contract, the same for every bundle
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILE_GRID = (8, 8)


def equalize_contrast(image: np.ndarray, contrast: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB → the same shape and dtype, with ``contrast`` applied (a new array
    for "clahe", ``image`` itself for "none")."""
    if contrast == "none":
        return image
    if contrast != "clahe":
        raise ValueError(f"contrast must be one of {list(CONTRASTS)}; got {contrast!r}")
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
    # A CLAHE object per call: OpenCV's are stateful, and preprocessing runs in worker threads.
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILE_GRID)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


__all__ = ["CLAHE_CLIP_LIMIT", "CLAHE_TILE_GRID", "CONTRASTS", "equalize_contrast"]

"""Input-size policies: choose a detector's ``image_size`` from the training images, and record how.

``model.kwargs.image_size`` may be ``"keep_aspect"`` or ``"keep_aspect:S"``: the short side is
``S`` px (224 by default) and the long side follows the median aspect ratio of the fit images,
rounded to a multiple of 32 px (the backbones' largest stride), so a 1130 × 460 part is scored
at 224 × 544 instead of being squashed to 224 × 224. The resolved size is what the detector,
its bundle and the runtime use; the run's report records the policy and what it measured.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

KEEP_ASPECT = "keep_aspect"
DEFAULT_SHORT_SIDE = 224
STRIDE = 32
SAMPLE = 32  # images read to measure the aspect ratio
#: fit images whose aspect ratios differ by more than this factor get a warning: one input size
#: stretches the others (a 5 % spread is rounding of crops; 20 % visibly distorts a part)
ASPECT_SPREAD_WARN = 1.2


def is_size_policy(value: Any) -> bool:
    return isinstance(value, str) and (value == KEEP_ASPECT or value.startswith(KEEP_ASPECT + ":"))


def short_side(policy: str) -> int:
    """The short side of a ``keep_aspect[:S]`` policy; ``ValueError`` naming the expected form."""
    _, _, text = policy.partition(":")
    if not text:
        return DEFAULT_SHORT_SIDE
    if not text.isdigit() or int(text) < STRIDE or int(text) % STRIDE:
        raise ValueError(f"image_size {policy!r}: expected 'keep_aspect' or 'keep_aspect:S' with S a multiple of {STRIDE} px, >= {STRIDE}")
    return int(text)


def resolve_image_size(policy: str, images: Sequence[str], *, u16_max: int | None = None) -> tuple[tuple[int, int], dict[str, Any]]:
    """``(height, width)`` for ``policy`` from up to 32 evenly spaced ``images`` (paths; ``u16_max``
    for 16-bit files), and the record."""
    from pyimgano_deploy.inputs import read_image

    if not images:
        raise ValueError(f"image_size {policy!r}: there are no fit images to measure the aspect ratio on")
    side = short_side(policy)
    picks = [images[i] for i in np.linspace(0, len(images) - 1, min(SAMPLE, len(images))).round().astype(int)]
    shapes = [read_image(p, u16_max=u16_max).shape[:2] for p in picks]
    aspects = [w / h for h, w in shapes]  # width / height
    aspect = float(np.median(aspects))
    long_side = max(STRIDE, int(round(side * max(aspect, 1 / aspect) / STRIDE)) * STRIDE)
    size = (side, long_side) if aspect >= 1 else (long_side, side)
    record = {"policy": policy, "short_side": side, "median_aspect_w_over_h": round(aspect, 4), "n_images_measured": len(picks),
              "aspect_range_w_over_h": [round(min(aspects), 4), round(max(aspects), 4)], "image_size": list(size)}
    return size, record


def aspect_spread_warning(record: dict[str, Any]) -> str | None:
    """What to tell the user when the measured fit images disagree on their aspect ratio (None: they agree)."""
    lo, hi = record["aspect_range_w_over_h"]
    if hi / lo <= ASPECT_SPREAD_WARN:
        return None
    h, w = record["image_size"]
    return (f"the fit images' aspect ratios (width / height) range from {lo:g} to {hi:g}: every image is resized to "
            f"{h} × {w}, so those far from the median {record['median_aspect_w_over_h']:g} are stretched. If the set mixes "
            "views or orientations, train one run per view, or give model.kwargs.image_size explicitly")

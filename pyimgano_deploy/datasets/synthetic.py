"""Deterministic synthetic industrial-surface data set in MVTec layout (numpy + cv2).

Normal images are a woven, brushed-metal texture with speckle; each image gets its own small
variation of brightness, tint, weave phase and brush streaks, so normal images differ but
look alike. Anomalous test images carry one clearly visible defect each, the kinds cycled in
``DEFECT_KINDS`` order: a bright scratch, a strongly coloured stain, a patch whose texture is
missing (flattened to one duller or shinier colour), a dark hole. Every defect has an exact
0/255 mask: the defect is drawn on exactly the mask's pixels, nothing outside it is touched.

Each image is drawn from its own random stream seeded by ``(seed, split, index)``, so an
image does not depend on how many others were asked for, and PNG files are byte-identical
for the same seed (same numpy / OpenCV versions).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pyimgano_deploy.datasets.types import NORMAL_DEFECT_TYPE, DatasetError

DEFECT_KINDS: tuple[str, ...] = ("scratch", "stain", "missing_texture", "hole")
SPLITS: dict[str, int] = {"train": 0, "test_good": 1, "test_defect": 2}
README_MARKER = "pyimgano-deploy synthetic industrial surface data set"
MIN_SIZE = 32
MAX_SIZE = 4096

# Strong stain colours (RGB): rust, ink blue, oil green, purple.
_STAIN_COLOURS = np.array([[185, 75, 20], [25, 60, 190], [40, 150, 45], [140, 40, 160]], dtype=np.float32)


@dataclass(frozen=True)
class SyntheticImage:
    """One generated image (RGB uint8 HxWx3), the defect-free surface under it and its mask."""

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray | None  # uint8 HxW in {0, 255}; None for normal images
    defect_type: str


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index]))


def render_surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """A normal textured surface, RGB uint8 ``[size, size, 3]``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / 16.0
    phase = rng.uniform(0.0, 2.0 * np.pi, 2).astype(np.float32)
    freq = np.float32(2.0 * np.pi / period)
    weave = np.sin(freq * xx + phase[0]) * np.sin(freq * yy + phase[1])
    noise = rng.standard_normal((size, size)).astype(np.float32)
    k = 2 * (size // 8) + 1
    streak = cv2.blur(noise, (k, 1), borderType=cv2.BORDER_REFLECT)  # brushed along x
    streak = streak / np.float32(streak.std() + 1e-6)
    speckle = rng.standard_normal((size, size)).astype(np.float32)
    brightness = np.float32(138.0 + rng.uniform(-8.0, 8.0))
    lum = brightness + 16.0 * weave + 7.0 * streak + 3.5 * speckle
    tint = np.array([0.95, 1.0, 1.06], dtype=np.float32) * (1.0 + rng.uniform(-0.015, 0.015, 3)).astype(np.float32)
    return np.clip(np.rint(lum[..., None] * tint), 0, 255).astype(np.uint8)


def _centre(rng: np.random.Generator, size: int, margin: float) -> np.ndarray:
    margin = min(margin, size / 2.0 - 1.0)
    return rng.uniform(margin, size - margin, 2)


def _scratch(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> None:
    size = img.shape[0]
    thickness = max(2, int(round(size / 48)))
    length = rng.uniform(0.35, 0.6) * size
    angle = rng.uniform(0.0, np.pi)
    bend = rng.uniform(-0.06, 0.06) * size
    c = _centre(rng, size, length / 2 + abs(bend) + thickness + 2)
    d = np.array([np.cos(angle), np.sin(angle)])
    n = np.array([-d[1], d[0]])
    pts = np.stack([c - d * length / 2, c + n * bend, c + d * length / 2])
    cv2.polylines(mask, [np.rint(pts).astype(np.int32)], False, 255, thickness, lineType=cv2.LINE_8)
    m = mask > 0
    value = np.float32(rng.uniform(235.0, 250.0))
    img[m] = 0.15 * img[m] + 0.85 * value


def _stain(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> None:
    size = img.shape[0]
    c = _centre(rng, size, 0.25 * size)
    for _ in range(3):
        centre = np.rint(c + rng.uniform(-0.06, 0.06, 2) * size).astype(int)
        axes = np.rint(rng.uniform(0.06, 0.11, 2) * size).astype(int)
        angle = float(rng.uniform(0.0, 180.0))
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), angle, 0, 360, 255, -1)
    m = mask > 0
    colour = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
    img[m] = 0.2 * img[m] + 0.8 * colour


def _missing_texture(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> None:
    size = img.shape[0]
    w, h = rng.uniform(0.18, 0.3, 2) * size
    angle = float(rng.uniform(0.0, 90.0))
    c = _centre(rng, size, 0.3 * size)
    box = cv2.boxPoints(((float(c[0]), float(c[1])), (float(w), float(h)), angle))
    cv2.fillPoly(mask, [np.rint(box).astype(np.int32)], 255)
    m = mask > 0
    flat = img.reshape(-1, 3).mean(axis=0) * np.float32(rng.choice([0.72, 1.3]) * rng.uniform(0.95, 1.05))
    img[m] = flat


def _hole(img: np.ndarray, rng: np.random.Generator, mask: np.ndarray) -> None:
    size = img.shape[0]
    radius = rng.uniform(0.06, 0.1) * size
    c = _centre(rng, size, radius + 2)
    ci = np.rint(c).astype(int)
    cv2.circle(mask, (int(ci[0]), int(ci[1])), int(round(radius)), 255, -1, lineType=cv2.LINE_8)
    m = mask > 0
    yy, xx = np.nonzero(m)
    dist = np.clip(np.hypot(xx - ci[0], yy - ci[1]) / radius, 0.0, 1.0)
    img[m] = (14.0 + 30.0 * dist**2)[:, None]


_DRAW = {"scratch": _scratch, "stain": _stain, "missing_texture": _missing_texture, "hole": _hole}


def draw_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of ``kind`` on a copy of ``image`` (RGB uint8 square).

    Returns ``(defective_image, mask)`` with mask uint8 HxW in {0, 255}; pixels outside the
    mask are left unchanged, and the defect never touches the image border.
    """
    if kind not in _DRAW:
        raise ValueError(f"kind must be one of {', '.join(DEFECT_KINDS)}, got {kind!r}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be a square RGB uint8 HxWx3 array, got shape {image.shape} dtype {image.dtype}")
    work = image.astype(np.float32)
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    _DRAW[kind](work, rng, mask)
    return np.clip(np.rint(work), 0, 255).astype(np.uint8), mask


def render_sample(seed: int, split: str, index: int, size: int = 128) -> SyntheticImage:
    """The ``index``-th image of ``split`` ("train", "test_good" or "test_defect").

    ``test_defect`` image ``index`` has defect kind ``DEFECT_KINDS[index % len(DEFECT_KINDS)]``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = _rng(seed, split, index)
    clean = render_surface(rng, size)
    if split != "test_defect":
        return SyntheticImage(image=clean, clean=clean, mask=None, defect_type=NORMAL_DEFECT_TYPE)
    kind = DEFECT_KINDS[index % len(DEFECT_KINDS)]
    image, mask = draw_defect(clean, kind, rng)
    return SyntheticImage(image=image, clean=clean, mask=mask, defect_type=kind)


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise DatasetError(f"cannot encode PNG for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def _validate(seed: int, n_train: int, n_test: int, size: int, category: str) -> None:
    for key, value, low in (("seed", seed, 0), ("n_train", n_train, 1), ("n_test", n_test, 2), ("size", size, MIN_SIZE)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DatasetError(f"{key} must be an int >= {low}, got {value!r}")
    if size > MAX_SIZE:
        raise DatasetError(f"size must be <= {MAX_SIZE}, got {size}")
    if (
        not isinstance(category, str)
        or not category
        or category.startswith(".")
        or Path(category).name != category
        or "\\" in category
    ):
        raise DatasetError(f"category must be a plain, non-hidden folder name, got {category!r}")


def _prepare(cat_dir: Path, overwrite: bool) -> None:
    if cat_dir.exists() and not cat_dir.is_dir():
        raise DatasetError(f"cannot write the synthetic data set: {cat_dir} exists and is not a directory")
    if not cat_dir.is_dir() or not any(p for p in cat_dir.iterdir() if not p.name.startswith(".")):
        cat_dir.mkdir(parents=True, exist_ok=True)
        return
    readme = cat_dir / "README.txt"
    ours = readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(README_MARKER)
    if not (ours or overwrite):
        raise DatasetError(
            f"{cat_dir} is not empty and was not written by generate_synthetic_dataset; "
            "choose an empty directory or pass overwrite=True"
        )
    for name in ("train", "test", "ground_truth"):
        if (cat_dir / name).is_dir():
            shutil.rmtree(cat_dir / name)
    readme.unlink(missing_ok=True)


def _readme(category: str, seed: int, size: int, n_train: int, n_good: int, kind_counts: dict[str, int]) -> str:
    kinds = "\n".join(f"  test/{k}/  ground_truth/{k}/  {n} image(s)" for k, n in kind_counts.items())
    return (
        f"{README_MARKER}\n\n"
        f"category: {category}    seed: {seed}    image size: {size}x{size} RGB PNG\n\n"
        "Normal images: a woven, brushed-metal texture with speckle; brightness, tint, weave phase\n"
        "and brush streaks vary a little per image. Defects (one per anomalous test image, kinds cycled):\n"
        "  scratch          bright curved line, >= 2 px wide\n"
        "  stain            strongly coloured blob (rust, blue, green or purple)\n"
        "  missing_texture  flattened patch (no texture, duller or shinier), sides >= 18% of the image\n"
        "  hole             dark round spot\n\n"
        "Layout (MVTec AD):\n"
        f"  train/good/  {n_train} image(s)\n"
        f"  test/good/   {n_good} image(s), no masks\n"
        f"{kinds}\n"
        "Masks are <stem>_mask.png, 0/255: every pixel the defect was drawn on; nothing outside is changed.\n"
        "Written by pyimgano_deploy.datasets.generate_synthetic_dataset; byte-identical for the same\n"
        "seed and the same numpy / OpenCV versions.\n"
    )


def generate_synthetic_dataset(
    root: str | os.PathLike,
    seed: int = 0,
    n_train: int = 40,
    n_test: int = 20,
    size: int = 128,
    category: str = "surface",
    *,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic data set to ``root/category`` in MVTec layout and return that folder.

    ``n_test // 2`` normal test images and ``n_test - n_test // 2`` defective ones. A folder
    written earlier by this function is regenerated in place; any other non-empty folder is
    refused unless ``overwrite=True`` (which removes its train/, test/, ground_truth/).
    """
    _validate(seed, n_train, n_test, size, category)
    seed, n_train, n_test, size = int(seed), int(n_train), int(n_test), int(size)
    cat_dir = Path(root).expanduser().absolute() / category
    _prepare(cat_dir, overwrite)
    n_good = n_test // 2
    n_bad = n_test - n_good
    width = max(3, len(str(max(n_train, n_test))))

    for split, count, folder in (("train", n_train, "train/good"), ("test_good", n_good, "test/good")):
        for i in range(count):
            sample = render_sample(seed, split, i, size)
            _write_png(cat_dir / folder / f"{i:0{width}d}.png", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))

    kind_counts = {k: 0 for k in DEFECT_KINDS[: min(n_bad, len(DEFECT_KINDS))]}
    for i in range(n_bad):
        sample = render_sample(seed, "test_defect", i, size)
        stem = f"{kind_counts[sample.defect_type]:0{width}d}"
        kind_counts[sample.defect_type] += 1
        _write_png(cat_dir / "test" / sample.defect_type / f"{stem}.png", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        _write_png(cat_dir / "ground_truth" / sample.defect_type / f"{stem}_mask.png", sample.mask)

    readme = _readme(category, seed, size, n_train, n_good, kind_counts)
    (cat_dir / "README.txt").write_text(readme, encoding="utf-8")
    return cat_dir

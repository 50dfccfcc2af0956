"""golden.npz: a few preprocessed inputs and the eager outputs for them.

Keys: ``images`` uint8 [N, H, W, 3], ``score`` float32 [N], ``anomaly_map`` float32 [N, h, w].
Written as an uncompressed-metadata zip with fixed timestamps, so the same arrays always give
the same bytes (and the same sha256 in the manifest). Loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from pyimgano_deploy.bundles.errors import InvalidBundleError, format_problems

GOLDEN_KEYS = ("images", "score", "anomaly_map")
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def golden_problems(images: object, scores: object, maps: object) -> list[str]:
    """Everything wrong with the three golden arrays (empty list when they are valid)."""
    problems: list[str] = []
    arrays = {"images": images, "score": scores, "anomaly_map": maps}
    expected = {
        "images": (np.uint8, 4, "uint8 [N, H, W, 3]"),
        "score": (np.float32, 1, "float32 [N]"),
        "anomaly_map": (np.float32, 3, "float32 [N, H, W]"),
    }
    for key, value in arrays.items():
        dtype, ndim, text = expected[key]
        if not isinstance(value, np.ndarray):
            problems.append(f"'{key}': expected a numpy array {text}, got {type(value).__name__}")
            continue
        if value.dtype != dtype or value.ndim != ndim:
            problems.append(f"'{key}': expected {text}, got {value.dtype} with shape {list(value.shape)}")
            continue
        if key == "images" and value.shape[-1] != 3:
            problems.append(f"'images': expected 3 channels (RGB) in the last axis, got shape {list(value.shape)}")
        if key != "images" and not np.all(np.isfinite(value)):
            problems.append(f"'{key}': contains NaN or inf")
    if problems:
        return problems
    n = {k: v.shape[0] for k, v in arrays.items()}  # type: ignore[union-attr]
    if n["images"] == 0:
        problems.append("'images': expected at least one image, got N=0")
    if len(set(n.values())) != 1:
        problems.append(f"batch sizes differ: images N={n['images']}, score N={n['score']}, anomaly_map N={n['anomaly_map']}")
    return problems


def save_golden(
    path: str | os.PathLike[str],
    images_u8: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray,
) -> Path:
    """Write ``golden.npz`` at exactly ``path`` (no suffix added); returns the path.

    ``scores`` and ``maps`` of another floating dtype are cast to float32; ``images_u8`` must
    already be uint8 [N, H, W, 3]. Raises ``ValueError`` naming the array and what was expected.
    """
    scores = np.asarray(scores)
    maps = np.asarray(maps)
    if np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float32, copy=False)
    if np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float32, copy=False)
    problems = golden_problems(images_u8, scores, maps)
    if problems:
        raise ValueError(format_problems("cannot save golden outputs", problems))
    out = Path(path)
    arrays = {"images": images_u8, "score": scores, "anomaly_map": maps}
    tmp = out.with_name(out.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key in GOLDEN_KEYS:
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.ascontiguousarray(arrays[key]), allow_pickle=False)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def load_golden(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load and validate ``golden.npz`` (``allow_pickle=False``).

    Raises ``InvalidBundleError`` naming the file and the key at fault.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidBundleError(f"golden file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as npz:
            missing = [k for k in GOLDEN_KEYS if k not in npz.files]
            if missing:
                raise InvalidBundleError(
                    f"{p}: golden file is missing key(s) {missing}; expected {list(GOLDEN_KEYS)}, got {sorted(npz.files)}"
                )
            data = {k: npz[k] for k in GOLDEN_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidBundleError(f"{p}: cannot read golden file ({type(exc).__name__}: {exc})") from exc
    problems = golden_problems(data["images"], data["score"], data["anomaly_map"])
    if problems:
        raise InvalidBundleError(format_problems(f"{p}: invalid golden file", problems), problems=problems)
    return data

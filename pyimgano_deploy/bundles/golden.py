"""golden.npz: a few preprocessed inputs and the eager outputs for them.

Keys: ``images`` uint8 [N, H, W, 3], ``score`` float32 [N], ``anomaly_map`` float32 [N, h, w].

Optional *source* keys (schema 1.1) hold a few original image files, byte for byte, and the
eager score of each through the whole pipeline (decode, preprocessing, tiling, reduction):
``source_bytes`` uint8 [total], ``source_offsets`` int64 [S + 1], ``source_score`` float32 [S].
``validate`` scores them with the runtime as a user's file would be scored, so a manifest whose
preprocessing or tiling was changed after export fails the golden check.
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
#: ``source_split`` of a threshold calibrated on the golden maps (held-out calibration images)
GOLDEN_SPLIT = "golden"
SOURCE_KEYS = ("source_bytes", "source_offsets", "source_score")
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


def pack_sources(files: list[bytes], scores: np.ndarray) -> dict[str, np.ndarray]:
    """The source keys for the encoded image ``files`` and their eager ``scores``."""
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(f) for f in files])
    data = np.frombuffer(b"".join(files), dtype=np.uint8).copy()
    return {"source_bytes": data, "source_offsets": offsets, "source_score": np.asarray(scores, dtype=np.float32)}


def unpack_sources(golden: dict[str, np.ndarray]) -> list[bytes]:
    """The encoded source files of a loaded golden set ([] when it has none)."""
    if "source_bytes" not in golden:
        return []
    data, offsets = golden["source_bytes"], golden["source_offsets"]
    return [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]


def _source_problems(arrays: dict[str, object]) -> list[str]:
    present = [k for k in SOURCE_KEYS if k in arrays]
    if not present:
        return []
    if len(present) != len(SOURCE_KEYS):
        return [f"source keys must come together: expected {list(SOURCE_KEYS)}, got {present}"]
    data, offsets, score = (arrays[k] for k in SOURCE_KEYS)
    ok = (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1
          and isinstance(offsets, np.ndarray) and offsets.dtype == np.int64 and offsets.ndim == 1
          and isinstance(score, np.ndarray) and score.dtype == np.float32 and score.ndim == 1)
    if not ok:
        return ["'source_*': expected source_bytes uint8 [T], source_offsets int64 [S+1], source_score float32 [S]"]
    if len(offsets) != len(score) + 1 or offsets[0] != 0 or offsets[-1] != len(data) or np.any(np.diff(offsets) <= 0):
        return [f"'source_offsets' {offsets.tolist()[:8]} do not cut source_bytes ({len(data)} bytes) into {len(score)} files"]
    if not np.all(np.isfinite(score)):
        return ["'source_score': contains NaN or inf"]
    return []


def save_golden(
    path: str | os.PathLike[str],
    images_u8: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray,
    sources: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write ``golden.npz`` at exactly ``path`` (no suffix added); returns the path.

    ``sources`` are the optional source keys (see :func:`pack_sources`).

    ``scores`` and ``maps`` of another floating dtype are cast to float32; ``images_u8`` must
    already be uint8 [N, H, W, 3]. Raises ``ValueError`` naming the array and what was expected.
    """
    scores = np.asarray(scores)
    maps = np.asarray(maps)
    if np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float32, copy=False)
    if np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float32, copy=False)
    arrays = {"images": images_u8, "score": scores, "anomaly_map": maps, **(sources or {})}
    problems = golden_problems(images_u8, scores, maps) + _source_problems(arrays)
    if problems:
        raise ValueError(format_problems("cannot save golden outputs", problems))
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key in arrays:
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
            data = {k: npz[k] for k in (*GOLDEN_KEYS, *SOURCE_KEYS) if k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidBundleError(f"{p}: cannot read golden file ({type(exc).__name__}: {exc})") from exc
    problems = golden_problems(data["images"], data["score"], data["anomaly_map"]) + _source_problems(data)
    if problems:
        raise InvalidBundleError(format_problems(f"{p}: invalid golden file", problems), problems=problems)
    return data

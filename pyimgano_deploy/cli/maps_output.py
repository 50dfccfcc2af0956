"""Where and how ``infer --save-maps`` writes anomaly maps: one ``.npy`` per scored input."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyimgano_deploy.runtimes.jsonl import text_and_raw
from pyimgano_deploy.runtimes.results import MAP_RESOLUTIONS

#: dtypes a saved map may have: float32 is the engine's own; float16 halves the bytes (about
#: three significant digits, and values up to 65504)
MAP_DTYPES = ("float32", "float16")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class MapsOutput:
    """``directory`` for the maps, their ``resolution`` (``original``: the image's size;
    ``model``: the engine's map) and ``dtype`` (one of :data:`MAP_DTYPES`)."""

    directory: Path
    resolution: str = "original"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.resolution not in MAP_RESOLUTIONS:
            raise ValueError(f"maps resolution must be one of {list(MAP_RESOLUTIONS)}, got {self.resolution!r}")
        if self.dtype not in MAP_DTYPES:
            raise ValueError(f"maps dtype must be one of {list(MAP_DTYPES)}, got {self.dtype!r}")

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, index: int, input_label: str, amap: np.ndarray) -> dict[str, Any]:
        """Write ``amap`` (float32 ``[H, W]``) as ``<index:06d>_<stem>.npy``; returns the record's
        ``anomaly_map`` object. ``ValueError`` when a float16 map would overflow (never a saved inf)."""
        arr = np.ascontiguousarray(amap, dtype=np.float32)
        if self.dtype == "float16":
            peak = float(np.abs(arr).max()) if arr.size else 0.0
            if peak > _FLOAT16_MAX:
                raise ValueError(f"map values reach {peak:.6g}, beyond float16's largest {_FLOAT16_MAX:g}; "
                                 "save this bundle's maps with --maps-dtype float32")
            arr = arr.astype(np.float16)
        path = self.directory / f"{index:06d}_{Path(text_and_raw(input_label)[0]).stem}.npy"
        np.save(path, arr, allow_pickle=False)
        saved: dict[str, Any] = {"path": path.as_posix(), "shape": list(arr.shape), "dtype": self.dtype}
        return saved if self.resolution == "original" else {**saved, "resolution": self.resolution}  # original maps' records as before

    def summary(self) -> dict[str, Any]:
        return {"maps_dir": self.directory.as_posix(), "maps_resolution": self.resolution, "maps_dtype": self.dtype}


__all__ = ["MAP_DTYPES", "MapsOutput"]

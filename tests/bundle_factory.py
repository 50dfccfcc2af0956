"""Build a real, tiny deployment bundle for tests (torch is used here, never by the runtime).

The model honours the bundle contract: ``uint8 [B, H, W, 3]`` → ``score float32 [B]`` (max of
the map) and ``anomaly_map float32 [B, H, W]`` (mean over channels of ``|x/255 - 0.5|``,
blurred by a 3x3 average pool). It is exported with the exporter's ``trace_to_onnx`` (opset
17), golden.npz holds torch outputs, the manifest is written by ``bundles.write_manifest``. Reuse: ``from bundle_factory import build_tiny_bundle``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyimgano_deploy.bundles import SCHEMA_VERSION, config_sha256, save_golden, utc_now_iso, write_manifest
from pyimgano_deploy.bundles.parity import gate_tolerances
from pyimgano_deploy.exporters.onnx_export import trace_to_onnx
from pyimgano_deploy.postprocess.thresholds import calibrate_quantile



class TinyAnomalyModel(nn.Module):
    """uint8 NHWC → (score [B], anomaly_map [B, H, W]); deterministic and ONNX-exportable."""

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.to(torch.float32) / 255.0
        amap = (x - 0.5).abs().mean(dim=-1)
        amap = F.avg_pool2d(amap.unsqueeze(1), 3, stride=1, padding=1, count_include_pad=False).squeeze(1)
        score = amap.flatten(1).max(dim=1).values
        return score, amap


def torch_reference(images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eager outputs of :class:`TinyAnomalyModel` for ``uint8 [N, H, W, 3]``."""
    with torch.no_grad():
        score, amap = TinyAnomalyModel().eval()(torch.from_numpy(np.ascontiguousarray(images_u8)))
    return score.numpy().astype(np.float32), amap.numpy().astype(np.float32)


def random_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``uint8 [n, height, width, 3]`` with varied contrast, so scores spread out."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        spread = 20 + (200 * i) // max(n - 1, 1)
        out[i] = np.clip(128 + rng.integers(-spread, spread + 1, size=(height, width, 3)), 0, 255)
    return out


def export_tiny_onnx(path: Path, height: int, width: int, static_batch: int | None = None) -> None:
    """Export with a dynamic batch axis, or a fixed batch of ``static_batch``."""
    example = torch.zeros((static_batch or 2, height, width, 3), dtype=torch.uint8)
    axes = None if static_batch else {"images": {0: "batch"}, "score": {0: "batch"}, "anomaly_map": {0: "batch"}}
    trace_to_onnx(TinyAnomalyModel().eval(), (example,), path, opset=17, input_names=["images"],
                  output_names=["score", "anomaly_map"], dynamic_axes=axes)


def build_tiny_bundle(
    root: str | Path,
    *,
    size: tuple[int, int] = (32, 40),
    center_crop: tuple[int, int] | None = None,
    n_golden: int = 4,
    threshold_quantile: float = 0.5,
    seed: int = 0,
    static_batch: int | None = None,
) -> Path:
    """Write a complete bundle directory at ``root`` and return it.

    ``size`` is the preprocessing resize (H, W); the model input is ``center_crop`` or ``size``.
    The image threshold is the ``threshold_quantile`` of the golden scores (so labels mix).
    ``static_batch`` exports a model with that fixed batch size instead of a dynamic one.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    height, width = center_crop or size
    export_tiny_onnx(root / "model.onnx", height, width, static_batch)
    images = random_images(n_golden, height, width, seed=seed)
    scores, maps = torch_reference(images)
    save_golden(root / "golden.npz", images, scores, maps, _sources(size, center_crop, seed))
    calib = calibrate_quantile(
        scores, quantile=threshold_quantile, source_split="golden", n_images=n_golden,
        code_path="tests/bundle_factory.py",
    ).to_dict()
    preprocess = {"size": list(size), "interpolation": "linear", "center_crop": list(center_crop) if center_crop else None}
    model = {"name": "tiny", "family": "test"}
    run_config = {"model": model, "preprocess": preprocess}
    batch = (
        {"min": static_batch, "opt": static_batch, "max": static_batch, "dynamic": False}
        if static_batch
        else {"min": 1, "opt": 8, "max": 64, "dynamic": True}
    )
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "toolkit": {"name": "pyimgano-deploy", "version": "test"},
        "created_at": utc_now_iso(),
        "model": {**model, "parameters": {}},
        "input": {
            "name": "images", "layout": "NHWC", "dtype": "uint8", "channels": "RGB",
            "height": height, "width": width, "preprocess": preprocess,
        },
        "outputs": [
            {"name": "score", "shape": ["batch"], "dtype": "float32"},
            {"name": "anomaly_map", "shape": ["batch", height, width], "dtype": "float32"},
        ],
        "engines": [
            {
                "file": "model.onnx", "format": "onnx", "precision": "fp32", "opset": 17,
                "external_data": False, "batch": batch,
            }
        ],
        "thresholds": {"image": calib, "pixel": None},
        "defects": None,
        "tiling": None,
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
        "source_run": {"path": "runs/tiny", "config_sha256": config_sha256(run_config), "metrics": {}},
        "parity": {
            "fp32": {
                "n_images": n_golden, "max_abs_score": 0.0, "max_rel_score": 0.0, "max_abs_map": 0.0,
                "map_range": [float(maps.min()), float(maps.max())], "labels_identical": True,
                "tolerance": gate_tolerances("fp32", scores, maps, calib["value"]),
            }
        },
        "golden": {"file": "golden.npz", "n_images": n_golden, "n_sources": 2},
    }
    write_manifest(root, manifest)
    return root


def _sources(size: tuple[int, int], center_crop: tuple[int, int] | None, seed: int) -> dict[str, np.ndarray]:
    """Two PNG files larger than the model input, with their eager scores through the real
    reader and preprocessing (the golden source files ``validate`` scores end to end)."""
    import cv2

    from pyimgano_deploy.bundles.golden import pack_sources
    from pyimgano_deploy.inputs import Preprocess, decode_image

    pre = Preprocess(size=size, interpolation="linear", center_crop=center_crop)
    files = [cv2.imencode(".png", img)[1].tobytes() for img in random_images(2, size[0] + 8, size[1] + 12, seed=seed + 7)]
    batch = pre.batch([decode_image(f, name="source") for f in files])
    return pack_sources(files, torch_reference(batch)[0])


def threshold_record(value: float, *, n_images: int) -> dict[str, Any]:
    """A complete thresholds.image record (quantile 0.99 of calibration values) with ``value``."""
    return {
        "value": value,
        "method": "quantile q=0.99 of calibration values",
        "quantile": 0.99,
        "source_split": "calibration",
        "n_images": n_images,
        "n_values": n_images,
        "score_summary": {"min": 0.1, "max": 1.0, "mean": 0.5, "std": 0.2, "q50": 0.5, "q90": 0.9, "q95": 0.95, "q99": 0.99},
        "code_path": "pyimgano_deploy.postprocess.thresholds.calibrate_quantile",
    }


def rewrite_manifest(root: str | Path, edit: Any = None) -> dict[str, Any]:
    """Re-read bundle.json, apply ``edit(manifest)`` (in place) and re-hash/re-write it, so the
    checksums match the files on disk again (used to build bundles that fail later checks)."""
    root = Path(root)
    manifest = json.loads((root / "bundle.json").read_text())
    manifest.pop("files", None)
    if edit is not None:
        edit(manifest)
    return write_manifest(root, manifest)

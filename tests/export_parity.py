"""A tiny detector fitted on near-uniform generated images, scored eager and through its exported ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def eager_and_exported(model: str, tmp_path: Path, *, n_fit: int = 10, n_test: int = 4, **kwargs) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((eager scores, maps), (exported scores, maps)) of ``model`` (random init, 48 px) on ``n_test`` images."""
    from pyimgano_deploy.exporters.onnx_export import export_module, onnx_outputs
    from pyimgano_deploy.models import create_model

    rng = np.random.default_rng(0)
    base = rng.integers(70, 130, size=(1, 48, 48, 3))
    images = np.clip(base + rng.integers(-25, 25, size=(n_fit + n_test, 48, 48, 3)), 0, 255).astype(np.uint8)
    det = create_model(model, pretrained=False, image_size=48, progress=False, **kwargs)
    det.fit(images[:n_fit], input_format="rgb_u8_hwc")
    batch = det.preprocess.batch(list(images[n_fit:]))
    eager = det.predict_batch(batch)
    export_module(det.inference_module, batch[:2], tmp_path / "m.onnx")
    return eager, onnx_outputs(tmp_path / "m.onnx", batch)

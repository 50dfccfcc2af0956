"""Build a small but real run directory without the train command (for exporter tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pyimgano_deploy.inputs import read_image


def make_run_dir(root: Path, model: str = "vision_patchcore", *, size: int = 64, n_train: int = 10, n_calib: int = 6, seed: int = 0, **model_kwargs) -> Path:
    """Fit a random-init detector on generated images, calibrate it, and write the files
    ``export`` reads: config.json, report.json, per_image.jsonl, model/, artifacts/infer_config.json."""
    from pyimgano_deploy.datasets import generate_synthetic_dataset, load_mvtec
    from pyimgano_deploy.inference import calibrate_threshold
    from pyimgano_deploy.models import create_model

    data = generate_synthetic_dataset(root / "data", seed=seed, n_train=n_train + n_calib, n_test=4, size=size)
    ds = load_mvtec(data)
    train = [s.path for s in ds.train[:n_train]]
    calib = [s.path for s in ds.train[n_train:]]
    kwargs = {"pretrained": False, "image_size": size, "progress": False, **model_kwargs}
    det = create_model(model, **kwargs).fit(train)
    calibrate_threshold(det, calib, pixel_quantile=0.99)
    run = root / "run"
    det.save(run / "model")
    (run / "artifacts").mkdir(parents=True)
    infer_config = {
        "schema_version": "1.0",
        "model": {"name": det.model_name, "family": det.family},
        "preprocess": det.preprocess.to_dict(),
        "thresholds": {"image": det.threshold.to_dict(), "pixel": det.pixel_threshold.to_dict()},
        "tiling": None,
        "defects": None,
    }
    (run / "artifacts" / "infer_config.json").write_text(json.dumps(infer_config))
    (run / "config.json").write_text(json.dumps({"model": {"name": model, "kwargs": kwargs}, "seed": seed}))
    (run / "report.json").write_text(json.dumps({"schema_version": "1.0", "metrics": {"image": {"auroc": 1.0}}}))
    with open(run / "per_image.jsonl", "w") as f:
        for p in calib:
            f.write(json.dumps({"input": p, "split": "calibration", "y_true": 0}) + "\n")
    assert read_image(calib[0]).shape[-1] == 3
    return run

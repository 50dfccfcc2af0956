"""Build a small but real run directory without the train command (for exporter tests),
through the public ``workbench.api_run.write_api_run``."""

from __future__ import annotations

from pathlib import Path


def make_run_dir(root: Path, model: str = "vision_patchcore", *, size: int = 64, n_train: int = 10, n_calib: int = 6, seed: int = 0, **model_kwargs) -> Path:
    """Fit a random-init detector on generated images, calibrate it, and write the files
    ``export`` reads: config.json, report.json, per_image.jsonl, model/, artifacts/infer_config.json."""
    from pyimgano_deploy.datasets import generate_synthetic_dataset, load_mvtec
    from pyimgano_deploy.inference import calibrate_threshold
    from pyimgano_deploy.models import create_model
    from pyimgano_deploy.workbench.api_run import write_api_run

    data = generate_synthetic_dataset(root / "data", seed=seed, n_train=n_train + n_calib, n_test=4, size=size)
    ds = load_mvtec(data)
    train = [s.path for s in ds.train[:n_train]]
    calib = [s.path for s in ds.train[n_train:]]
    kwargs = {"pretrained": False, "image_size": size, "progress": False, **model_kwargs}
    det = create_model(model, **kwargs).fit(train)
    calibrate_threshold(det, calib, pixel_quantile=0.99)
    return write_api_run(root / "run", det, calibration_inputs=calib, config={"model": {"name": model, "kwargs": kwargs}, "seed": seed})


def export_small_padim(root: Path) -> Path:
    """A random-init PaDiM run on 32 px synthetic images, exported with two golden images: the
    smallest real bundle export writes (its manifest holds everything export surveys)."""
    from pyimgano_deploy.exporters.bundle_export import ExportOptions, export_run

    run = make_run_dir(root, "vision_padim", size=32, d=8, n_train=4, n_calib=3)
    return export_run(run, root / "b", ExportOptions(golden=2), log=lambda m: None).bundle_dir

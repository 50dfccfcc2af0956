"""A run directory for a detector fitted from Python (no workbench evaluation).

``pyimgano-deploy train`` writes the full run directory. A user who fits and calibrates a
detector with the Python API can still export it: this writes the subset ``export`` reads
(``model/``, ``artifacts/infer_config.json``, ``config.json``, ``report.json`` and the
calibration inputs in ``per_image.jsonl``, from which golden images are drawn).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pyimgano_deploy.workbench import rundir


def write_api_run(
    run_dir: str | Path,
    detector: Any,
    *,
    calibration_inputs: Sequence[str],
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    tiling: dict[str, Any] | None = None,
    defects: dict[str, Any] | None = None,
) -> Path:
    """Write an exportable run for a fitted detector whose image threshold was calibrated
    (``inference.calibrate_threshold``) on ``calibration_inputs`` — held-out normal image
    paths, never the fitting images. Returns the run directory."""
    if detector.threshold is None:
        raise ValueError("the detector has no image threshold: call inference.calibrate_threshold(detector, normal_images) first")
    if not calibration_inputs:
        raise ValueError("calibration_inputs is empty: golden images are drawn from the held-out calibration images")
    run = Path(run_dir)
    detector.save(run / rundir.MODEL_DIR)
    thresholds = {
        "image": detector.threshold.to_dict(),
        "pixel": None if detector.pixel_threshold is None else detector.pixel_threshold.to_dict(),
    }
    rundir.write_json(run / rundir.INFER_CONFIG, rundir.build_infer_config(detector, thresholds, tiling, defects))
    rundir.write_json(run / rundir.CONFIG, config or {"model": {"name": detector.model_name, "kwargs": detector.hyperparameters()}, "source": "python-api"})
    rundir.write_json(run / rundir.REPORT, {"schema_version": rundir.SCHEMA_VERSION, "metrics": metrics or {}, "source": "python-api"})
    rundir.write_jsonl(run / rundir.PER_IMAGE, ({"input": str(p), "split": "calibration", "y_true": 0} for p in calibration_inputs))
    return run

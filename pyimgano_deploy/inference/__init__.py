"""Eager (torch) inference API: thresholds with provenance and per-item results."""

from pyimgano_deploy.inference.api import infer
from pyimgano_deploy.inference.calibration import calibrate_threshold
from pyimgano_deploy.postprocess.thresholds import ThresholdCalibration
from pyimgano_deploy.runtimes.results import InferenceError, InferenceResult

__all__ = ["InferenceError", "InferenceResult", "ThresholdCalibration", "calibrate_threshold", "infer"]

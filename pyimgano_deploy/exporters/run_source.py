"""Reading what an export needs from a run directory (ARCHITECTURE §3, "Run directory")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyimgano_deploy.bundles import config_sha256
from pyimgano_deploy.inputs.formats import validate_u16_max
from pyimgano_deploy.inputs.reader import ImageReadError, read_image_source
from pyimgano_deploy.inputs.source_info import SourceInfo
from pyimgano_deploy.workbench import rundir


class RunDirError(ValueError):
    """The run directory is missing something an export needs; names the path."""


@dataclass
class RunSource:
    """A resolved run directory: its detector, configs, metrics and calibration images."""

    root: Path
    config: dict[str, Any]
    report: dict[str, Any]
    infer_config: dict[str, Any]
    calibration_inputs: list[str]

    @property
    def config_sha256(self) -> str:
        return config_sha256(self.config)

    @property
    def u16_max(self) -> int | None:
        """The full-scale value the run declared for its 16-bit files (``dataset.u16_max``), or None."""
        value = (self.config.get("dataset") or {}).get("u16_max")
        if value is None:
            return None
        try:
            return validate_u16_max(value)
        except ValueError as exc:
            raise RunDirError(f"{self.root / rundir.CONFIG}: dataset.u16_max: {exc}") from exc

    def read_calibration(self, path: str) -> tuple[np.ndarray, SourceInfo]:
        """One calibration image as the run read it (its ``u16_max``), with its source;
        :class:`RunDirError` naming the file when it can no longer be read."""
        try:
            return read_image_source(path, u16_max=self.u16_max)
        except ImageReadError as exc:
            raise RunDirError(f"{exc}: export reads the run's calibration images (for the golden set and "
                              "input.trained_colour / trained_aspect); they must stay where train read them") from exc

    def load_detector(self, device: str = "cpu") -> Any:
        from pyimgano_deploy.models.detectors.base import Detector

        return Detector.load(self.root / rundir.MODEL_DIR, device=device)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirError(f"{path} is missing: is this a run directory written by 'pyimgano-deploy train'?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


def _calibration_inputs(root: Path) -> list[str]:
    """Inputs of the held-out calibration split, in the order recorded by the workbench."""
    per_image = root / rundir.PER_IMAGE
    found: list[str] = []
    if per_image.is_file():
        for line in per_image.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("split") == "calibration":
                found.append(str(rec["input"]))
    return found


def resolve_run(run_dir: str | Path, category: str | None = None) -> RunSource:
    """Resolve ``run_dir`` (or ``run_dir/categories/<category>``) into a :class:`RunSource`."""
    root = Path(run_dir)
    if not root.is_dir():
        raise RunDirError(f"run directory {root} does not exist")
    categories = root / rundir.CATEGORIES_DIR
    if category is not None:
        root = categories / category
        if not root.is_dir():
            known = sorted(p.name for p in categories.iterdir()) if categories.is_dir() else []
            raise RunDirError(f"category {category!r} not found under {categories}; available: {known}")
    elif not (root / rundir.MODEL_DIR).is_dir() and categories.is_dir():
        known = sorted(p.name for p in categories.iterdir())
        raise RunDirError(f"{run_dir} holds several categories {known}: pass --category NAME")
    if not (root / rundir.DETECTOR_JSON).is_file():
        raise RunDirError(f"{root / rundir.DETECTOR_JSON} is missing: the run has no saved detector")
    if (root / rundir.ENVIRONMENT).is_file():  # written by `train` (a Python-API run has only the export subset)
        problems = rundir.validate_run_dir(root)
        if problems:
            shown = "\n".join(f"  - {p}" for p in problems[:10])
            raise RunDirError(f"{root} is not a consistent run directory ({len(problems)} problem(s)):\n{shown}")
    return RunSource(
        root=root,
        config=_read_json(root / rundir.CONFIG),
        report=_read_json(root / rundir.REPORT),
        infer_config=_read_json(root / rundir.INFER_CONFIG),
        calibration_inputs=_calibration_inputs(root),
    )


def sample_golden_inputs(inputs: list[str], n: int, seed: int = 0) -> list[str]:
    """A fixed, seeded sample of ``n`` inputs (sorted by position for stable files)."""
    if not inputs:
        raise RunDirError(
            "the run records no calibration images (per_image.jsonl entries with split='calibration'); "
            "golden images must be real held-out normal images"
        )
    rng = np.random.default_rng(seed)
    n = min(n, len(inputs))
    picks = sorted(rng.choice(len(inputs), size=n, replace=False).tolist())
    return [inputs[i] for i in picks]

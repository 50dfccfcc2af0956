"""Validate a bundle for a release pipeline: everything needed to trust it on this machine.

Checks, in order (a failure skips the rest): ``structure`` (schema, listed files present and
inside the bundle, no unlisted files), ``checksums`` (size + sha256), ``thresholds`` (image
threshold present, every threshold finite, preprocessing and infer_config.json readable),
``engine`` (an engine opens here), ``golden`` (the engine reproduces golden.npz within the
manifest's parity tolerances; labels identical for fp32). Exit codes (INTERFACES.md):
0 ok, 3 invalid bundle, 4 checksum mismatch, 5 engine cannot load here, 6 parity failure.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyimgano_deploy.bundles import BundleError, ChecksumMismatchError, read_bundle
from pyimgano_deploy.bundles.reader import Bundle
from pyimgano_deploy.runtimes.errors import EngineLoadError, EngineRunError
from pyimgano_deploy.runtimes.loader import open_runtime
from pyimgano_deploy.runtimes.runtime import Runtime

EXIT_OK, EXIT_INVALID, EXIT_CHECKSUM, EXIT_ENGINE, EXIT_PARITY = 0, 3, 4, 5, 6
CHECK_NAMES = ("structure", "checksums", "thresholds", "engine", "golden")
REPORT_SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class Check:
    """One validation step: ``status`` is "pass", "fail" or "skip"."""

    name: str
    status: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class ValidationReport:
    """All checks of one ``validate`` run and the resulting exit code."""

    bundle: str
    checks: list[Check] = field(default_factory=list)
    exit_code: int = EXIT_OK
    engine_info: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "bundle": self.bundle,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "checks": [c.to_dict() for c in self.checks],
            "engine": self.engine_info,
            "parity": self.parity,
        }


class _Failed(Exception):
    """Internal: a check failed with ``exit_code`` and ``detail``."""

    def __init__(self, exit_code: int, detail: str) -> None:
        super().__init__(detail)
        self.exit_code = exit_code
        self.detail = detail


def _check_structure(path: str | os.PathLike[str]) -> tuple[Bundle | None, ChecksumMismatchError | None]:
    """Schema, paths, presence (no hashing). A size mismatch found on the way is returned, to be
    reported by the checksums step."""
    try:
        return read_bundle(path, verify_checksums=False), None
    except ChecksumMismatchError as exc:  # file sizes are checked even without hashing
        return None, exc
    except BundleError as exc:
        raise _Failed(exc.exit_code, str(exc)) from exc


def _check_checksums(path: str | os.PathLike[str]) -> Bundle:
    try:
        return read_bundle(path, verify_checksums=True)
    except BundleError as exc:
        raise _Failed(exc.exit_code, str(exc)) from exc


def _check_thresholds(bundle: Bundle) -> str:
    try:
        image = bundle.image_threshold
        pixel = bundle.pixel_threshold
        _ = bundle.preprocess
        _ = bundle.infer_config
    except BundleError as exc:
        raise _Failed(EXIT_INVALID, str(exc)) from exc
    if image is None:
        raise _Failed(EXIT_INVALID, "thresholds.image is missing: labels cannot be computed")
    for name, calib in (("image", image), ("pixel", pixel)):
        if calib is not None and not math.isfinite(calib.value):
            raise _Failed(EXIT_INVALID, f"thresholds.{name}.value is {calib.value}, expected a finite number")
    text = f"image threshold {image.value:.6g} ({image.method})"
    if pixel is not None:
        text += f"; pixel threshold {pixel.value:.6g}"
    return text


def _check_engine(bundle: Bundle, *, engine: str, device: str) -> Runtime:
    try:
        return open_runtime(bundle, engine=engine, device=device, batch_size=8)
    except EngineLoadError as exc:
        raise _Failed(EXIT_ENGINE, str(exc)) from exc
    except BundleError as exc:
        raise _Failed(EXIT_INVALID, str(exc)) from exc


def golden_parity(runtime: Runtime, golden: dict[str, np.ndarray]) -> dict[str, Any]:
    """Run the golden images through ``runtime``'s engine and measure the differences."""
    images = golden["images"]
    try:
        got_score, got_map = _in_chunks(runtime, images)
    except EngineRunError as exc:
        raise _Failed(EXIT_ENGINE, f"engine failed on golden images: {exc}") from exc
    want_score, want_map = golden["score"].astype(np.float64), golden["anomaly_map"].astype(np.float64)
    if got_map.shape != want_map.shape:
        raise _Failed(EXIT_PARITY, f"anomaly_map shape {list(got_map.shape)} differs from golden {list(want_map.shape)}")
    if not (np.all(np.isfinite(got_score)) and np.all(np.isfinite(got_map))):
        raise _Failed(EXIT_PARITY, "engine produced NaN/inf on golden images")
    d_score = np.abs(got_score.astype(np.float64) - want_score)
    d_map = np.abs(got_map.astype(np.float64) - want_map)
    rel = d_score / np.maximum(np.abs(want_score), 1e-12)
    thr = runtime.threshold
    labels_identical = thr is None or bool(np.array_equal(got_score >= thr, want_score >= thr))
    return {
        "n_images": int(len(images)),
        "max_abs_score": float(d_score.max()),
        "max_rel_score": float(rel.max()),
        "max_abs_map": float(d_map.max()),
        "labels_identical": labels_identical,
    }


def _in_chunks(runtime: Runtime, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    parts = [runtime.run_batch(images[i : i + runtime.batch_size]) for i in range(0, len(images), runtime.batch_size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _check_golden(bundle: Bundle, runtime: Runtime) -> tuple[str, dict[str, Any]]:
    try:
        golden = bundle.load_golden()
    except BundleError as exc:
        raise _Failed(EXIT_INVALID, str(exc)) from exc
    precision = str(runtime.engine_info.get("precision", "fp32"))
    record = (bundle.manifest.get("parity") or {}).get(precision)
    if not isinstance(record, dict) or not isinstance(record.get("tolerance"), dict):
        raise _Failed(EXIT_INVALID, f"manifest has no parity.{precision}.tolerance for the {precision} engine")
    tol = record["tolerance"]
    measured = golden_parity(runtime, golden)
    measured["precision"] = precision
    measured["tolerance"] = dict(tol)
    problems = []
    if precision == "fp16":
        if measured["max_rel_score"] > float(tol["score_rel"]):
            problems.append(f"max relative score error {measured['max_rel_score']:.3g} > score_rel {tol['score_rel']}")
    else:
        if measured["max_abs_score"] > float(tol["score_abs"]):
            problems.append(f"max |Δscore| {measured['max_abs_score']:.3g} > score_abs {tol['score_abs']}")
        if measured["max_abs_map"] > float(tol["map_abs"]):
            problems.append(f"max |Δmap| {measured['max_abs_map']:.3g} > map_abs {tol['map_abs']}")
        if not measured["labels_identical"]:
            problems.append("labels differ from the golden labels at the image threshold")
    summary = (
        f"{measured['n_images']} golden images, {precision}: max |Δscore| {measured['max_abs_score']:.3g}, "
        f"max rel {measured['max_rel_score']:.3g}, max |Δmap| {measured['max_abs_map']:.3g}, "
        f"labels identical: {measured['labels_identical']}"
    )
    if problems:
        raise _Failed(EXIT_PARITY, summary + " — " + "; ".join(problems))
    return summary, measured


def validate_bundle(path: str | os.PathLike[str], *, engine: str = "auto", device: str = "auto") -> ValidationReport:
    """Run every check on the bundle at ``path``; never raises for a bad bundle (the report's
    ``exit_code`` says what failed). ``ValueError`` for an unknown ``engine``/``device``."""
    report = ValidationReport(bundle=str(path))
    state: dict[str, Any] = {}

    def structure() -> str:
        b, state["size_error"] = _check_structure(path)
        if b is None:
            return "schema valid, listed files present and inside the bundle"
        return f"schema {b.schema_version}, {len(b.manifest['files'])} files listed and present"

    def checksums() -> str:
        if state["size_error"] is not None:
            raise _Failed(EXIT_CHECKSUM, str(state["size_error"]))
        state["bundle"] = _check_checksums(path)
        return f"sha256 of {len(state['bundle'].manifest['files'])} files match"

    def engine_check() -> str:
        state["runtime"] = _check_engine(state["bundle"], engine=engine, device=device)
        report.engine_info = state["runtime"].engine_info
        info = report.engine_info
        return f"{info['file']} opened with {info['engine']} ({info['precision']}, {info['device']})"

    def golden_check() -> str:
        summary, report.parity = _check_golden(state["bundle"], state["runtime"])
        return summary

    steps = [
        ("structure", structure),
        ("checksums", checksums),
        ("thresholds", lambda: _check_thresholds(state["bundle"])),
        ("engine", engine_check),
        ("golden", golden_check),
    ]
    try:
        for name, step in steps:
            if report.exit_code != EXIT_OK:
                report.checks.append(Check(name, "skip", "skipped: an earlier check failed"))
                continue
            try:
                report.checks.append(Check(name, "pass", step()))
            except _Failed as failure:
                report.exit_code = failure.exit_code
                report.checks.append(Check(name, "fail", failure.detail))
    finally:
        runtime = state.get("runtime")
        if runtime is not None:
            runtime.close()
    return report


__all__ = ["CHECK_NAMES", "Check", "ValidationReport", "golden_parity", "validate_bundle"]

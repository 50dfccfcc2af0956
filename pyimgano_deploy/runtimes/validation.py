"""Validate a bundle for a release pipeline: everything needed to trust it on this machine.

Checks, in order (a failure skips the rest): ``structure`` (schema, listed files present and
inside the bundle, no unlisted files, content consistent with the manifest), ``checksums``
(size + sha256, and the digest when one is pinned), ``signature`` (when a public key is
given), ``thresholds`` (image threshold present, every threshold finite), ``engine`` (an
engine opens here), ``golden`` (the engine reproduces golden.npz under the export's own parity
gate, :func:`~pyimgano_deploy.bundles.parity.compare_outputs`, with tolerances recomputed from
the golden data, never read from the manifest), ``pipeline`` (the golden *source files* scored
end to end, decode → preprocessing → tiling → engine, match their eager scores under the same
gate). Exit codes: :mod:`pyimgano_deploy.bundles.exit_codes`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyimgano_deploy.bundles import BundleError, ChecksumMismatchError, read_bundle
from pyimgano_deploy.bundles.exit_codes import EXIT_ENGINE, EXIT_INVALID, EXIT_OK, EXIT_PARITY
from pyimgano_deploy.bundles.golden import unpack_sources
from pyimgano_deploy.bundles.parity import GATE_RULE, ParityReport, compare_outputs
from pyimgano_deploy.bundles.reader import Bundle
from pyimgano_deploy.bundles.signing import verify_bundle_signature
from pyimgano_deploy.inputs.reader import decode_image_source
from pyimgano_deploy.inputs.source_info import aspect_differs, colour_differs
from pyimgano_deploy.runtimes.errors import EngineLoadError, EngineRunError
from pyimgano_deploy.runtimes.golden_check import (
    SELF_TESTED_PRECISIONS,
    GoldenShapeError,
    cpu_note,
    golden_parity,
    refusal_advice,
)
from pyimgano_deploy.runtimes.loader import open_runtime
from pyimgano_deploy.runtimes.runtime import Runtime

CHECK_NAMES = ("structure", "checksums", "signature", "thresholds", "engine", "golden", "pipeline")
REPORT_SCHEMA_VERSION = "1.1"
#: relative agreement of a recorded tolerance with the gate's recomputed one (float round-trips)
_TOLERANCE_AGREEMENT = 1e-9


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
    digest: str | None = None
    #: the verified signature record, or None (unsigned, or no public key given)
    signature: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

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
            "digest": self.digest,
            "signature": self.signature,
            "warnings": list(self.warnings),
        }


class _Skipped(Exception):
    """Internal: a check that does not apply to this bundle (the reason is the detail)."""


class _Failed(Exception):
    """Internal: a check failed with ``exit_code`` and ``detail``."""

    def __init__(self, exit_code: int, detail: str) -> None:
        super().__init__(detail)
        self.exit_code = exit_code
        self.detail = detail


def _check_structure(path: str | os.PathLike[str], allow_incomplete: bool) -> tuple[Bundle | None, ChecksumMismatchError | None]:
    """Schema, paths, presence (no hashing). A size mismatch found on the way is returned, to be
    reported by the checksums step."""
    try:
        return read_bundle(path, verify_checksums=False, allow_incomplete=allow_incomplete), None
    except ChecksumMismatchError as exc:  # file sizes are checked even without hashing
        return None, exc
    except BundleError as exc:
        raise _Failed(exc.exit_code, str(exc)) from exc


def _check_checksums(path: str | os.PathLike[str], expected_digest: str | None, allow_incomplete: bool) -> Bundle:
    try:
        return read_bundle(path, verify_checksums=True, expected_digest=expected_digest, allow_incomplete=allow_incomplete)
    except BundleError as exc:
        raise _Failed(exc.exit_code, str(exc)) from exc


def _check_thresholds(bundle: Bundle) -> str:
    try:
        image = bundle.image_threshold
        pixel = bundle.pixel_threshold
        _ = bundle.preprocess
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


def _check_engine(bundle: Bundle, *, engine: str, device: str, precision: str) -> Runtime:  # exit 5 only for "cannot load here"
    try:
        return open_runtime(bundle, engine=engine, device=device, precision=precision, batch_size=8, self_test=False)
    except EngineLoadError as exc:
        raise _Failed(EXIT_ENGINE, str(exc)) from exc
    except BundleError as exc:
        raise _Failed(EXIT_INVALID, str(exc)) from exc


def _golden_parity(runtime: Runtime, golden: dict[str, np.ndarray], precision: str) -> ParityReport:
    try:
        return golden_parity(runtime, golden, precision)
    except EngineRunError as exc:
        raise _Failed(EXIT_ENGINE, f"engine failed on golden images: {exc}") from exc
    except GoldenShapeError as exc:
        raise _Failed(EXIT_PARITY, str(exc)) from exc


def _recorded_rule(record: Any) -> Any:
    """The gate rule a bundle's parity record was exported under (rule 1 recorded none)."""
    tol = record.get("tolerance") if isinstance(record, dict) else None
    return tol.get("rule", 1) if isinstance(tol, dict) else None


def _recorded_tolerance_problem(record: Any, report: ParityReport, precision: str) -> str | None:
    """The manifest's recorded tolerance must be the gate's: a looser one is an edited manifest.
    A bundle exported under an older gate rule recorded that rule's numbers, so they are not
    compared; the current rule is applied regardless."""
    tol = record.get("tolerance") if isinstance(record, dict) else None
    if not isinstance(tol, dict):
        return f"manifest has no parity.{precision}.tolerance for the {precision} engine"
    if _recorded_rule(record) != GATE_RULE:
        return None
    for key in ("score_abs", "map_abs"):
        if key not in tol:
            continue
        ours = report.tolerance[key]
        if not abs(float(tol[key]) - ours) <= _TOLERANCE_AGREEMENT * max(abs(ours), 1e-30):
            return (f"parity.{precision}.tolerance.{key} is {tol[key]!r} in bundle.json, but the parity gate gives "
                    f"{ours:.6g} for this golden set and threshold: the manifest was edited")
    return None


def _load_golden(bundle: Bundle) -> dict[str, np.ndarray]:
    try:
        return bundle.load_golden()
    except BundleError as exc:
        raise _Failed(EXIT_INVALID, str(exc)) from exc


def _check_golden(bundle: Bundle, runtime: Runtime, golden: dict[str, np.ndarray]) -> tuple[str, dict[str, Any]]:
    precision = str(runtime.engine_info.get("precision", "fp32"))
    report = _golden_parity(runtime, golden, precision)
    record = (bundle.manifest.get("parity") or {}).get(precision)
    problem = _recorded_tolerance_problem(record, report, precision)
    if problem is not None:
        raise _Failed(EXIT_INVALID, problem)
    measured = {**report.to_manifest(), "passed": report.passed}
    summary = (
        f"{report.n_images} golden images, {precision}: max |Δscore| {report.max_abs_score:.3g} "
        f"(gate {report.tolerance['score_abs']:.3g}), max rel {report.max_rel_score:.3g}, max |Δmap| "
        f"{report.max_abs_map:.3g} (gate {report.tolerance['map_abs']:.3g}), labels identical: {report.labels_identical}"
    )
    if report.boundary:
        summary += f" (boundary images {list(report.boundary)}, within the score gate of the threshold, not compared)"
    if _recorded_rule(record) != GATE_RULE:
        summary += f"; exported under gate rule {_recorded_rule(record)}, checked under rule {GATE_RULE}"
    if not report.passed:
        advice = f"; {refusal_advice(precision)}" if precision in SELF_TESTED_PRECISIONS else ""
        raise _Failed(EXIT_PARITY, summary + f" — outside the parity gate{cpu_note(bundle.manifest)}{advice}")
    return summary, measured


def _check_pipeline(runtime: Runtime, golden: dict[str, np.ndarray]) -> str:
    """Score the golden source files end to end and compare with their eager scores (same gate)."""
    files = unpack_sources(golden)
    if not files:
        raise _Skipped("this bundle carries no golden source files (exported before schema 1.1)")
    u16_max = runtime.bundle.trained_u16_max  # the export decoded its sources with the training set's value
    decoded = [decode_image_source(data, name=f"golden source #{i}", u16_max=u16_max) for i, data in enumerate(files)]
    images = [image for image, _ in decoded]
    trained = runtime.bundle.trained_colour
    odd = [i for i, (_, source) in enumerate(decoded) if colour_differs(trained, bool(source.grey))]
    if odd:  # the sources are calibration images, which the export surveyed for input.trained_colour
        raise _Failed(EXIT_INVALID, f"bundle.json input.trained_colour is {trained!r}, but golden source file(s) {odd} are "
                      f"{'in colour' if trained == 'grey' else 'grey'}: the manifest contradicts its own files")
    aspect = runtime.bundle.trained_aspect
    odd = [i for i, (_, source) in enumerate(decoded) if aspect_differs(aspect, int(source.width), int(source.height))]
    if odd:  # the export surveyed the golden source files too
        raise _Failed(EXIT_INVALID, f"bundle.json input.trained_aspect is {aspect}, but golden source file(s) {odd} have other "
                      "aspect ratios: the manifest contradicts its own files")
    results = runtime.infer(images, input_format="rgb_u8_hwc")
    failed = [f"#{i}: {r.error.message}" for i, r in enumerate(results) if r.error is not None]
    if failed:
        raise _Failed(EXIT_PARITY, "golden source files could not be scored: " + "; ".join(failed))
    got = np.array([r.score for r in results], dtype=np.float64)
    want = golden["source_score"]
    precision = str(runtime.engine_info.get("precision", "fp32"))
    # scores only: whole-pipeline maps are at each file's own size, and the golden images
    # above already hold the engine's maps to the gate
    report = compare_outputs(want, np.zeros((len(want), 1, 1)), got, np.zeros((len(got), 1, 1)),
                             threshold=runtime.threshold, precision=precision)
    summary = (f"{len(files)} source files through decode, preprocessing"
               f"{', tiling' if runtime.tiled is not None else ''} and the engine: max |Δscore| "
               f"{report.max_abs_score:.3g} (gate {report.tolerance['score_abs']:.3g}), labels identical: {report.labels_identical}")
    if not report.passed:
        raise _Failed(EXIT_PARITY, summary + " — the bundle's preprocessing or tiling no longer reproduces the "
                      "export's scores (was bundle.json edited?)")
    return summary


def validate_bundle(
    path: str | os.PathLike[str],
    *,
    engine: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    expected_digest: str | None = None,
    public_key: str | os.PathLike[str] | None = None,
    allow_incomplete: bool = False,
) -> ValidationReport:
    """Run every check on the bundle at ``path``; never raises for a bad bundle (the report's
    ``exit_code`` says what failed). ``expected_digest`` pins the bundle (exit 4 on mismatch),
    ``public_key`` requires a valid signature (exit 7). ``precision`` picks the engine file the
    way ``infer`` does ("auto": fp32 on CPU, fp16 on a GPU); name one to gate a file this
    machine would not pick. ``ValueError`` for an unknown ``engine``/``device``/``precision``
    or a malformed ``expected_digest``."""
    report = ValidationReport(bundle=str(path))
    state: dict[str, Any] = {}

    def structure() -> str:
        b, state["size_error"] = _check_structure(path, allow_incomplete)
        if b is None:
            return "schema valid, listed files present and inside the bundle"
        return f"schema {b.schema_version}, {len(b.manifest['files'])} files listed and present"

    def checksums() -> str:
        if state["size_error"] is not None:
            raise _Failed(state["size_error"].exit_code, str(state["size_error"]))
        bundle = state["bundle"] = _check_checksums(path, expected_digest, allow_incomplete)
        report.digest = bundle.digest
        pinned = "matches the pinned digest" if expected_digest else "not pinned (pass --expect-digest to pin it)"
        return f"sha256 of {len(bundle.manifest['files'])} files match; digest {bundle.digest} {pinned}"

    def signature() -> str:
        if public_key is None:
            return "not checked (pass --public-key to require a signature)"
        try:
            report.signature = verify_bundle_signature(state["bundle"].root, state["bundle"].digest, public_key)
        except BundleError as exc:
            raise _Failed(exc.exit_code, str(exc)) from exc
        return f"Ed25519 signature over {state['bundle'].digest} verifies with {public_key}"

    def engine_check() -> str:
        state["runtime"] = _check_engine(state["bundle"], engine=engine, device=device, precision=precision)
        report.engine_info = state["runtime"].engine_info
        info = report.engine_info
        return f"{info['file']} opened with {info['engine']} ({info['precision']}, {info['device']})"

    def golden_check() -> str:
        state["golden"] = _load_golden(state["bundle"])
        summary, report.parity = _check_golden(state["bundle"], state["runtime"], state["golden"])
        return summary

    steps = [
        ("structure", structure),
        ("checksums", checksums),
        ("signature", signature),
        ("thresholds", lambda: _check_thresholds(state["bundle"])),
        ("engine", engine_check),
        ("golden", golden_check),
        ("pipeline", lambda: _check_pipeline(state["runtime"], state["golden"])),
    ]
    try:
        for name, step in steps:
            if report.exit_code != EXIT_OK:
                report.checks.append(Check(name, "skip", "skipped: an earlier check failed"))
                continue
            try:
                report.checks.append(Check(name, "pass", step()))
            except _Skipped as skipped:
                report.checks.append(Check(name, "skip", str(skipped)))
            except _Failed as failure:
                report.exit_code = failure.exit_code
                report.checks.append(Check(name, "fail", failure.detail))
    finally:
        runtime = state.get("runtime")
        if runtime is not None:
            runtime.close()
    if report.ok and expected_digest is None and public_key is None:
        report.warnings.append("neither --expect-digest nor --public-key was given: the files match bundle.json, "
                               "but nothing proves bundle.json is the one that was released")
    return report


__all__ = ["CHECK_NAMES", "Check", "ValidationReport", "golden_parity", "validate_bundle"]



def require_self_check(folder: str | os.PathLike[str], what: str, error: type[Exception]) -> None:
    """``validate`` (ONNX engine on the CPU) on a bundle folder its writer has not yet swapped into
    place: ``export`` and ``recalibrate`` ship only what it passes. A failed golden or pipeline
    check raises ``ParityError``, any other failed check ``error``; both name ``what`` and the
    failed checks."""
    from pyimgano_deploy.bundles.parity import ParityError

    report = validate_bundle(folder, engine="onnx", device="cpu", allow_incomplete=True)
    if report.ok:
        return
    failed = "; ".join(f"{c.name}: {c.detail}" for c in report.checks if c.status == "fail")
    if report.exit_code == EXIT_PARITY:
        raise ParityError(f"{what} fails its own golden check; nothing was written.\n{failed}")
    raise error(f"{what} does not validate (exit {report.exit_code}); nothing was written: {failed}")

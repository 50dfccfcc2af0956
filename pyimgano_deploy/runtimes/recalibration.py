"""Re-set a bundle's thresholds on images from the line, torch-free: a new bundle, same engines.

A line's camera, lighting or parts differ from the lab's, and the image threshold calibrated
there may flag good parts here (or miss bad ones). :func:`recalibrate_bundle` scores normal
images taken on the line with the bundle's own engine and calibrates the thresholds from those
scores with the functions ``train`` uses (:mod:`pyimgano_deploy.postprocess.thresholds`: every
strategy, provenance with ``source_split`` :data:`RECALIBRATION_SPLIT`). It writes a **new**
bundle; the source bundle is never changed:

- every file (engines, golden set) is copied byte for byte and checked against the source's
  checksums;
- the manifest keeps the export's provenance and gets the new ``thresholds``, its parity
  records measured again here under the new threshold (the gate's tolerance and its label
  check depend on it), and one more ``recalibrations`` entry: the source digest, the
  thresholds it replaced, how many images were scored and a digest of which;
- the folder is validated like an export's before it is swapped into place, and signed when
  a key is given (the source's signature does not cover the new manifest, so it is not copied).
"""

from __future__ import annotations

import copy
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pyimgano_deploy._version import __version__
from pyimgano_deploy.bundles import InvalidBundleError, read_bundle, utc_now_iso, write_manifest
from pyimgano_deploy.bundles.environment import capture_environment
from pyimgano_deploy.bundles.identity import bundle_digest
from pyimgano_deploy.bundles.manifest import PRECISIONS, SCHEMA_VERSION, listed_files, parse_schema_version
from pyimgano_deploy.bundles.parity import ParityError, ParityReport, compare_outputs
from pyimgano_deploy.bundles.reader import Bundle
from pyimgano_deploy.bundles.replace import UnsafeOutputError, check_replaceable, install_signed, open_work_dir
from pyimgano_deploy.inputs.reader import DEFAULT_MAX_PIXELS
from pyimgano_deploy.inputs.source_info import unlike_training
from pyimgano_deploy.postprocess.thresholds import (
    ALL_STRATEGIES,
    F1_STRATEGY,
    PIXEL_ALL,
    PIXEL_IMAGE_MAX,
    VALIDATION_SPLIT,
    PixelSample,
    ThresholdCalibration,
    Thresholds,
    calibrate_thresholds,
    pixel_strategy_of,
)
from pyimgano_deploy.runtimes.errors import EngineLoadError, EngineRunError
from pyimgano_deploy.runtimes.golden_check import engine_outputs
from pyimgano_deploy.runtimes.loader import open_runtime
from pyimgano_deploy.runtimes.validation import require_self_check

#: ``source_split`` of thresholds calibrated by :func:`recalibrate_bundle`
RECALIBRATION_SPLIT = "recalibration"
#: bundles older than this carry infer_config.json, a second copy of the thresholds
MIN_SCHEMA = (1, 1)
Log = Callable[[str], None]
Tick = Callable[[int], None]


class RecalibrationError(RuntimeError):
    """The images cannot give a threshold (too many failed, none left), or the source bundle
    cannot be recalibrated here; the message names what and what to do. Nothing was written."""


@dataclass(frozen=True)
class RecalibrationOptions:
    """Settings of one recalibration (CLI flags map 1:1); checked on construction."""

    strategy: str = "quantile"  # postprocess.thresholds.ALL_STRATEGIES
    quantile: float = 0.99
    margin: float = 0.1
    target_fpr: float = 0.01
    recalibrate_pixel: bool = True  # the pixel threshold too, when the bundle has one
    pixel_quantile: float | None = None  # None: the bundle's recorded quantile
    precision: str = "fp32"  # the engine that scores the images
    batch_size: int = 8
    threads: int | None = None
    u16_max: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_errors: int = 0  # inputs that may fail (they are left out and listed)
    expected_digest: str | None = None
    public_key: str | None = None
    force: bool = False
    sign_key: str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ALL_STRATEGIES:
            raise ValueError(f"strategy must be one of {list(ALL_STRATEGIES)}, got {self.strategy!r}")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {self.quantile}")
        if not self.margin >= 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0.0 < self.target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        if self.pixel_quantile is not None and not 0.0 < self.pixel_quantile <= 1.0:
            raise ValueError(f"pixel_quantile must be in (0, 1], got {self.pixel_quantile}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size < 1 or self.max_errors < 0:
            raise ValueError(f"batch_size must be >= 1 and max_errors >= 0, got {self.batch_size} and {self.max_errors}")


@dataclass
class ScoredImages:
    """What the engine made of one group of images: scores (float64 ``[n]``) and model-scale maps
    (strided to a bounded pixel sample, or their ``[1, 1]`` maxima, see :func:`score_images`) of
    the scored ones, in input order, with their labels (validation images) and file digests; the
    failed inputs as ``{input, error}``; how many differ from the training images."""

    scores: np.ndarray
    maps: list[np.ndarray]
    labels: np.ndarray
    digests: list[str]
    failed: list[dict[str, str]]
    unlike_training: int
    n_inputs: int


@dataclass
class RecalibrationResult:
    bundle_dir: Path
    digest: str
    from_digest: str
    previous: Thresholds
    thresholds: Thresholds
    normal: ScoredImages
    validation: ScoredImages | None
    parity: dict[str, ParityReport]
    notes: list[str] = field(default_factory=list)
    signed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The ``recalibrate --json`` summary (schema_version 1.0)."""
        def threshold(before: ThresholdCalibration | None, after: ThresholdCalibration | None) -> dict[str, Any] | None:
            if before is None and after is None:
                return None
            return {"before": None if before is None else before.value, "after": None if after is None else after.value,
                    "method": None if after is None else after.method, "recalibrated": after != before}

        def group(scored: ScoredImages) -> dict[str, Any]:
            return {"n_inputs": scored.n_inputs, "n_scored": int(scored.scores.size), "failed": scored.failed,
                    "unlike_training": scored.unlike_training}

        old, new = self.previous.image.value, self.thresholds.image.value
        normal = self.normal.scores
        return {
            "schema_version": "1.0", "ok": True, "bundle": str(self.bundle_dir), "digest": self.digest,
            "from_digest": self.from_digest, "signed": self.signed,
            "thresholds": {"image": threshold(self.previous.image, self.thresholds.image),
                           "pixel": threshold(self.previous.pixel, self.thresholds.pixel)},
            "normal": {**group(self.normal), "above_previous_threshold": int((normal >= old).sum()),
                       "above_new_threshold": int((normal >= new).sum())},
            "validation": None if self.validation is None else {
                **group(self.validation), "at_previous_threshold": confusion(self.validation, old),
                "at_new_threshold": confusion(self.validation, new)},
            "parity": {p: {"max_abs_score": r.max_abs_score, "score_abs": r.tolerance["score_abs"], "max_abs_map": r.max_abs_map,
                           "map_abs": r.tolerance["map_abs"], "labels_identical": r.labels_identical}
                       for p, r in self.parity.items()},
            "notes": list(self.notes),
        }


def confusion(scored: ScoredImages, threshold: float) -> dict[str, Any]:
    """Counts, precision, recall and false-positive rate of ``score >= threshold`` on labelled
    images (label 1 = anomalous); a rate is ``None`` where its denominator is 0."""
    flagged = scored.scores >= threshold
    positive = scored.labels == 1
    tp, fp = int((flagged & positive).sum()), int((flagged & ~positive).sum())
    fn, tn = int((~flagged & positive).sum()), int((~flagged & ~positive).sum())

    def ratio(a: int, b: int) -> float | None:
        return None if b == 0 else a / b

    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "false_positive_rate": ratio(fp, fp + tn)}


def score_images(runtime: Any, paths: Sequence[str], labels: Sequence[int], *, maps: str | None, options: RecalibrationOptions,
                 tick: Tick | None = None) -> ScoredImages:
    """Score ``paths`` with ``runtime`` as ``infer`` would (same reader, preprocessing, tiling);
    a failed input is listed, never scored. ``maps``: the pixel strategy the maps are kept for
    (``None``: none kept). Memory stays bounded either way: for ``"image_max"`` each map is kept
    as its ``[1, 1]`` maximum, all that strategy reads; for ``"pixels"`` as the strided
    :class:`~pyimgano_deploy.postprocess.thresholds.PixelSample` the quantile is taken of, the
    same sample ``train`` takes of the same maps."""
    bundle = runtime.bundle
    scores, kept_labels, digests, failed = [], [], [], []
    maxima: list[np.ndarray] = []
    sample = PixelSample()
    unlike = 0
    items = runtime.infer_iter(list(paths), include_maps="model" if maps is not None else False, u16_max=options.u16_max,
                               max_pixels=options.max_pixels)
    for item, label in zip(items, labels):
        result = item.result
        if tick is not None:
            tick(1)
        if result.error is not None:
            failed.append({"input": item.input, "error": f"{result.error.type} ({result.error.stage}): {result.error.message}"})
            continue
        scores.append(float(result.score))
        kept_labels.append(int(label))
        digests.append(result.source.sha256 if result.source is not None and result.source.sha256 else "")
        if maps is not None:
            anomaly_map = np.asarray(result.anomaly_map, dtype=np.float32)
            if maps == PIXEL_IMAGE_MAX:
                maxima.append(anomaly_map.max(keepdims=True))
            else:
                sample.add(anomaly_map)
        unlike += bool(unlike_training(bundle.trained_colour, bundle.trained_aspect, result.source))
    kept_maps = maxima if maps == PIXEL_IMAGE_MAX else sample.maps
    return ScoredImages(scores=np.asarray(scores, dtype=np.float64), maps=kept_maps, labels=np.asarray(kept_labels, dtype=np.int64),
                        digests=digests, failed=failed, unlike_training=unlike, n_inputs=len(paths))


def images_digest(*groups: ScoredImages) -> str:
    """sha256 (hex) over the sorted file digests of every scored image: which images set the
    thresholds, without listing their paths in the bundle."""
    digests = sorted(d for g in groups for d in g.digests)
    return hashlib.sha256("\n".join(digests).encode("ascii")).hexdigest()


def _pixel_settings(previous: ThresholdCalibration | None, options: RecalibrationOptions) -> tuple[float | None, str]:
    """(quantile, strategy) of the new pixel threshold; quantile ``None``: keep the previous one."""
    if previous is None or not options.recalibrate_pixel:
        return None, PIXEL_ALL
    quantile = options.pixel_quantile if options.pixel_quantile is not None else previous.quantile
    if quantile is None:
        raise ValueError("the bundle's pixel threshold records no quantile; give the pixel quantile to recalibrate it with "
                         "(--pixel-quantile), or keep it (--keep-pixel-threshold)")
    return float(quantile), pixel_strategy_of(previous)


def new_thresholds(previous: Thresholds, normal: ScoredImages, validation: ScoredImages | None,
                   options: RecalibrationOptions) -> Thresholds:
    """The new thresholds from the scored images (the ``previous`` pixel threshold kept when it
    is not recalibrated)."""
    if normal.scores.size == 0:
        raise RecalibrationError("no normal image was scored; nothing to calibrate a threshold on")
    previous_pixel = previous.pixel
    pixel_quantile, pixel_strategy = _pixel_settings(previous_pixel, options)
    found = calibrate_thresholds(
        normal.scores, normal.maps, quantile=options.quantile, pixel_quantile=pixel_quantile, source_split=RECALIBRATION_SPLIT,
        strategy=options.strategy, margin=options.margin, target_fpr=options.target_fpr,
        validation=None if validation is None else (validation.scores, validation.labels), validation_split=VALIDATION_SPLIT,
        pixel_strategy=pixel_strategy)
    return Thresholds(image=found.image, pixel=found.pixel if pixel_quantile is not None else previous_pixel)


def remeasured_parity(bundle: Bundle, threshold: float, options: RecalibrationOptions) -> dict[str, ParityReport]:
    """Each ONNX engine's parity record measured again on this machine under ``threshold``
    (engine outputs on golden.npz against its eager outputs); :class:`ParityError` when one fails."""
    golden = bundle.load_golden()
    reports: dict[str, ParityReport] = {}
    for precision, record in (bundle.manifest.get("parity") or {}).items():
        if record is None:
            continue
        try:
            runtime = open_runtime(bundle, engine="onnx", device="cpu", precision=precision, self_test=False,
                                   intra_op_threads=options.threads)
            try:
                got_score, got_map = engine_outputs(runtime, golden["images"])
            finally:
                runtime.close()
        except (EngineLoadError, EngineRunError) as exc:
            raise RecalibrationError(f"the {precision} engine cannot run its golden images on this machine, so its parity under "
                                     f"the new threshold cannot be measured: {exc}") from exc
        report = compare_outputs(golden["score"], golden["anomaly_map"], got_score, got_map, threshold=threshold, precision=precision)
        if not report.passed:
            raise ParityError(f"the {precision} engine fails its parity gate under the new threshold {threshold:.6g} on this "
                              f"machine; nothing was written.\n{report.table()}")
        reports[precision] = report
    return reports


def _entry(bundle: Bundle, previous: Thresholds, normal: ScoredImages, validation: ScoredImages | None,
           options: RecalibrationOptions) -> dict[str, Any]:
    groups = [normal] + ([validation] if validation is not None else [])
    return {
        "from_digest": bundle.digest,
        "created_at": utc_now_iso(),
        "toolkit_version": __version__,
        "previous_thresholds": previous.to_dict(),
        "engine_precision": options.precision,
        "strategy": options.strategy,
        "images": {"n_inputs": sum(g.n_inputs for g in groups), "n_scored": sum(int(g.scores.size) for g in groups),
                   "n_failed": sum(len(g.failed) for g in groups), "sha256": images_digest(*groups),
                   "n_validation": 0 if validation is None else int(validation.scores.size)},
        "environment": capture_environment(),
    }


def _copy_files(bundle: Bundle, tmp: Path) -> None:
    for rel in listed_files(bundle.manifest):
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle.root / rel, target)


def _check_copies(bundle: Bundle, written: dict[str, Any]) -> None:
    ours, theirs = listed_files(written), listed_files(bundle.manifest)
    differ = sorted(rel for rel in theirs if ours.get(rel, {}).get("sha256") != theirs[rel]["sha256"])
    if differ or set(ours) != set(theirs):
        raise RecalibrationError(f"the copied files differ from {bundle.root}'s ({', '.join(differ[:5]) or 'file list'}); "
                                 "the source bundle changed while it was copied, or the disk is failing")


def _check_source(bundle: Bundle, out: Path, force: bool) -> None:
    if parse_schema_version(bundle.schema_version) < MIN_SCHEMA:
        raise RecalibrationError(f"{bundle.root} has bundle schema {bundle.schema_version}, whose infer_config.json holds a second "
                                 "copy of the thresholds; export the run again with this version, then recalibrate that bundle")
    if bundle.image_threshold is None:
        raise RecalibrationError(f"{bundle.root} has no image threshold to recalibrate")
    target = out.resolve()
    if target == bundle.root or target.is_relative_to(bundle.root) or bundle.root.is_relative_to(target):
        raise UnsafeOutputError(f"--out {out} is the source bundle {bundle.root}, inside it or above it; the source is never "
                                "changed: write the recalibrated bundle elsewhere")
    check_replaceable(out, force)


def notes_for(bundle: Bundle, previous: Thresholds, normal: ScoredImages, options: RecalibrationOptions) -> list[str]:
    """What a reviewer of the new thresholds should know (the summary prints each)."""
    notes = []
    n = int(normal.scores.size)
    q = options.quantile
    if options.strategy == "quantile" and q < 1 and n and n * (1 - q) < 1:
        notes.append(f"{n} normal images: a {q:g} quantile of fewer than {int(np.ceil(1 / (1 - q)))} images lies between "
                     "their highest scores; collect more images, or choose max_margin or target_fpr")
    low = previous.image.score_summary.get("min")
    below = int((normal.scores < low).sum()) if low is not None else 0
    if n and below * 2 > n:
        notes.append(f"{below} of {n} normal images score below the lowest score of the bundle's own calibration images "
                     f"({low:.6g}): images a model was fitted on score low, so a threshold needs images it has not seen")
    if normal.unlike_training:
        notes.append(f"{normal.unlike_training} of the images differ in colour or aspect ratio from the training images "
                     "(input.trained_colour / trained_aspect); the threshold now covers them, the model was not trained on them")
    defects = bundle.defects_block or {}
    if defects.get("pixel_threshold_source") == "normal_quantile":
        notes.append("the bundle's defects block takes its pixel threshold from the golden maps (pixel_threshold_source "
                     "normal_quantile), which come from the training site; it is not changed by recalibration")
    if (bundle.root / "bundle.sig").exists():
        notes.append("the source bundle is signed; its signature does not cover the new manifest (sign with --sign-key)")
    return notes


def recalibrate_bundle(
    bundle_path: str | Path,
    normal_paths: Sequence[str],
    out_dir: str | Path,
    options: RecalibrationOptions = RecalibrationOptions(),
    *,
    validation: Sequence[tuple[str, int]] | None = None,
    log: Log = lambda m: None,
    tick: Tick | None = None,
) -> RecalibrationResult:
    """Write a copy of the bundle at ``bundle_path`` to ``out_dir`` with thresholds calibrated on
    ``normal_paths`` (see the module docstring). ``validation`` = labelled ``(path, label)``
    images (1 = anomalous): the F1-optimal strategy's images, and otherwise scored to report
    precision and recall at both thresholds. ``tick(1)`` after each scored image.

    Raises ``BundleError`` (invalid source, digest, signature), ``UnsafeOutputError`` /
    ``BundleExistsError`` / ``OutputNotWritableError`` for ``out_dir``,
    :class:`RecalibrationError` (more than ``max_errors`` inputs failed, no image scored),
    ``ParityError`` (an engine fails its gate under the new threshold), ``EngineLoadError``.
    """
    if options.strategy == F1_STRATEGY and not validation:
        raise ValueError(f"strategy {F1_STRATEGY!r} needs labelled validation images (a folder with good/ and defect sub-folders)")
    if not normal_paths:
        raise ValueError("no normal images given to calibrate on")
    out = Path(out_dir)
    bundle = read_bundle(bundle_path, expected_digest=options.expected_digest, public_key=options.public_key)
    _check_source(bundle, out, options.force)
    previous = Thresholds(image=bundle.image_threshold, pixel=bundle.pixel_threshold)  # type: ignore[arg-type]
    pixel_quantile, pixel_strategy = _pixel_settings(previous.pixel, options)
    log(f"scoring {len(normal_paths)} normal images" + (f" and {len(validation)} labelled ones" if validation else "")
        + f" with the {options.precision} engine of {bundle.root}")
    runtime = open_runtime(bundle, engine="onnx", device="cpu", precision=options.precision, batch_size=options.batch_size,
                           intra_op_threads=options.threads)
    try:
        normal = score_images(runtime, normal_paths, [0] * len(normal_paths), maps=None if pixel_quantile is None else pixel_strategy,
                              options=options, tick=tick)
        checked = score_images(runtime, [p for p, _ in validation], [y for _, y in validation], maps=None, options=options,
                               tick=tick) if validation else None
    finally:
        runtime.close()
    n_failed = len(normal.failed) + (len(checked.failed) if checked else 0)
    if n_failed > options.max_errors:
        shown = "; ".join(f"{f['input']}: {f['error']}" for f in (normal.failed + (checked.failed if checked else []))[:5])
        raise RecalibrationError(f"{n_failed} input(s) failed, more than --max-errors {options.max_errors} allows; nothing was "
                                 f"written: {shown}")
    thresholds = new_thresholds(previous, normal, checked, options)
    parity = remeasured_parity(bundle, thresholds.image.value, options)
    manifest = copy.deepcopy(bundle.manifest)
    manifest.pop("files", None)
    manifest["schema_version"] = SCHEMA_VERSION
    manifest["thresholds"] = thresholds.to_dict()
    for precision, report in parity.items():
        manifest["parity"][precision] = report.to_manifest()
    manifest["recalibrations"] = [*manifest.get("recalibrations", []), _entry(bundle, previous, normal, checked, options)]
    tmp = open_work_dir(out, log)
    try:
        _copy_files(bundle, tmp)
        written = write_manifest(tmp, manifest)
        _check_copies(bundle, written)
        require_self_check(tmp, "the recalibrated bundle", InvalidBundleError)
        digest = bundle_digest(written)
        install_signed(tmp, out, digest, options.sign_key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RecalibrationResult(bundle_dir=out, digest=digest, from_digest=bundle.digest, previous=previous, thresholds=thresholds,
                               normal=normal, validation=checked, parity=parity, notes=notes_for(bundle, previous, normal, options),
                               signed=options.sign_key is not None)


__all__ = [
    "RECALIBRATION_SPLIT", "RecalibrationError", "RecalibrationOptions", "RecalibrationResult", "ScoredImages", "confusion",
    "images_digest", "new_thresholds", "recalibrate_bundle", "remeasured_parity", "score_images",
]

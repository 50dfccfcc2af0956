"""Run directory → deployment bundle: ONNX (+fp16), parity gate, golden set, manifest.

Everything is written into a hidden work folder beside ``--out`` (marked incomplete), checked
with the same ``validate`` a release pipeline runs, optionally signed, and swapped into place
at the end (:mod:`pyimgano_deploy.bundles.replace`): a failed or killed export never leaves a
bundle that validates, and ``force`` replaces only an existing bundle, never the run itself
or a folder holding anything else.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pyimgano_deploy._version import __version__
from pyimgano_deploy.bundles import SCHEMA_VERSION, capture_environment, save_golden, utc_now_iso, write_manifest
from pyimgano_deploy.bundles import io_contract as io
from pyimgano_deploy.bundles.golden import pack_sources
from pyimgano_deploy.bundles.identity import bundle_digest
from pyimgano_deploy.bundles.parity import ParityError, ParityReport, compare_outputs
from pyimgano_deploy.bundles.replace import (  # noqa: F401  (BundleExistsError, OutputNotWritableError: part of this module's API)
    BundleExistsError,
    OutputNotWritableError,
    UnsafeOutputError,
    check_replaceable,
    install_signed,
    open_work_dir,
)
from pyimgano_deploy.exporters.int8_engine import INT8_CANDIDATES, INT8_FILE, build_int8_engine, resolve_int8_scope
from pyimgano_deploy.exporters.onnx_export import ExportError, export_module, onnx_outputs
from pyimgano_deploy.exporters.run_source import RunSource, resolve_run, sample_golden_inputs
from pyimgano_deploy.exporters.tensorrt_compat import check_tensorrt_compatibility
from pyimgano_deploy.inputs import Preprocess, decode_image
from pyimgano_deploy.inputs.source_info import ASPECT_TOLERANCE, aspect_range, colour_of
from pyimgano_deploy.models.detectors.nn_head_options import PCA_PROJECTION_DIM

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


MAX_SOURCES = 4  # original files kept in golden.npz for the whole-pipeline check
MAX_SOURCE_BYTES = 32 << 20


@dataclass(frozen=True)
class ExportOptions:
    """Settings of one export (CLI flags map 1:1)."""

    precision: str = "fp32"  # "fp16" adds model.fp16.onnx, "int8" model.int8.onnx, next to model.onnx
    int8_calibration: int = 64  # calibration-split images (tiles, for a tiled run) that set the int8 ranges
    int8_method: str = "minmax"
    int8_scope: str = "auto"  # exporters.int8_engine.INT8_SCOPES: nn_head for memory-bank detectors, else backbone
    int8_candidates: int = INT8_CANDIDATES  # rows re-ranked exactly per query by the int8 nearest-neighbour head
    int8_projection: int | None = None  # dimensions of its int8 distances (None: keep 98 % of the bank's variance)
    nn_rerank: int | None = None  # candidates per query of a re-ranked nearest-neighbour head (None: the full head)
    nn_rerank_dim: int = PCA_PROJECTION_DIM  # principal directions of the bank used to find the candidates
    opset: int = 17
    max_batch: int = 32
    golden: int = 8
    golden_seed: int = 0
    tensorrt: bool = False
    force: bool = False
    sign_key: str | None = None  # PEM Ed25519 private key: writes bundle.sig over the digest
    external_data_threshold: int = 2**31 - 2**24

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise ValueError(f"precision must be 'fp32', 'fp16' or 'int8', got {self.precision!r}")
        if self.nn_rerank is not None and not 1 <= self.nn_rerank <= 3840:
            raise ValueError(f"nn_rerank must be in 1..3840 candidates (TensorRT's TopK limit), got {self.nn_rerank}")
        if not 1 <= self.nn_rerank_dim <= 4096:
            raise ValueError(f"nn_rerank_dim must be in 1..4096, got {self.nn_rerank_dim}")
        from pyimgano_deploy.exporters.int8_engine import INT8_SCOPES

        if self.int8_scope not in INT8_SCOPES:
            raise ValueError(f"int8_scope must be one of {list(INT8_SCOPES)}, got {self.int8_scope!r}")
        if not 1 <= self.int8_candidates <= 3840:
            raise ValueError(f"int8_candidates must be in 1..3840, got {self.int8_candidates}")
        if self.int8_projection is not None and not 1 <= self.int8_projection <= 4096:
            raise ValueError(f"int8_projection must be in 1..4096 dimensions (or None: auto), got {self.int8_projection}")
        if not 1 <= self.int8_calibration <= 4096:
            raise ValueError(f"int8_calibration must be in 1..4096 images, got {self.int8_calibration}")
        if self.opset < 17:
            raise ValueError(f"opset must be >= 17, got {self.opset}")
        if not 1 <= self.max_batch <= 4096:
            raise ValueError(f"max_batch must be in 1..4096, got {self.max_batch}")
        if not 2 <= self.golden <= 256:
            raise ValueError(f"golden must be in 2..256 images, got {self.golden}")


@dataclass
class ExportResult:
    bundle_dir: Path
    manifest: dict[str, Any]
    digest: str
    parity: dict[str, ParityReport]
    timings_s: dict[str, float] = field(default_factory=dict)
    compat: dict[str, Any] = field(default_factory=dict)


def golden_batch(source: RunSource, preprocess: Preprocess, n: int, seed: int) -> np.ndarray:
    """Preprocessed uint8 ``[n, H, W, 3]`` batch of a seeded sample of calibration images.

    For a tiled run the engine sees tiles, so the golden set holds tiles of the sampled
    calibration images (the centre-most tile of each, then further tiles in grid order)."""
    paths = sample_golden_inputs(source.calibration_inputs, n, seed)
    tiling = source.infer_config.get("tiling")
    if not tiling:
        return preprocess.batch([source.read_calibration(p)[0] for p in paths])
    from pyimgano_deploy.runtimes.tiling import TilingSpec, tile_image

    spec = TilingSpec.from_dict(tiling)
    per_image = [tile_image(source.read_calibration(p)[0], spec)[1] for p in paths]
    tiles: list[np.ndarray] = []
    for k in range(max(len(t) for t in per_image)):
        for image_tiles in per_image:
            order = sorted(range(len(image_tiles)), key=lambda i: abs(i - (len(image_tiles) - 1) / 2))
            if k < len(order) and len(tiles) < n:
                tiles.append(image_tiles[order[k]])
    return preprocess.batch(tiles)


def golden_source_paths(source: RunSource, n: int, seed: int) -> list[str]:
    """The calibration files the golden set keeps whole (up to :data:`MAX_SOURCES`; fewer when
    their bytes pass :data:`MAX_SOURCE_BYTES`)."""
    return sample_golden_inputs(source.calibration_inputs, n, seed)[:MAX_SOURCES]


def golden_sources(source: RunSource, detector: Any, n: int, seed: int) -> dict[str, np.ndarray]:
    """The first few golden calibration files, byte for byte, with their eager scores through the
    whole pipeline (read, preprocess, tiling and reduction), for :func:`~.bundles.golden.pack_sources`."""
    paths = golden_source_paths(source, n, seed)
    files: list[bytes] = []
    for path in paths:
        data = Path(path).read_bytes()
        if files and sum(map(len, files)) + len(data) > MAX_SOURCE_BYTES:
            break
        files.append(data)
    images = [decode_image(data, name=path, u16_max=source.u16_max) for data, path in zip(files, paths)]
    tiling = source.infer_config.get("tiling")
    if not tiling:
        scores = detector.predict_batch(detector.preprocess.batch(images))[0]
    else:
        from pyimgano_deploy.runtimes.tiling import TilingSpec, score_tiled

        spec = TilingSpec.from_dict(tiling)

        def tile_maps(tiles: list[np.ndarray]) -> np.ndarray:
            return detector.predict_batch(detector.preprocess.batch(tiles))[1]

        scores = np.array([score_tiled(image, spec, tile_maps)[0] for image in images], dtype=np.float32)
    return pack_sources(files, np.asarray(scores, dtype=np.float32))


#: calibration images surveyed for ``input.trained_colour`` and ``input.trained_aspect``, evenly
#: spaced over the split
SURVEY_IMAGES = 64


@dataclass(frozen=True)
class CalibrationSurvey:
    """What the run's calibration images (the held-out normals, from the camera the detector was
    fitted on) were: ``colour`` (one of ``COLOURS``) and ``aspect`` (``[min, max]`` width / height)."""

    colour: str
    aspect: list[float]


def survey_calibration(source: RunSource, also: Sequence[str] = ()) -> CalibrationSurvey:
    """Survey up to :data:`SURVEY_IMAGES` calibration images, evenly spaced, and every path of
    ``also`` (the golden sources, whose files ``validate`` holds to the survey)."""
    paths = source.calibration_inputs
    step = max(1, -(-len(paths) // SURVEY_IMAGES))
    infos = [source.read_calibration(p)[1] for p in dict.fromkeys([*paths[::step], *also])]
    return CalibrationSurvey(colour_of([bool(i.grey) for i in infos]),
                             aspect_range((int(i.width), int(i.height)) for i in infos))


def _parity_or_raise(report: ParityReport, label: str) -> None:
    if not report.passed:
        raise ParityError(f"parity gate failed for {label}; nothing was written.\n{report.table()}")


def _engine_threshold(source: RunSource) -> float | None:
    image = (source.infer_config.get("thresholds") or {}).get("image")
    return None if image is None else float(image["value"])


def _manifest(source: RunSource, detector: Any, engines: list[dict], parity: dict[str, ParityReport], n_golden: tuple[int, int], compat: dict,
              nn_head: dict[str, Any], survey: CalibrationSurvey) -> dict[str, Any]:
    h, w = detector.input_size
    cfg = source.infer_config
    thresholds = cfg.get("thresholds") or {}
    metrics = source.report.get("metrics", {})
    return {
        "schema_version": SCHEMA_VERSION,
        "toolkit": {"name": "pyimgano-deploy", "version": __version__},
        "created_at": utc_now_iso(),
        "model": {"name": detector.model_name, "family": detector.family, "parameters": detector.hyperparameters(), "fitted": detector.fit_summary,
                  "fp32_scopes": list(detector.inference_module.fp32_scopes), "nn_head": nn_head},
        "input": {"name": io.INPUT_NAME, "layout": io.INPUT_LAYOUT, "dtype": io.INPUT_DTYPE, "channels": io.INPUT_CHANNELS, "height": h, "width": w,
                  "preprocess": detector.preprocess.to_dict(),
                  io.TRAINED_COLOUR_KEY: survey.colour, io.TRAINED_ASPECT_KEY: survey.aspect,
                  **({} if source.u16_max is None else {io.U16_MAX_KEY: source.u16_max})},
        "outputs": [
            {"name": io.OUTPUT_NAMES[0], "shape": ["batch"], "dtype": io.OUTPUT_DTYPE},
            {"name": io.OUTPUT_NAMES[1], "shape": ["batch", h, w], "dtype": io.OUTPUT_DTYPE},
        ],
        "engines": engines,
        "thresholds": {"image": thresholds.get("image"), "pixel": thresholds.get("pixel")},
        "defects": cfg.get("defects"),
        "tiling": cfg.get("tiling"),
        "environment": capture_environment(),
        "source_run": {"path": str(source.root.resolve()), "config_sha256": source.config_sha256, "metrics": metrics},
        "parity": {p: r.to_manifest() for p, r in parity.items()},
        "golden": {"file": "golden.npz", "n_images": n_golden[0], "n_sources": n_golden[1]},
        "tensorrt_compatibility": compat,
    }


def check_output(out: Path, run_root: Path, force: bool) -> None:
    """Refuse an ``--out`` this export may not write (nothing is touched): an existing folder
    without ``force``, the run or a folder inside it or above it, or anything but a bundle."""
    target, run = out.resolve(), run_root.resolve()
    if target == run or target.is_relative_to(run):
        raise UnsafeOutputError(f"--out {out} is the run directory {run_root} or inside it; write the bundle elsewhere")
    if run.is_relative_to(target):
        raise UnsafeOutputError(f"--out {out} contains the run directory {run_root}; replacing it would delete the run")
    check_replaceable(out, force)


def _self_check(tmp: Path) -> None:
    """Run ``validate`` on the finished work folder: export ships only what validate passes."""
    from pyimgano_deploy.runtimes.validation import require_self_check

    require_self_check(tmp, "the written bundle", ExportError)


def export_run(run_dir: str | Path, out_dir: str | Path, options: ExportOptions = ExportOptions(), *, category: str | None = None, log: Log = _stderr) -> ExportResult:
    """Export the run at ``run_dir`` to a bundle at ``out_dir`` (see module docstring).

    Raises :class:`BundleExistsError` when ``out_dir`` exists without ``force``,
    :class:`OutputNotWritableError` when its folder cannot be created or written in,
    :class:`~pyimgano_deploy.bundles.replace.UnsafeOutputError` when ``out_dir`` is not a
    bundle that may be replaced, :class:`~pyimgano_deploy.bundles.parity.ParityError` when
    the gate fails.
    """
    out = Path(out_dir)
    source = resolve_run(run_dir, category)
    check_output(out, source.root, options.force)
    tmp = open_work_dir(out, log)  # before the slow part: an unwritable --out fails at once
    try:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        detector = source.load_detector()
        golden = golden_batch(source, detector.preprocess, options.golden, options.golden_seed)
        eager_scores, eager_maps = detector.predict_batch(golden)
        sources = golden_sources(source, detector, options.golden, options.golden_seed)
        timings["load_and_golden"] = time.perf_counter() - t0
        threshold = _engine_threshold(source)
        module, nn_head = _engine_module(detector, options)
        int8_scope = resolve_int8_scope(options.int8_scope, detector.inference_module) if options.precision == "int8" else None
        engines, parity, compat = [], {}, {}
        precisions = ["fp32"] + ([options.precision] if options.precision != "fp32" else [])
        for precision in precisions:
            name = ENGINE_FILES[precision]
            t = time.perf_counter()
            if precision == "int8":
                info, calibration = build_int8_engine(
                    detector.inference_module if int8_scope == "nn_head" else module, golden, tmp, scope=int8_scope,
                    candidates=options.int8_candidates, projection_dim=options.int8_projection, opset=options.opset, method=options.int8_method, log=log,
                    calibration=lambda: golden_batch(source, detector.preprocess, min(options.int8_calibration, len(source.calibration_inputs)), options.golden_seed))
            else:
                log(f"exporting {name} ({precision}, opset {options.opset}) ...")
                info = export_module(module, golden, tmp / name, precision=precision, opset=options.opset, external_data_threshold=options.external_data_threshold)
            timings[f"export_{precision}"] = time.perf_counter() - t
            t = time.perf_counter()
            xs, xm = onnx_outputs(tmp / name, golden)
            report = compare_outputs(eager_scores, eager_maps, xs, xm, threshold=threshold, precision=precision)
            timings[f"parity_{precision}"] = time.perf_counter() - t
            log(f"parity {precision}: max|Δscore|={report.max_abs_score:.2e}, max|Δmap|={report.max_abs_map:.2e}, labels identical={report.labels_identical}")
            _parity_or_raise(report, name)
            parity[precision] = report
            cr = check_tensorrt_compatibility(tmp / name, max_batch=options.max_batch)
            compat[name] = {"ok": cr.ok, "problems": list(cr.problems)}
            if not cr.ok and precision != "int8":  # TensorRT builds from model.onnx; the int8 file is ONNX Runtime's
                log(f"warning: {name} may not build with TensorRT:\n{cr.format_table()}")
            engines.append(info.engine_entry(options.max_batch) | ({"calibration": calibration} if precision == "int8" else {}))
        save_golden(tmp / "golden.npz", golden, eager_scores, eager_maps, sources)
        n_golden = (len(golden), len(sources["source_score"]))
        manifest = write_manifest(tmp, _manifest(source, detector, engines, parity, n_golden, compat, nn_head,
                                                 survey_calibration(source, golden_source_paths(source, options.golden, options.golden_seed))))
        if manifest["input"][io.TRAINED_COLOUR_KEY] == "mixed":
            log("warning: the run's calibration images mix grey and colour ones (input.trained_colour: mixed), so the runtime "
                "cannot tell a camera change; check the data set, or train on one kind")
        lo, hi = manifest["input"][io.TRAINED_ASPECT_KEY]
        if hi > lo * (1 + ASPECT_TOLERANCE) ** 2:
            log(f"warning: the run's calibration images have aspect ratios (width / height) from {lo:.4g} to {hi:.4g}; the model "
                f"input is {detector.input_size[1]} × {detector.input_size[0]}, so some are stretched to it, and the runtime "
                "warns only for inputs outside that whole range (input.trained_aspect)")
        if options.tensorrt:
            manifest = _build_tensorrt(tmp, manifest, options, log)
        t = time.perf_counter()
        _self_check(tmp)
        timings["self_check"] = time.perf_counter() - t
        digest = bundle_digest(manifest)
        install_signed(tmp, out, digest, options.sign_key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    timings["total"] = time.perf_counter() - t0
    return ExportResult(bundle_dir=out, manifest=manifest, digest=digest, parity=parity, timings_s=timings, compat=compat)


ENGINE_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": INT8_FILE}


def _engine_module(detector: Any, options: ExportOptions) -> tuple[Any, dict[str, Any]]:
    """The module to export and its ``model.nn_head`` record: the detector's own, or a copy with
    re-ranked nearest-neighbour heads (the eager golden outputs always come from the full head)."""
    if options.nn_rerank is None:
        return detector.inference_module, {"kind": "full"}
    from pyimgano_deploy.models.detectors.reranked_distance import reranked_copy

    module = reranked_copy(detector.inference_module, candidates=options.nn_rerank, projection_dim=options.nn_rerank_dim)
    return module, {"kind": "reranked", "candidates": options.nn_rerank, "projection_dim": options.nn_rerank_dim,
                    "candidates_from": "the bank's leading principal directions (fp32)", "exact_distance": "fp32, candidates only"}


def _build_tensorrt(bundle_dir: Path, manifest: dict[str, Any], options: ExportOptions, log: Log) -> dict[str, Any]:
    from pyimgano_deploy.bundles import sha256_file
    from pyimgano_deploy.bundles.engines import updated_manifest
    from pyimgano_deploy.bundles.precision_scopes import manifest_fp32_scopes
    from pyimgano_deploy.exporters.tensorrt_build import build_engine

    log("building TensorRT engine ...")
    info = build_engine(bundle_dir / "model.onnx", bundle_dir, fp16=options.precision == "fp16", fp32_scopes=manifest_fp32_scopes(manifest), max_batch=options.max_batch, opt_batch=min(8, options.max_batch))
    new = updated_manifest(manifest, info.to_manifest_entry(sha256_file(bundle_dir / info.file)))
    new.pop("files", None)
    return write_manifest(bundle_dir, new)

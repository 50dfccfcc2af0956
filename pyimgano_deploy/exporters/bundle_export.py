"""Run directory → deployment bundle: ONNX (+fp16), parity gate, golden set, manifest.

Everything is written into a temporary sibling directory that is renamed into place at the
end, so a failed export never leaves a half bundle behind.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pyimgano_deploy._version import __version__
from pyimgano_deploy.bundles import INFER_CONFIG_NAME, capture_environment, save_golden, utc_now_iso, write_manifest
from pyimgano_deploy.exporters.onnx_export import OUTPUT_NAMES, export_module, onnx_outputs
from pyimgano_deploy.exporters.parity import ParityError, ParityReport, compare_outputs
from pyimgano_deploy.exporters.run_source import RunSource, resolve_run, sample_golden_inputs
from pyimgano_deploy.exporters.tensorrt_compat import check_tensorrt_compatibility
from pyimgano_deploy.inputs import Preprocess, read_image

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BundleExistsError(FileExistsError):
    """The output directory exists and ``force`` was not given."""


@dataclass(frozen=True)
class ExportOptions:
    """Settings of one export (CLI flags map 1:1)."""

    precision: str = "fp32"  # "fp16" adds model.fp16.onnx next to model.onnx
    opset: int = 17
    max_batch: int = 32
    golden: int = 8
    golden_seed: int = 0
    tensorrt: bool = False
    force: bool = False
    external_data_threshold: int = 2**31 - 2**24

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
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
        return preprocess.batch([read_image(p) for p in paths])
    from pyimgano_deploy.runtimes.tiling import TilingSpec, tile_image

    spec = TilingSpec.from_dict(tiling)
    per_image = [tile_image(read_image(p), spec)[1] for p in paths]
    tiles: list[np.ndarray] = []
    for k in range(max(len(t) for t in per_image)):
        for image_tiles in per_image:
            order = sorted(range(len(image_tiles)), key=lambda i: abs(i - (len(image_tiles) - 1) / 2))
            if k < len(order) and len(tiles) < n:
                tiles.append(image_tiles[order[k]])
    return preprocess.batch(tiles)


def _parity_or_raise(report: ParityReport, label: str) -> None:
    if not report.passed:
        raise ParityError(f"parity gate failed for {label}; nothing was written.\n{report.table()}")


def _engine_threshold(source: RunSource) -> float | None:
    image = (source.infer_config.get("thresholds") or {}).get("image")
    return None if image is None else float(image["value"])


def _manifest(source: RunSource, detector: Any, engines: list[dict], parity: dict[str, ParityReport], n_golden: int, compat: dict) -> dict[str, Any]:
    h, w = detector.input_size
    cfg = source.infer_config
    thresholds = cfg.get("thresholds") or {}
    metrics = source.report.get("metrics", {})
    return {
        "schema_version": "1.0",
        "toolkit": {"name": "pyimgano-deploy", "version": __version__},
        "created_at": utc_now_iso(),
        "model": {"name": detector.model_name, "family": detector.family, "parameters": detector.hyperparameters(), "fitted": detector.fit_summary},
        "input": {"name": "images", "layout": "NHWC", "dtype": "uint8", "channels": "RGB", "height": h, "width": w,
                  "preprocess": detector.preprocess.to_dict()},
        "outputs": [
            {"name": OUTPUT_NAMES[0], "shape": ["batch"], "dtype": "float32"},
            {"name": OUTPUT_NAMES[1], "shape": ["batch", h, w], "dtype": "float32"},
        ],
        "engines": engines,
        "thresholds": {"image": thresholds.get("image"), "pixel": thresholds.get("pixel")},
        "defects": cfg.get("defects"),
        "tiling": cfg.get("tiling"),
        "environment": capture_environment(),
        "source_run": {"path": str(source.root.resolve()), "config_sha256": source.config_sha256, "metrics": metrics},
        "parity": {p: r.to_manifest() for p, r in parity.items()},
        "golden": {"file": "golden.npz", "n_images": n_golden},
        "tensorrt_compatibility": compat,
    }


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def export_run(run_dir: str | Path, out_dir: str | Path, options: ExportOptions = ExportOptions(), *, category: str | None = None, log: Log = _stderr) -> ExportResult:
    """Export the run at ``run_dir`` to a bundle at ``out_dir`` (see module docstring).

    Raises :class:`BundleExistsError` when ``out_dir`` exists without ``force``,
    :class:`~pyimgano_deploy.exporters.parity.ParityError` when the gate fails.
    """
    out = Path(out_dir)
    if out.exists() and not options.force:
        raise BundleExistsError(f"{out} already exists; pass --force to replace it")
    source = resolve_run(run_dir, category)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    detector = source.load_detector()
    golden = golden_batch(source, detector.preprocess, options.golden, options.golden_seed)
    eager_scores, eager_maps = detector.predict_batch(golden)
    timings["load_and_golden"] = time.perf_counter() - t0
    threshold = _engine_threshold(source)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        engines, parity, compat = [], {}, {}
        precisions = ["fp32"] + (["fp16"] if options.precision == "fp16" else [])
        for precision in precisions:
            name = "model.onnx" if precision == "fp32" else "model.fp16.onnx"
            t = time.perf_counter()
            log(f"exporting {name} ({precision}, opset {options.opset}) ...")
            info = export_module(detector.inference_module, golden, tmp / name, precision=precision, opset=options.opset, external_data_threshold=options.external_data_threshold)
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
            if not cr.ok:
                log(f"warning: {name} may not build with TensorRT:\n{cr.format_table()}")
            engines.append(info.engine_entry(options.max_batch))
        save_golden(tmp / "golden.npz", golden, eager_scores, eager_maps)
        (tmp / INFER_CONFIG_NAME).write_text(json.dumps(source.infer_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        manifest = write_manifest(tmp, _manifest(source, detector, engines, parity, len(golden), compat))
        if options.tensorrt:
            manifest = _build_tensorrt(tmp, manifest, options, log)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    timings["total"] = time.perf_counter() - t0
    return ExportResult(bundle_dir=out, manifest=manifest, parity=parity, timings_s=timings, compat=compat)


def _build_tensorrt(bundle_dir: Path, manifest: dict[str, Any], options: ExportOptions, log: Log) -> dict[str, Any]:
    from pyimgano_deploy.bundles import sha256_file
    from pyimgano_deploy.cli.build_engine_cmd import updated_manifest
    from pyimgano_deploy.exporters.tensorrt_build import build_engine

    log("building TensorRT engine ...")
    info = build_engine(bundle_dir / "model.onnx", bundle_dir, fp16=options.precision == "fp16", max_batch=options.max_batch, opt_batch=min(8, options.max_batch))
    new = updated_manifest(manifest, info, sha256_file(bundle_dir / info.file))
    new.pop("files", None)
    return write_manifest(bundle_dir, new)

"""The run directory (ARCHITECTURE §3): file names, writers, schema and ``validate_run_dir``.

One run::

    config.json              resolved TrainConfig
    report.json              schema_version, timestamp, toolkit, dataset, splits, metrics,
                             thresholds (+ provenance), timings_s, tiling, defects(_check)
    environment.json         capture_environment() + torch/CUDA
    per_image.jsonl          one line per calibration and test image
    model/detector.json      Detector.save
    model/state.safetensors
    artifacts/infer_config.json
    maps/*.npy               optional (output.save_maps), float32 model-scale maps
    report.html              optional (output.report)

``mvtec`` with category ``all`` writes one such run per category under
``categories/<cat>/`` plus ``config.json`` and ``summary.json`` at the top.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pyimgano_deploy.postprocess.thresholds import VALIDATION_SPLIT  # labelled images of an F1-optimal threshold
from pyimgano_deploy.checks import expected

SCHEMA_VERSION = "1.0"
CONFIG = "config.json"
REPORT = "report.json"
ENVIRONMENT = "environment.json"
PER_IMAGE = "per_image.jsonl"
MODEL_DIR = "model"
DETECTOR_JSON = "model/detector.json"
DETECTOR_STATE = "model/state.safetensors"
INFER_CONFIG = "artifacts/infer_config.json"
CHECKPOINT_FILE = "model/checkpoint.safetensors"  # trained detectors, while training (removed when the run finishes)
MAPS_DIR = "maps"
REPORT_HTML = "report.html"
SUMMARY = "summary.json"
CATEGORIES_DIR = "categories"
REQUIRED_FILES = (CONFIG, REPORT, ENVIRONMENT, PER_IMAGE, DETECTOR_JSON, DETECTOR_STATE, INFER_CONFIG)
# What --force removes before writing (nothing else in the directory is touched).
OWNED = (*REQUIRED_FILES, SUMMARY, REPORT_HTML, "model", "artifacts", MAPS_DIR, CATEGORIES_DIR)

REPORT_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema_version": str, "timestamp": str, "toolkit": dict, "name": str, "recipe": str, "model": dict,
    "dataset": dict, "splits": dict, "metrics": dict, "thresholds": dict, "timings_s": dict,
    "tiling": (dict, type(None)), "defects": (dict, type(None)), "defects_check": (dict, type(None)),
}
PER_IMAGE_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema_version": str, "index": int, "input": str, "split": str, "y_true": int, "defect_type": str,
    "score": (int, float), "label": int, "threshold": (int, float), "map": (str, type(None)),
}
SPLITS = ("calibration", VALIDATION_SPLIT, "test")


class RunDirExistsError(FileExistsError):
    """The output directory is not empty and --force was not given."""


class NothingToResumeError(ValueError):
    """``--resume`` named a folder without an interrupted run's checkpoint (a usage error)."""


def json_safe(obj: Any) -> Any:
    """NaN/inf → None, numpy scalars/arrays → Python, tuples → lists (recursively)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(json_safe(rec), sort_keys=True, allow_nan=False) + "\n")
    return path


def prepare_out_dir(path: str | Path, *, force: bool) -> Path:
    """Create ``path``; refuse a non-empty one unless ``force`` (then remove only run artefacts)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise RunDirExistsError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise RunDirExistsError(f"--out {out} exists and is not empty; pass --force to overwrite the run artefacts in it")
        for name in OWNED:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def resume_out_dir(path: str | Path) -> Path:
    """The run directory of an interrupted trained run, for ``--resume`` (its checkpoint must exist)."""
    out = Path(path)
    if not (out / CHECKPOINT_FILE).is_file():
        raise NothingToResumeError(f"--resume: {out / CHECKPOINT_FILE} does not exist; nothing to resume in --out {out} "
                                "(a finished run removes its checkpoint; start a new run with --force)")
    return out


def capture_run_environment() -> dict[str, Any]:
    """``capture_environment()`` plus torch's version and what it sees of CUDA."""
    import torch

    from pyimgano_deploy.bundles.environment import capture_environment

    env = capture_environment()
    cuda = bool(torch.cuda.is_available())
    env["torch"] = {
        "version": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "num_threads": torch.get_num_threads(),
    }
    env["schema_version"] = SCHEMA_VERSION
    return env


def build_infer_config(detector: Any, thresholds: dict[str, Any], tiling: dict | None, defects: dict | None) -> dict[str, Any]:
    """``artifacts/infer_config.json`` (INTERFACES.md schema)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": detector.model_name, "family": detector.family},
        "preprocess": detector.preprocess.to_dict(),
        "thresholds": {"image": thresholds.get("image"), "pixel": thresholds.get("pixel")},
        "tiling": tiling,
        "defects": defects,
    }


# ---------------------------------------------------------------------------- validation
def _read_json(root: Path, rel: str, problems: list[str]) -> dict[str, Any] | None:
    path = root / rel
    if not path.is_file():
        problems.append(f"{rel}: missing")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"{rel}: not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{rel}: expected a JSON object, got {type(data).__name__}")
        return None
    if str(data.get("schema_version", "")).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        problems.append(f"{rel}: schema_version {data.get('schema_version')!r}, expected major {SCHEMA_VERSION.split('.')[0]}")
    return data


def _check_types(data: dict[str, Any], spec: dict[str, Any], where: str, problems: list[str]) -> None:
    for key, types in spec.items():
        if key not in data:
            problems.append(f"{where}: missing key '{key}'")
        elif (isinstance(data[key], bool) and bool not in (types if isinstance(types, tuple) else (types,))) or not isinstance(data[key], types):
            names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            problems.append(expected(f"{where}.{key}", names, data[key]))


def _check_threshold(rec: Any, where: str, problems: list[str], *, nullable: bool) -> float | None:
    from pyimgano_deploy.postprocess.thresholds import THRESHOLD_SOURCE_SPLITS, ThresholdCalibration

    if rec is None:
        if not nullable:
            problems.append(f"{where}: missing (null)")
        return None
    try:
        cal = ThresholdCalibration.from_dict(rec)
    except (TypeError, ValueError) as exc:
        problems.append(f"{where}: {exc}")
        return None
    if cal.source_split not in THRESHOLD_SOURCE_SPLITS or cal.n_images < 1 or not cal.code_path or not cal.score_summary:
        problems.append(f"{where}: provenance incomplete (source_split one of {list(THRESHOLD_SOURCE_SPLITS)}, "
                        "n_images >= 1, code_path, score_summary)")
    return cal.value


def _check_report(report: dict[str, Any], problems: list[str]) -> None:
    _check_types(report, REPORT_KEYS, REPORT, problems)
    metrics = report.get("metrics") or {}
    image = metrics.get("image") if isinstance(metrics, dict) else None
    if not isinstance(image, dict) or not all(k in image for k in ("auroc", "ap", "f1", "confusion", "threshold")):
        problems.append(f"{REPORT}: metrics.image must hold auroc, ap, f1, confusion, threshold")
    splits = report.get("splits") or {}
    fit, cal = splits.get("fit"), splits.get("calibration")
    if not isinstance(fit, list) or not isinstance(cal, list) or not fit or not cal:
        problems.append(f"{REPORT}: splits.fit and splits.calibration must be non-empty lists of inputs")
    elif set(fit) & set(cal):
        problems.append(f"{REPORT}: splits.fit and splits.calibration overlap ({sorted(set(fit) & set(cal))[:3]})")


def _check_infer_config(cfg: dict[str, Any], report: dict[str, Any] | None, problems: list[str]) -> None:
    from pyimgano_deploy.inputs import Preprocess
    from pyimgano_deploy.postprocess.defects import DefectsConfig
    from pyimgano_deploy.runtimes.tiling import TilingSpec

    where = INFER_CONFIG
    model = cfg.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(model.get("family"), str):
        problems.append(f"{where}: model must be {{name: str, family: str}}")
    try:
        Preprocess.from_dict(cfg.get("preprocess"))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        problems.append(f"{where}: preprocess: {exc}")
    thresholds = cfg.get("thresholds")
    if not isinstance(thresholds, dict):
        problems.append(f"{where}: thresholds must be {{image, pixel}}")
        thresholds = {}
    _check_threshold(thresholds.get("image"), f"{where}: thresholds.image", problems, nullable=False)
    _check_threshold(thresholds.get("pixel"), f"{where}: thresholds.pixel", problems, nullable=True)
    if report is not None and thresholds != (report.get("thresholds") or {}):
        problems.append(f"{where}: thresholds differ from {REPORT} thresholds")
    for key, parse in (("tiling", TilingSpec.from_dict), ("defects", DefectsConfig.from_dict)):
        if key not in cfg:
            problems.append(f"{where}: missing key '{key}' (null when unused)")
        elif cfg[key] is not None:
            try:
                parse(cfg[key])
            except (TypeError, ValueError) as exc:
                problems.append(f"{where}: {key}: {exc}")


def _check_per_image(root: Path, report: dict[str, Any] | None, problems: list[str]) -> None:
    path = root / PER_IMAGE
    if not path.is_file():
        return
    image_thr = ((report or {}).get("thresholds") or {}).get("image") or {}
    seen: dict[str, list[str]] = {s: [] for s in SPLITS}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{PER_IMAGE}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        before = len(problems)
        _check_types(rec, PER_IMAGE_KEYS, where, problems)
        if len(problems) > before:
            continue
        if rec["split"] not in SPLITS or rec["y_true"] not in (0, 1) or rec["label"] not in (0, 1):
            problems.append(f"{where}: split must be one of {list(SPLITS)}, y_true and label 0 or 1")
            continue
        if "value" in image_thr and rec["threshold"] != image_thr["value"]:
            problems.append(f"{where}: threshold {rec['threshold']} != report thresholds.image.value {image_thr['value']}")
        if rec["label"] != int(rec["score"] >= rec["threshold"]):
            problems.append(f"{where}: label {rec['label']} disagrees with score >= threshold")
        if rec["map"] is not None and not (root / rec["map"]).is_file():
            problems.append(f"{where}: map file {rec['map']} is missing")
        seen[rec["split"]].append(rec["input"])
    splits = (report or {}).get("splits") or {}
    for split in ("calibration", VALIDATION_SPLIT):
        if report is not None and sorted(seen[split]) != sorted(splits.get(split) or []):
            problems.append(f"{PER_IMAGE}: {split} records differ from {REPORT} splits.{split}")
    n_test = (((report or {}).get("dataset") or {}).get("n_test"))
    if n_test is not None and len(seen["test"]) != n_test:
        problems.append(f"{PER_IMAGE}: {len(seen['test'])} test records, {REPORT} dataset.n_test is {n_test}")


def _validate_single(root: Path, prefix: str = "") -> list[str]:
    problems: list[str] = []
    for rel in REQUIRED_FILES:
        if not (root / rel).is_file():
            problems.append(f"{rel}: missing")
    if (root / DETECTOR_STATE).is_file() and (root / DETECTOR_STATE).stat().st_size == 0:
        problems.append(f"{DETECTOR_STATE}: empty file")
    report = _read_json(root, REPORT, problems) if (root / REPORT).is_file() else None
    if report is not None:
        _check_report(report, problems)
    infer_cfg = _read_json(root, INFER_CONFIG, problems) if (root / INFER_CONFIG).is_file() else None
    if infer_cfg is not None:
        _check_infer_config(infer_cfg, report, problems)
    env = _read_json(root, ENVIRONMENT, problems) if (root / ENVIRONMENT).is_file() else None
    if env is not None and not all(k in env for k in ("python", "packages", "torch")):
        problems.append(f"{ENVIRONMENT}: must hold python, packages and torch")
    if (root / DETECTOR_JSON).is_file():
        _read_json(root, DETECTOR_JSON, problems)
    config = _read_json(root, CONFIG, problems) if (root / CONFIG).is_file() else None
    if config is not None:
        from pyimgano_deploy.workbench.config import ConfigError, TrainConfig

        try:
            resolved = TrainConfig.from_dict(config)
        except ConfigError as exc:
            problems.append(f"{CONFIG}: {exc}")
        else:
            if resolved.output.report and not (root / REPORT_HTML).is_file():
                problems.append(f"{REPORT_HTML}: missing (output.report is true)")
            if infer_cfg is not None and infer_cfg.get("tiling") != resolved.tiling:
                problems.append(f"{INFER_CONFIG}: tiling differs from {CONFIG} tiling")
            if infer_cfg is not None and _resolved_defects(infer_cfg.get("defects")) != resolved.defects:
                problems.append(f"{INFER_CONFIG}: defects differ from {CONFIG} defects")
    _check_per_image(root, report, problems)
    return [f"{prefix}{p}" for p in problems]


def _resolved_defects(block: Any) -> Any:
    """A run's defects block with every knob filled in (a run written before a knob existed
    has none of it), so that it compares with the resolved ``config.json``; anything that is
    not a valid block is returned as it is, to differ."""
    from pyimgano_deploy.postprocess.defects import DefectsConfig

    if not isinstance(block, dict):
        return block
    try:
        return DefectsConfig.from_dict(block).to_dict()
    except (TypeError, ValueError):
        return block


def validate_run_dir(path: str | Path) -> list[str]:
    """Problems with the run directory at ``path`` (empty list: valid). Handles single runs and
    multi-category runs (``summary.json`` + ``categories/<cat>/``)."""
    root = Path(path)
    if not root.is_dir():
        return [f"{root}: not a directory"]
    if not (root / SUMMARY).is_file():
        return _validate_single(root)
    problems: list[str] = []
    summary = _read_json(root, SUMMARY, problems)
    if summary is None:
        return problems
    cats = summary.get("categories")
    if not isinstance(cats, dict) or not cats:
        return problems + [f"{SUMMARY}: categories must be a non-empty object"]
    if not (root / CONFIG).is_file():
        problems.append(f"{CONFIG}: missing")
    for cat in sorted(cats):
        sub = root / CATEGORIES_DIR / cat
        if not sub.is_dir():
            problems.append(f"{CATEGORIES_DIR}/{cat}: missing")
            continue
        problems.extend(_validate_single(sub, prefix=f"{CATEGORIES_DIR}/{cat}/"))
    return problems

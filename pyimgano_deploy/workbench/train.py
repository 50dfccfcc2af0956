"""The recipe runner: data → split → fit → calibrate → evaluate → run directory.

``run_training(config)`` runs one category, or every category of an MVTec tree when
``dataset.category`` is ``"all"`` (one run directory per category under
``<out>/categories/<cat>/`` plus ``summary.json``), and returns a JSON-ready summary.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pyimgano_deploy._version import __version__
from pyimgano_deploy.bundles.manifest import utc_now_iso
from pyimgano_deploy.datasets import (
    AnomalyDataset,
    DatasetError,
    Sample,
    list_mvtec_categories,
    load_folder,
    load_labelled_dir,
    load_mvtec,
)
from pyimgano_deploy.runtimes.tiling import TilingSpec
from pyimgano_deploy.workbench import rundir
from pyimgano_deploy.workbench.calibration import Thresholds, calibrate_thresholds, split_calibration
from pyimgano_deploy.workbench.size_policy import aspect_spread_warning, is_size_policy, resolve_image_size
from pyimgano_deploy.workbench.config import TrainConfig
from pyimgano_deploy.workbench.config_checks import ConfigError
from pyimgano_deploy.workbench.evaluate import defects_check, image_metrics, pixel_metrics
from pyimgano_deploy.workbench.scoring import ScoredSplit, SplitScorer

Log = Callable[[str], None]
SUMMARY_METRICS = (("image", "auroc"), ("image", "ap"), ("image", "f1"), ("pixel", "auroc"), ("pixel", "aupro"))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)



def load_dataset(cfg: TrainConfig, out_dir: Path) -> AnomalyDataset:
    """The data set of ``cfg`` (a synthetic one is generated first, into ``<out>/data`` by default)."""
    d = cfg.dataset
    if d.kind == "mvtec":
        return load_mvtec(d.root, d.category)  # type: ignore[arg-type]
    if d.kind == "folder":
        return load_folder(d.train_dir, test_normal_dir=d.test_normal_dir, test_anomalous_dir=d.test_anomalous_dir,  # type: ignore[arg-type]
                           mask_dir=d.mask_dir, name=d.category or "folder")
    from pyimgano_deploy.datasets import generate_synthetic_dataset

    root = Path(d.root) if d.root else out_dir / "data"
    cat_dir = generate_synthetic_dataset(root, seed=d.seed or 0, n_train=d.n_train, n_test=d.n_test, size=d.size,
                                         category=d.category or "surface")
    return load_mvtec(cat_dir)


def _pixel_threshold_for_defects(defects: dict[str, Any], thresholds: Thresholds, cal: ScoredSplit) -> float | None:
    """The defects check's pixel threshold (``None``: source ``bundle`` and the run calibrated none)."""
    from pyimgano_deploy.postprocess.defects import DefectsConfig, pixel_threshold_for_config

    config = DefectsConfig.from_dict(defects)
    if config.pixel_threshold_source == "bundle" and thresholds.pixel is None:
        return None
    return pixel_threshold_for_config(config, stored=thresholds.pixel, normal_maps=cal.maps, source_split="calibration")[0]


def load_validation(directory: str, ds: AnomalyDataset) -> list[Sample]:
    """The labelled images of ``calibration.validation_dir``; DatasetError when one of them is also a
    training or test image (a threshold tuned on test images would inflate the test figures)."""
    samples = load_labelled_dir(directory, what="calibration.validation_dir")
    used = {str(Path(s.path).resolve()): split for split, group in (("train", ds.train), ("test", ds.test)) for s in group}
    shared = [(s.path, used[str(Path(s.path).resolve())]) for s in samples if str(Path(s.path).resolve()) in used]
    if shared:
        listed = ", ".join(f"{p} ({split})" for p, split in shared[:5]) + (" …" if len(shared) > 5 else "")
        raise DatasetError(f"calibration.validation_dir {directory}: {len(shared)} image(s) are also in the data set's "
                           f"train or test split: {listed}; the validation folder must hold other images")
    return samples


def _per_image_records(out: Path, splits: dict[str, ScoredSplit], threshold: float, save_maps: bool) -> list[dict[str, Any]]:
    records = []
    index = 0
    if save_maps:
        (out / rundir.MAPS_DIR).mkdir(parents=True, exist_ok=True)
    for split_name, split in splits.items():
        for sample, score, amap in zip(split.samples, split.scores, split.maps):
            map_rel = None
            if save_maps:
                map_rel = f"{rundir.MAPS_DIR}/{split_name}_{index:05d}_{Path(sample.path).stem}.npy"
                np.save(out / map_rel, np.ascontiguousarray(amap, dtype=np.float32), allow_pickle=False)
            records.append({
                "schema_version": rundir.SCHEMA_VERSION, "index": index, "input": sample.path, "split": split_name,
                "y_true": int(sample.label), "defect_type": sample.defect_type, "mask": sample.mask_path,
                "score": float(score), "label": int(float(score) >= threshold), "threshold": float(threshold),
                "map": map_rel,
            })
            index += 1
    return records


def _set_training_hooks(detector: Any, cfg: TrainConfig, out: Path, scorer: SplitScorer, cal_samples: list, *, resume: bool, log: Log) -> None:
    """Checkpoints after every epoch in ``model/``, ``--resume`` from them, and the calibration
    split as validation images (scored only) for trained detectors; refuse ``--resume`` otherwise."""
    from pyimgano_deploy.models.training import TrainingHooks
    from pyimgano_deploy.models.training.loop import fingerprint_of

    if not hasattr(detector, "training_hooks"):
        if resume:
            raise ConfigError(f"--resume: {cfg.model.name} is not a trained detector; there is nothing to resume")
        return
    config = cfg.to_dict()
    config.pop("output", None)  # where the run is written does not change what it computes
    detector.training_hooks = TrainingHooks(
        checkpoint=out / rundir.CHECKPOINT_FILE, resume=resume,
        validation_images=scorer.fit_inputs(cal_samples) if cal_samples else None, validation_format=scorer.fit_input_format,
        validation_u16_max=scorer.fit_u16_max,
        fingerprint=fingerprint_of(__version__, config),
    )
    if resume:
        log(f"[{cfg.name}] resuming from {out / rundir.CHECKPOINT_FILE}")


def _run_single(cfg: TrainConfig, out: Path, *, progress: bool, log: Log, resume: bool = False) -> dict[str, Any]:
    from pyimgano_deploy.models.registry import create_model

    timings: dict[str, float] = {}
    t_start = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 4)
        t = now

    ds = load_dataset(cfg, out)
    if not ds.test:
        raise DatasetError(f"the test split of {ds.root} is empty: evaluation needs test images")
    fit_samples, cal_samples = split_calibration(ds.train, cfg.calibration.fraction, cfg.calibration.seed)
    lap("load")
    log(f"[{cfg.name}] {ds.category}: {len(fit_samples)} fit / {len(cal_samples)} calibration / {len(ds.test)} test images")

    tiling = None if cfg.tiling is None else TilingSpec.from_dict(cfg.tiling)
    kwargs, size_record = cfg.model_kwargs(progress=progress), None
    if is_size_policy(kwargs.get("image_size")):
        kwargs["image_size"], size_record = resolve_image_size(kwargs["image_size"], [s.path for s in fit_samples],
                                                               u16_max=cfg.dataset.u16_max)
        log(f"[{cfg.name}] image_size {size_record['policy']}: median aspect {size_record['median_aspect_w_over_h']} → {size_record['image_size']}")
        spread = aspect_spread_warning(size_record)
        if spread is not None:
            log(f"[{cfg.name}] warning: {spread}")
    detector = create_model(cfg.model.name, **kwargs)
    scorer = SplitScorer(detector, tiling, progress=progress, u16_max=cfg.dataset.u16_max)
    fit_inputs = scorer.fit_inputs(fit_samples)
    _set_training_hooks(detector, cfg, out, scorer, cal_samples, resume=resume, log=log)
    what = f"{len(fit_inputs)} tiles of {len(fit_samples)} images" if tiling else f"{len(fit_samples)} images"
    how = "training for its epochs" if hasattr(detector, "training_hooks") else "feature extraction, then the detector head"
    log(f"[{cfg.name}] fitting {cfg.model.name} on {what} ({how})")
    detector.fit(fit_inputs, input_format=scorer.fit_input_format, u16_max=scorer.fit_u16_max)
    del fit_inputs
    lap("fit")

    if detector.needs_calibration:  # e.g. an ensemble's member scales: calibration images only
        log(f"[{cfg.name}] calibrating {cfg.model.name} on the {len(cal_samples)} calibration images")
        detector.calibrate(scorer.fit_inputs(cal_samples), input_format=scorer.fit_input_format, u16_max=scorer.fit_u16_max)
    cal = scorer.score(cal_samples, "scoring calibration")
    c = cfg.calibration
    scored = {"calibration": cal}
    validation = None
    if c.validation_dir is not None:
        val_samples = load_validation(c.validation_dir, ds)
        log(f"[{cfg.name}] {len(val_samples)} labelled validation images from {c.validation_dir} set the image threshold")
        scored[rundir.VALIDATION_SPLIT] = scorer.score(val_samples, "scoring validation")
        validation = (scored[rundir.VALIDATION_SPLIT].scores, np.array([s.label for s in val_samples]))
    thresholds = calibrate_thresholds(cal.scores, cal.maps, quantile=c.quantile, pixel_quantile=c.pixel_quantile,
                                      strategy=c.strategy, margin=c.margin, target_fpr=c.target_fpr,
                                      validation=validation, validation_split=rundir.VALIDATION_SPLIT,
                                      pixel_strategy=c.pixel_strategy)
    detector.threshold, detector.pixel_threshold = thresholds.image, thresholds.pixel
    lap("calibrate")

    test = scorer.score(ds.test, "scoring test")
    threshold = thresholds.image.value
    metrics = {"image": image_metrics(test, threshold), "pixel": pixel_metrics(test, scorer)}
    check = None
    if cfg.defects is not None:
        pixel_thr = _pixel_threshold_for_defects(cfg.defects, thresholds, cal)
        if pixel_thr is not None:
            check = defects_check(cfg.defects, pixel_thr, {**scored, "test": test}, scorer)
    lap("evaluate")

    thr_dict = thresholds.to_dict()
    detector.save(out / "model")
    if rundir.CHECKPOINT_FILE and (out / rundir.CHECKPOINT_FILE).exists():  # a finished run needs no checkpoint
        (out / rundir.CHECKPOINT_FILE).unlink()
    rundir.write_json(out / rundir.CONFIG, cfg.to_dict())
    rundir.write_json(out / rundir.ENVIRONMENT, rundir.capture_run_environment())
    rundir.write_jsonl(out / rundir.PER_IMAGE, _per_image_records(out, {**scored, "test": test}, threshold, cfg.output.save_maps))
    rundir.write_json(out / rundir.INFER_CONFIG, rundir.build_infer_config(detector, thr_dict, cfg.tiling, cfg.defects))
    lap("write")
    if cfg.output.report:
        from pyimgano_deploy.workbench.run_report import write_run_report

        write_run_report(out / rundir.REPORT_HTML, title=f"{cfg.name} — {cfg.model.name} on {ds.category}",
                         metrics=rundir.json_safe(metrics), thresholds=thr_dict, test=test, threshold=threshold,
                         preprocess=None if tiling else detector.preprocess,
                         training=(detector.fit_summary.get("training") or {}).get("history"), u16_max=cfg.dataset.u16_max)
        lap("report")
    timings["total"] = round(time.perf_counter() - t_start, 4)

    report = {
        "schema_version": rundir.SCHEMA_VERSION,
        "timestamp": utc_now_iso(),
        "toolkit": {"name": "pyimgano-deploy", "version": __version__},
        "name": cfg.name,
        "recipe": cfg.recipe,
        "model": {"name": detector.model_name, "family": detector.family, "hyperparameters": detector.hyperparameters(),
                  "fitted": detector.fit_summary, "input_size": list(detector.input_size), "size_policy": size_record},
        "dataset": {"kind": cfg.dataset.kind, **ds.summary(), "n_fit": len(fit_samples),
                    "n_calibration": len(cal_samples), "n_test": len(ds.test)},
        "splits": {"fit": [s.path for s in fit_samples], "calibration": [s.path for s in cal_samples],
                   **({rundir.VALIDATION_SPLIT: [s.path for s in scored[rundir.VALIDATION_SPLIT].samples]} if validation else {}),
                   "calibration_fraction": cfg.calibration.fraction, "calibration_seed": cfg.calibration.seed},
        "metrics": metrics,
        "thresholds": thr_dict,
        "timings_s": timings,
        "tiling": cfg.tiling,
        "defects": cfg.defects,
        "defects_check": check,
    }
    rundir.write_json(out / rundir.REPORT, report)
    return {
        "ok": True, "run_dir": str(out), "name": cfg.name, "recipe": cfg.recipe, "category": ds.category,
        "metrics": rundir.json_safe(metrics),
        "thresholds": {"image": threshold, "pixel": None if thresholds.pixel is None else thresholds.pixel.value},
        "timings_s": timings,
    }


def _metric(summary: dict[str, Any], level: str, key: str) -> float | None:
    block = (summary.get("metrics") or {}).get(level) or {}
    value = block.get(key)
    return None if value is None else float(value)


def _run_all(cfg: TrainConfig, out: Path, *, progress: bool, log: Log) -> dict[str, Any]:
    categories = list_mvtec_categories(cfg.dataset.root)  # type: ignore[arg-type]
    if not categories:
        raise DatasetError(f"no categories (folders holding train/) under {cfg.dataset.root}")
    t0 = time.perf_counter()
    rundir.write_json(out / rundir.CONFIG, cfg.to_dict())
    results: dict[str, Any] = {}
    for cat in categories:
        sub = copy.deepcopy(cfg)
        sub.dataset.category = cat
        sub.name = f"{cfg.name}/{cat}"
        sub.output.dir = str(out / rundir.CATEGORIES_DIR / cat)
        Path(sub.output.dir).mkdir(parents=True, exist_ok=True)
        results[cat] = _run_single(sub, Path(sub.output.dir), progress=progress, log=log)
    mean = {}
    for level, key in SUMMARY_METRICS:
        values = [v for v in (_metric(r, level, key) for r in results.values()) if v is not None]
        mean[f"{level}_{key}"] = float(np.mean(values)) if values else None
    summary = {
        "schema_version": rundir.SCHEMA_VERSION, "timestamp": utc_now_iso(), "name": cfg.name, "recipe": cfg.recipe,
        "toolkit": {"name": "pyimgano-deploy", "version": __version__},
        "categories": {c: {"run_dir": f"{rundir.CATEGORIES_DIR}/{c}", "metrics": r["metrics"], "thresholds": r["thresholds"],
                           "timings_s": r["timings_s"]} for c, r in results.items()},
        "mean": mean, "timings_s": {"total": round(time.perf_counter() - t0, 4)},
    }
    rundir.write_json(out / rundir.SUMMARY, summary)
    return {"ok": True, "run_dir": str(out), "name": cfg.name, "recipe": cfg.recipe, "categories": results, "mean": mean,
            "timings_s": summary["timings_s"]}


def run_training(cfg: TrainConfig, *, force: bool = False, progress: bool = True, log: Log | None = None, resume: bool = False) -> dict[str, Any]:
    """Run ``cfg`` and write its run directory; returns the JSON-ready summary (run dir,
    metrics, thresholds, timings). ``resume``: continue a trained detector from the checkpoint
    an interrupted run left in ``model/`` (same config), to the same result as an uninterrupted
    run. Raises RunDirExistsError, NothingToResumeError, ConfigError, DatasetError, CheckpointError, …"""
    log = log or _stderr
    if resume:
        if force:
            raise ConfigError("--resume and --force contradict each other: --force would delete the checkpoint")
        if cfg.dataset.kind == "mvtec" and cfg.dataset.category == "all":
            raise ConfigError("--resume works on a single-category run; resume each category's run directory instead")
        out = rundir.resume_out_dir(cfg.output.dir)
        return _run_single(cfg, out, progress=progress, log=log, resume=True)
    out = rundir.prepare_out_dir(cfg.output.dir, force=force)
    if cfg.dataset.kind == "mvtec" and cfg.dataset.category == "all":
        return _run_all(cfg, out, progress=progress, log=log)
    return _run_single(cfg, out, progress=progress, log=log)

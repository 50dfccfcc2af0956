"""``pyimgano-deploy train``: fit, calibrate and evaluate a detector; write a run directory."""

from __future__ import annotations

import json
from typing import Any

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_FAILED, EXIT_OUTPUT, EXIT_USAGE
from pyimgano_deploy.cli.failing import fail
from pyimgano_deploy.postprocess.thresholds import ALL_STRATEGIES, PIXEL_STRATEGIES


def _fail(message: str, code: int, as_json: bool) -> None:
    fail(message, code, as_json=as_json)


def _json_value(text: str, where: str) -> Any:
    from pyimgano_deploy.workbench.config import ConfigError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg}): {text!r}") from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    from pyimgano_deploy.workbench.config import ConfigError

    node = data
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(parts[: i + 1])} is not an object")
        node = child
    node[parts[-1]] = value


def _set_value(text: str) -> Any:
    """``--set`` values are JSON when they parse as JSON, else plain strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_config_dict(config_path: str | None, overrides: dict[str, Any], model_kwargs: str | None, sets: tuple[str, ...]) -> dict[str, Any]:
    """The config file (or {}) with the command-line options applied on top."""
    from pyimgano_deploy.workbench.config import ConfigError, load_config_file

    data: dict[str, Any] = load_config_file(config_path) if config_path else {}
    for dotted, value in overrides.items():
        if value is not None:
            _set_dotted(data, dotted, value)
    if model_kwargs is not None:
        kwargs = _json_value(model_kwargs, "--model-kwargs")
        if not isinstance(kwargs, dict):
            raise ConfigError(f"--model-kwargs: expected a JSON object, got {model_kwargs!r}")
        model = data.setdefault("model", {})
        if not isinstance(model, dict):
            raise ConfigError("model: expected an object")
        model["kwargs"] = {**(model.get("kwargs") or {}), **kwargs}
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE (e.g. dataset.size=64), got {item!r}")
        _set_dotted(data, key.strip(), _set_value(text))
    return data


@click.command("train", epilog=EXIT_CODE_TABLE)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="JSON config (YAML with PyYAML installed). Options below override it.")
@click.option("--model", default=None, help="Registered model name (see `pyimgano-deploy models`). [vision_patchcore]")
@click.option("--model-kwargs", default=None, help='Model arguments as a JSON object, e.g. \'{"pretrained": false}\'.')
@click.option("--recipe", default=None, help="Recipe (see `pyimgano-deploy recipes`). [industrial-adapt]")
@click.option("--dataset", "dataset_kind", type=click.Choice(["mvtec", "folder", "synthetic"]), default=None, help="Data set layout.")
@click.option("--root", default=None, help="Data set root (MVTec: a category or a folder of categories).")
@click.option("--category", default=None, help="MVTec category, or 'all' (one run per category).")
@click.option("--u16-max", type=click.IntRange(1, 65535), default=None,
              help="Full-scale value of the set's 16-bit images (4095 for a 12-bit camera, 65535 for the full range); "
                   "16-bit files are an error without it. Recorded in the run and its bundles (dataset.u16_max).")
@click.option("--out", default=None, help="Run directory to write (refused when not empty, unless --force).")
@click.option("--name", default=None, help="Run name. [the --out folder's name]")
@click.option("--device", default=None, help="cpu | cuda | cuda:N. [cpu]")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (model, calibration split, synthetic data). [0]")
@click.option("--calibration-fraction", type=float, default=None, help="Held-out fraction of training normals. [0.2]")
@click.option("--quantile", type=float, default=None, help="Image threshold quantile of calibration scores. [0.99]")
@click.option("--pixel-quantile", type=float, default=None, help="Pixel threshold quantile (see --pixel-strategy). [0.99; 0.95 in industrial-adapt-fp40]")
@click.option("--pixel-strategy", type=click.Choice(list(PIXEL_STRATEGIES)), default=None,
              help="Pixel threshold = the --pixel-quantile of all calibration-map pixels (pixels), or of each calibration "
                   "map's maximum (image_max: about 1 − q of normal images then have any pixel above it). "
                   "[pixels; image_max in industrial-adapt-fp40]")
@click.option("--threshold-strategy", type=click.Choice(list(ALL_STRATEGIES)), default=None,
              help="How the image threshold is set: from the calibration scores by quantile (--quantile), max_margin "
                   "(max + --threshold-margin × (max − median): above every calibration image) or target_fpr "
                   "(at most --target-fpr of the calibration images at or above it); or f1_validation: F1-optimal on "
                   "the labelled images of --validation-dir. Recorded with the threshold. [quantile]")
@click.option("--threshold-margin", type=click.FloatRange(min=0), default=None, help="Margin of max_margin, in units of (max − median). [0.1]")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="False-positive rate of target_fpr on the calibration split. [0.01]")
@click.option("--validation-dir", default=None, type=click.Path(file_okay=False),
              help="Labelled folder for --threshold-strategy f1_validation: good/ holds normal images, every other "
                   "sub-folder one defect type; none of them may be a training or test image.")
@click.option("--save-maps/--no-save-maps", default=None, help="Save anomaly maps as maps/*.npy. [off]")
@click.option("--report/--no-report", default=None, help="Write report.html. [on]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set any config key (dotted; value parsed as JSON), e.g. --set dataset.size=64. Repeatable.")
@click.option("--dry-run", is_flag=True, help="Validate and print the resolved config (JSON); write nothing.")
@click.option("--force", is_flag=True, help="Overwrite the run artefacts in a non-empty --out.")
@click.option("--resume", is_flag=True, help="Continue a trained detector's interrupted run in --out from its last epoch "
              "checkpoint (model/checkpoint.safetensors), with the same config; the result equals an uninterrupted run.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary (JSON) on stdout at the end.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars on stderr.")
def train(config_path: str | None, model: str | None, model_kwargs: str | None, recipe: str | None, dataset_kind: str | None,
          root: str | None, category: str | None, u16_max: int | None, out: str | None, name: str | None, device: str | None, seed: int | None,
          calibration_fraction: float | None, quantile: float | None, pixel_quantile: float | None, pixel_strategy: str | None, threshold_strategy: str | None,
          threshold_margin: float | None, target_fpr: float | None, validation_dir: str | None, save_maps: bool | None,
          report: bool | None, sets: tuple[str, ...], dry_run: bool, force: bool, resume: bool, as_json: bool, progress: bool) -> None:
    """Fit a detector on normal images, calibrate its image and pixel thresholds on a held-out
    calibration split, evaluate on the test split and write a run directory.

    \b
    Examples:
      pyimgano-deploy train --config cfg.json
      pyimgano-deploy train --dataset mvtec --root data/mvtec --category bottle --out runs/bottle
      pyimgano-deploy train --dataset synthetic --out runs/demo --set dataset.size=64 \\
          --model-kwargs '{"pretrained": false, "image_size": 64}'
    """
    from pyimgano_deploy.datasets import DatasetError
    from pyimgano_deploy.inputs import ImageReadError
    from pyimgano_deploy.models.detectors.batches import InputError
    from pyimgano_deploy.models.training.checkpoint import CheckpointError
    from pyimgano_deploy.workbench.calibration import CalibrationSplitError
    from pyimgano_deploy.workbench.config import ConfigError, TrainConfig
    from pyimgano_deploy.workbench.rundir import NothingToResumeError, RunDirExistsError
    from pyimgano_deploy.workbench.train import run_training

    if config_path is None and (dataset_kind is None or out is None):
        _fail("without --config, --dataset and --out are required (e.g. --dataset synthetic --out runs/demo)", EXIT_USAGE, as_json)
    overrides = {
        "model.name": model, "recipe": recipe, "dataset.kind": dataset_kind, "dataset.root": root, "dataset.category": category,
        "dataset.u16_max": u16_max,
        "output.dir": out, "name": name, "device": device, "seed": seed, "calibration.fraction": calibration_fraction,
        "calibration.quantile": quantile, "calibration.pixel_quantile": pixel_quantile,
        "calibration.pixel_strategy": pixel_strategy, "calibration.strategy": threshold_strategy,
        "calibration.margin": threshold_margin, "calibration.target_fpr": target_fpr,
        "calibration.validation_dir": validation_dir, "output.save_maps": save_maps,
        "output.report": report,
    }
    try:
        cfg = TrainConfig.from_dict(build_config_dict(config_path, overrides, model_kwargs, sets))
    except ConfigError as exc:
        _fail(f"invalid config: {exc}", EXIT_USAGE, as_json)
        return
    if dry_run:
        click.echo(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        return
    log = (lambda msg: click.echo(msg, err=True)) if progress else (lambda msg: None)
    try:
        summary = run_training(cfg, force=force, progress=progress, log=log, resume=resume)
    except RunDirExistsError as exc:
        _fail(str(exc), EXIT_OUTPUT, as_json)
        return
    except NothingToResumeError as exc:
        _fail(str(exc), EXIT_USAGE, as_json)
        return
    except (ConfigError, DatasetError, CalibrationSplitError, InputError, ImageReadError, CheckpointError, FloatingPointError) as exc:
        _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED, as_json)
        return
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True, allow_nan=False))
    else:
        _print_human(summary)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _print_human(summary: dict[str, Any]) -> None:
    runs = summary.get("categories") or {summary.get("category", summary["name"]): summary}
    for cat, r in runs.items():
        image = (r.get("metrics") or {}).get("image") or {}
        pixel = (r.get("metrics") or {}).get("pixel") or {}
        thr = r.get("thresholds") or {}
        click.echo(f"{cat}: image AUROC {_fmt(image.get('auroc'))}  AP {_fmt(image.get('ap'))}  F1 {_fmt(image.get('f1'))}  "
                   f"pixel AUROC {_fmt(pixel.get('auroc'))}  AUPRO {_fmt(pixel.get('aupro'))}  "
                   f"threshold {_fmt(thr.get('image'))} (pixel {_fmt(thr.get('pixel'))})  "
                   f"{_fmt((r.get('timings_s') or {}).get('total'))} s")
    click.echo(f"run directory: {summary['run_dir']}")

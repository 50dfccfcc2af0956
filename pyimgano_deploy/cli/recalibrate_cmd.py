"""``pyimgano-deploy recalibrate``: a bundle's thresholds re-set on images from the line (torch-free)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_ENGINE, EXIT_FAILED, EXIT_OUTPUT, EXIT_PARITY, EXIT_USAGE
from pyimgano_deploy.bundles.manifest import PRECISIONS
from pyimgano_deploy.cli.failing import fail
from pyimgano_deploy.cli.progress import bar_wanted, progress_bar, progress_option
from pyimgano_deploy.postprocess.thresholds import ALL_STRATEGIES


@click.command("recalibrate", epilog=EXIT_CODE_TABLE)
@click.option("--bundle", "bundle_path", required=True, type=click.Path(), help="The bundle to start from (never changed).")
@click.option("--normal", "normal_specs", required=True, multiple=True,
              help="Normal images taken on the line, not ones the model was fitted on: file, directory (recursive), glob, "
                   "or list file (@list.txt; @- for standard input), as infer's --input. Repeatable.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder of the recalibrated bundle.")
@click.option("--strategy", type=click.Choice(list(ALL_STRATEGIES)), default="quantile", show_default=True,
              help="How the image threshold follows from the scores, as train's --threshold-strategy: quantile of the normal "
                   "scores, max_margin (above every one of them), target_fpr, or f1_validation (F1-optimal on "
                   "--validation-dir).")
@click.option("--quantile", type=click.FloatRange(0, 1, min_open=True), default=0.99, show_default=True,
              help="Quantile of the normal scores (strategy quantile).")
@click.option("--margin", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="max_margin: max + margin × (max − median) of the normal scores.")
@click.option("--target-fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01, show_default=True,
              help="target_fpr: at most this share of the normal images at or above the threshold.")
@click.option("--validation-dir", type=click.Path(file_okay=False, exists=True), default=None,
              help="Labelled folder (good/ holds normal images, every other sub-folder anomalous ones): sets the image "
                   "threshold with --strategy f1_validation; otherwise scored to report precision and recall at the "
                   "previous and the new threshold. Its images must not be among --normal.")
@click.option("--pixel-quantile", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Quantile of the new pixel threshold (default: the one the bundle's pixel threshold records). A "
                   "threshold on all map pixels keeps every normal image's model-scale map until the end (4 bytes a map "
                   "pixel: about 0.5 MB for 224 × 544); one on the maps' maxima keeps a number per image.")
@click.option("--keep-pixel-threshold", is_flag=True, help="Keep the bundle's pixel threshold as it is.")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32", show_default=True,
              help="The bundle's ONNX engine that scores the images (fp32: the reference every other engine is gated against).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
@click.option("--u16-max", type=click.IntRange(1, 65535), default=None,
              help="Full-scale value of 16-bit images (16-bit files are an error without it).")
@click.option("--max-errors", type=click.IntRange(min=0), default=0, show_default=True,
              help="Inputs that may fail to read or score; they are listed and left out. More: exit 1, nothing written.")
@click.option("--expect-digest", default=None, metavar="sha256:HEX", help="Refuse the source bundle unless its digest is this one (exit 4).")
@click.option("--public-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Require a source bundle.sig that verifies with this Ed25519 PEM public key (exit 7).")
@click.option("--sign-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Sign the new bundle's digest with this Ed25519 PEM private key; writes bundle.sig.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out (never anything else).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (no progress bar).")
@progress_option
def recalibrate(bundle_path: str, normal_specs: tuple[str, ...], out_dir: str, strategy: str, quantile: float, margin: float,
                target_fpr: float, validation_dir: str | None, pixel_quantile: float | None, keep_pixel_threshold: bool,
                precision: str, batch_size: int, threads: int | None, u16_max: int | None, max_errors: int,
                expect_digest: str | None, public_key: str | None, sign_key: str | None, force: bool, as_json: bool,
                progress: bool) -> None:
    """Re-set a bundle's thresholds on normal images from the line, and write them as a new bundle.

    The images are scored with the bundle's own engine, as infer scores them, and the image
    threshold (and the pixel threshold, when the bundle has one) is calibrated on those scores
    with train's strategies. The engines and golden set are copied unchanged; the manifest
    keeps the export's provenance and adds a recalibrations entry (source digest, the
    thresholds replaced, a digest of the images). Parity is measured again here under the new
    threshold, and the new bundle is validated before it is swapped into place. The source
    bundle is never changed. Prints the new digest to pin.

    \b
    Examples:
      pyimgano-deploy recalibrate --bundle b/ --normal line_good/ --out b_line3/
      pyimgano-deploy recalibrate --bundle b/ --normal line_good/ --validation-dir labelled/ \\
          --strategy f1_validation --out b_line3/ --json

    Exit codes (the shared table below): 1 too many inputs failed (or none was scored), 2 a bad
    option or validation folder, 3/4/7 the source bundle, 5 an engine cannot run here, 6 an
    engine fails its gate under the new threshold, 8 --out is not written.
    """
    from pyimgano_deploy.bundles import BundleError
    from pyimgano_deploy.bundles.parity import ParityError
    from pyimgano_deploy.bundles.replace import BundleExistsError, OutputNotWritableError, UnsafeOutputError
    from pyimgano_deploy.runtimes.errors import EngineLoadError, EngineParityError
    from pyimgano_deploy.runtimes.recalibration import RecalibrationError, RecalibrationOptions, recalibrate_bundle

    if keep_pixel_threshold and pixel_quantile is not None:
        raise click.UsageError("--pixel-quantile and --keep-pixel-threshold exclude each other")
    normal = _normal_paths(normal_specs, as_json)
    validation = _validation(validation_dir, normal, as_json)
    try:
        options = RecalibrationOptions(strategy=strategy, quantile=quantile, margin=margin, target_fpr=target_fpr,
                                       recalibrate_pixel=not keep_pixel_threshold, pixel_quantile=pixel_quantile, precision=precision,
                                       batch_size=batch_size, threads=threads, u16_max=u16_max, max_errors=max_errors,
                                       expected_digest=expect_digest, public_key=public_key, force=force, sign_key=sign_key)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    total = len(normal) + len(validation or [])
    log = (lambda m: None) if as_json else (lambda m: click.echo(m, err=True))
    try:
        with progress_bar(total, bar_wanted(progress, as_json), "scoring") as bar:
            result = recalibrate_bundle(bundle_path, normal, out_dir, options, validation=validation, log=log,
                                        tick=None if bar is None else bar.update)
    except BundleError as exc:
        fail(f"{bundle_path}: {exc}", exc.exit_code, as_json=as_json)
    except (BundleExistsError, UnsafeOutputError, OutputNotWritableError) as exc:
        fail(str(exc), EXIT_OUTPUT, as_json=as_json)
    except (ParityError, EngineParityError) as exc:
        fail(str(exc), EXIT_PARITY, as_json=as_json)
    except EngineLoadError as exc:
        fail(str(exc), EXIT_ENGINE, as_json=as_json)
    except RecalibrationError as exc:
        fail(str(exc), EXIT_FAILED, as_json=as_json)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    summary = result.to_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for line in summary_lines(summary):
        click.echo(line)


def _normal_paths(specs: tuple[str, ...], as_json: bool) -> list[str]:
    from pyimgano_deploy.runtimes.sources import expand_inputs

    try:
        plan = expand_inputs(specs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--normal") from exc
    for spec in plan.unmatched:
        click.echo(f"warning: --normal {spec!r} matched no files", err=True)
    if not plan.items:
        fail(plan.nothing_found("--normal", specs), EXIT_USAGE, as_json=as_json)
    return plan.items


def _validation(directory: str | None, normal: list[str], as_json: bool) -> list[tuple[str, int]] | None:
    """The labelled images of ``--validation-dir``; exit 2 when the folder is not laid out as one,
    or holds one of the ``--normal`` images (a threshold must not be judged on its own images)."""
    if directory is None:
        return None
    from pyimgano_deploy.datasets.mvtec import load_labelled_dir
    from pyimgano_deploy.datasets.types import DatasetError

    try:
        samples = load_labelled_dir(directory, what="--validation-dir")
    except DatasetError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    normal_keys = {os.path.realpath(p) for p in normal}
    shared = [s.path for s in samples if os.path.realpath(s.path) in normal_keys]
    if shared:
        fail(f"--validation-dir {directory}: {len(shared)} image(s) are also among --normal ({', '.join(shared[:3])}"
             f"{' …' if len(shared) > 3 else ''}); give the labelled images in a folder of their own", EXIT_USAGE, as_json=as_json)
    return [(s.path, int(s.label)) for s in samples]


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The text summary of :meth:`RecalibrationResult.to_dict`."""
    lines = [f"recalibrated bundle: {s['bundle']}", f"digest: {s['digest']}" + (" (signed)" if s["signed"] else ""),
             f"from:   {s['from_digest']}"]
    image, pixel, normal = s["thresholds"]["image"], s["thresholds"]["pixel"], s["normal"]
    lines.append(f"image threshold: {image['before']:.6g} → {image['after']:.6g} ({image['method']})")
    lines.append(f"  normal images at or above it: {normal['above_previous_threshold']} of {normal['n_scored']} with the previous "
                 f"threshold, {normal['above_new_threshold']} with the new one")
    if pixel is not None:
        lines.append(f"pixel threshold: {pixel['before']:.6g} → {pixel['after']:.6g} ({pixel['method']})" if pixel["recalibrated"]
                     else f"pixel threshold: {pixel['before']:.6g}, kept")
    v = s["validation"]
    if v is not None:
        for when in ("previous", "new"):
            c = v[f"at_{when}_threshold"]
            lines.append(f"validation at the {when} threshold: precision {_rate(c['precision'])}, recall {_rate(c['recall'])}, "
                         f"false-positive rate {_rate(c['false_positive_rate'])} (tp {c['tp']}, fp {c['fp']}, fn {c['fn']}, tn {c['tn']})")
    for precision, p in s["parity"].items():
        lines.append(f"parity {precision} under the new threshold: max|Δscore| {p['max_abs_score']:.3g} (gate {p['score_abs']:.3g}), "
                     f"max|Δmap| {p['max_abs_map']:.3g} (gate {p['map_abs']:.3g}), labels identical: {p['labels_identical']}")
    failed = normal["failed"] + (v["failed"] if v is not None else [])
    if failed:
        lines.append(f"{len(failed)} input(s) failed and were left out:")
        lines.extend(f"  {f['input']}: {f['error']}" for f in failed)
    lines.extend(f"note: {n}" for n in s["notes"])
    return lines


__all__ = ["recalibrate", "summary_lines"]

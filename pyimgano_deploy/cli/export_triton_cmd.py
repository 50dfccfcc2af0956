"""``pyimgano-deploy export-triton``: a Triton Inference Server model repository from a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_FAILED, EXIT_INVALID, EXIT_OUTPUT
from pyimgano_deploy.cli.failing import fail


@click.command("export-triton", epilog=EXIT_CODE_TABLE)
@click.option("--bundle", "bundle_path", required=True, type=click.Path(), help="Bundle directory (verified first).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Model repository folder to write.")
@click.option("--name", default=None, help="Served model name. [the bundle's model name]")
@click.option("--gpu", is_flag=True, help="GPU instances with ONNX Runtime's TensorRT accelerator (FP16 when the bundle carries an fp16 engine, "
              "i.e. its fp16 parity gate passed; FP32 otherwise).")
@click.option("--engine-backend", type=click.Choice(["onnxruntime", "python"]), default="onnxruntime", show_default=True,
              help="Serve the engine on Triton's onnxruntime backend, or with ONNX Runtime inside the Python backend "
                   "(for Triton builds without the onnxruntime backend, such as nvidia-pytriton's; CPU only).")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Instances of each model.")
@click.option("--u16-max", type=click.IntRange(1, 65535), default=None,
              help="Full-scale value of 16-bit request images (4095 for a 12-bit camera); without it the served model refuses them.")
@click.option("--expect-digest", default=None, metavar="sha256:HEX", help="Refuse the bundle unless its digest is this one (exit 4).")
@click.option("--force", is_flag=True, help="Replace an existing, non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def export_triton(bundle_path: str, out_dir: str, name: str | None, gpu: bool, engine_backend: str, instances: int, u16_max: int | None,
                  expect_digest: str | None, force: bool, as_json: bool) -> None:
    """Write a Triton model repository for BUNDLE: the ONNX engine (onnxruntime_onnx, dynamic
    batching), Python-backend models for decoding/preprocessing and for the threshold (our own
    runtime code; pyimgano-deploy must be installed in Triton's Python environment), and an
    ensemble NAME that takes encoded image bytes and returns label, score, threshold and
    anomaly map. Every config.pbtxt is checked against Triton's model-config schema when
    tritonclient is installed. See docs/SCALING.md.

    \b
    Serve:  tritonserver --model-repository OUT
    """
    from pyimgano_deploy.bundles import BundleError
    from pyimgano_deploy.scale.extras import MissingExtraError
    from pyimgano_deploy.scale.triton_config import parse_model_config
    from pyimgano_deploy.scale.triton_repository import RepositoryExistsError, write_repository

    try:
        summary = write_repository(bundle_path, out_dir, name=name, gpu=gpu, instances=instances, engine_backend=engine_backend, force=force,
                                   expected_digest=expect_digest, u16_max=u16_max)
    except BundleError as exc:
        fail(f"invalid bundle {bundle_path}: {exc}", exc.exit_code, as_json=as_json)
    except RepositoryExistsError as exc:
        fail(str(exc), EXIT_OUTPUT, as_json=as_json)
    except ValueError as exc:
        fail(str(exc), EXIT_INVALID, as_json=as_json)
    except OSError as exc:
        fail(f"cannot write {out_dir}: {exc}", EXIT_OUTPUT, as_json=as_json)
    checked = []
    try:
        for model in summary["models"]:
            parse_model_config((Path(out_dir) / model / "config.pbtxt").read_text())
            checked.append(model)
        summary["schema_check"] = "every config.pbtxt parses as Triton's ModelConfig (tritonclient)"
    except MissingExtraError as exc:
        summary["schema_check"] = f"not checked: {exc}"
    except ValueError as exc:  # our own writer produced a config Triton would refuse: a bug
        fail(f"{out_dir}: {exc}", EXIT_FAILED, as_json=as_json)
    if as_json:
        click.echo(json.dumps({"ok": True, **summary}, indent=2))
        return
    click.echo(f"model repository: {summary['path']} (bundle {summary['digest']})")
    for model in summary["models"]:
        click.echo(f"  {model}")
    click.echo(f"schema: {summary['schema_check']}")
    trained = summary["trained_u16_max"]
    if trained is not None and u16_max != trained:
        click.echo(f"note: this bundle was trained on 16-bit images with u16_max {trained}; the served model "
                   + ("refuses 16-bit requests (pass --u16-max)" if u16_max is None else f"scales them with {u16_max}"), err=True)
    click.echo(f"serve:  tritonserver --model-repository {summary['path']}   (ensemble '{summary['name']}': IMAGE bytes -> label, score, threshold, anomaly_map)")

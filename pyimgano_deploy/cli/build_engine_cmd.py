"""``pyimgano-deploy build-engine BUNDLE``: build a TensorRT engine for this GPU into a bundle.

Reads and verifies the bundle, builds ``engines/sm{major}{minor}-trt{version}.plan`` from its
fp32 ONNX model, appends the engine to the manifest's ``engines`` list and rewrites
``bundle.json`` (so ``files`` carries the engine's sha256). Exit codes: 0 ok, 1 build failed,
3/4 invalid bundle / checksum mismatch, 5 TensorRT or GPU unavailable on this machine.
torch is never imported; onnx only (optionally) for the offline compatibility pre-check.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, NoReturn

import click

from pyimgano_deploy.bundles.engines import updated_manifest
from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_ENGINE, EXIT_FAILED
from pyimgano_deploy.bundles.io_contract import INPUT_NAME
from pyimgano_deploy.cli.failing import fail
from pyimgano_deploy.exporters.tensorrt_build import (
    TensorRTBuildError,
    TensorRTUnavailableError,
    build_engine as _build_engine,
    tensorrt_available,
)

EXIT_BUILD_FAILED = EXIT_FAILED
EXIT_TENSORRT_UNAVAILABLE = EXIT_ENGINE


def _onnx_engine_file(manifest: dict[str, Any]) -> str:
    """The fp32 ONNX engine's file from the manifest (``model.onnx`` when none is listed)."""
    for eng in manifest.get("engines") or []:
        if isinstance(eng, dict) and eng.get("format") == "onnx" and eng.get("precision") == "fp32":
            return str(eng["file"])
    return "model.onnx"


def _precheck(onnx_path: Path, max_batch: int) -> None:
    """Offline TensorRT compatibility report (warnings only) when onnx is installed."""
    if importlib.util.find_spec("onnx") is None:
        return
    from google.protobuf.message import DecodeError

    from pyimgano_deploy.exporters.tensorrt_compat import check_tensorrt_compatibility

    try:
        report = check_tensorrt_compatibility(onnx_path, max_batch=max_batch)
    except (OSError, ValueError, DecodeError) as exc:
        click.echo(f"warning: TensorRT compatibility pre-check could not read {onnx_path}: {exc}", err=True)
        return
    if not report.ok:
        click.echo("warning: the ONNX model may not import into TensorRT:\n" + report.format_table(), err=True)


def _fail(message: str, code: int) -> NoReturn:
    fail(message, code)


@click.command("build-engine", epilog=EXIT_CODE_TABLE)
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--fp16", is_flag=True, help="Build an fp16 engine; the layers in the manifest's model.fp32_scopes (distances, statistics, map finishing) stay fp32.")
@click.option("--workspace-gb", type=click.FloatRange(min=0.0, min_open=True), default=4.0, show_default=True,
              help="Builder workspace memory pool limit in GiB.")
@click.option("--min-batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--opt-batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache file: loaded when present, saved after the build.")
def build_engine(
    bundle: Path,
    fp16: bool,
    workspace_gb: float,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    timing_cache: Path | None,
) -> None:
    """Build a TensorRT engine for BUNDLE on this GPU and register it in bundle.json."""
    if not min_batch <= opt_batch <= max_batch:
        raise click.BadParameter(
            f"expected --min-batch <= --opt-batch <= --max-batch, got {min_batch}, {opt_batch}, {max_batch}",
            param_hint="--opt-batch",
        )
    ok, reason = tensorrt_available()
    if not ok:
        _fail(f"cannot build a TensorRT engine on this machine: {reason}", EXIT_TENSORRT_UNAVAILABLE)

    from pyimgano_deploy.bundles.errors import BundleError
    from pyimgano_deploy.bundles.hashing import sha256_file
    from pyimgano_deploy.bundles.precision_scopes import manifest_fp32_scopes
    from pyimgano_deploy.bundles.reader import read_bundle
    from pyimgano_deploy.bundles.writer import write_manifest

    try:
        bndl = read_bundle(bundle)
    except BundleError as exc:
        _fail(str(exc), exc.exit_code)
    manifest = bndl.manifest
    onnx_path = bndl.file(_onnx_engine_file(manifest))
    inp = manifest.get("input") or {}
    _precheck(onnx_path, max_batch)
    try:
        profile = {"min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch}
        hw = (int(inp["height"]), int(inp["width"])) if "height" in inp and "width" in inp else None
        info = _build_engine(onnx_path, bndl.root, fp16=fp16, fp32_scopes=manifest_fp32_scopes(manifest), workspace_gb=workspace_gb, timing_cache_path=timing_cache,
                             input_name=str(inp.get("name", INPUT_NAME)), hw=hw, **profile)
    except TensorRTUnavailableError as exc:
        _fail(str(exc), EXIT_TENSORRT_UNAVAILABLE)
    except TensorRTBuildError as exc:
        _fail(str(exc), EXIT_BUILD_FAILED)

    engine_path = bndl.root / info.file
    try:
        write_manifest(bndl.root, updated_manifest(manifest, info.to_manifest_entry(sha256_file(engine_path))))
        _drop_stale_signature(bndl.root)
        read_bundle(bndl.root)  # re-verify what we wrote
    except BundleError as exc:
        _fail(f"engine built at {engine_path} but the manifest could not be updated: {exc}", exc.exit_code)
    click.echo(json.dumps({"bundle": str(bndl.root), "engine": info.to_dict()}, indent=2))


def _drop_stale_signature(root: Path) -> None:
    """A new engine changes the digest, so an existing signature no longer covers the bundle."""
    from pyimgano_deploy.bundles.signing import SIGNATURE_NAME

    sig = root / SIGNATURE_NAME
    if sig.exists():
        sig.unlink()
        click.echo(f"warning: removed {sig}: it signed the bundle before this engine was added; sign the bundle again", err=True)


__all__ = ["build_engine"]

"""``pyimgano-deploy export``: run directory → deployment bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_ENGINE, EXIT_FAILED, EXIT_OUTPUT, EXIT_USAGE
from pyimgano_deploy.cli.failing import fail
from pyimgano_deploy.exporters.int8_engine import INT8_CANDIDATES, INT8_SCOPES
from pyimgano_deploy.models.detectors.nn_head_options import PCA_PROJECTION_DIM


def _projection(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """``auto`` → None (the variance rule), else a dimension count >= 1."""
    if value == "auto":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise click.BadParameter(f"expected 'auto' or a whole number of dimensions >= 1, got {value!r}")


@click.command("export", epilog=EXIT_CODE_TABLE)
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory written by 'train' (runs/NAME).")
@click.option("--category", default=None, help="Category inside a multi-category run (runs/NAME/categories/C).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16 adds model.fp16.onnx (backbone in half precision, distances in fp32); int8 adds model.int8.onnx "
                   "(see --int8-scope). Either must pass its parity gate (exit 6 otherwise); 'infer' runs int8 only when "
                   "asked (--precision int8).")
@click.option("--int8-scope", type=click.Choice(INT8_SCOPES), default="auto", show_default=True,
              help="What runs in int8. nn_head: memory-bank detectors keep an fp32 backbone and find nearest-neighbour "
                   "candidates with int8 distances to the whole bank (ONNX Runtime's int8 kernels, queries quantised per "
                   "chunk of rows, in the bank's leading principal directions), then re-rank them in exact fp32. backbone: static QDQ quantisation of the backbone's "
                   "convolutions, ranges calibrated on the calibration split, head fp32. auto: nn_head for PatchCore, "
                   "SoftPatch and AnomalyDINO, backbone otherwise.")
@click.option("--int8-candidates", type=click.IntRange(1, 3840), default=INT8_CANDIDATES, show_default=True,
              help="nn_head scope: candidate rows per query re-ranked in fp32.")
@click.option("--int8-projection", "int8_projection", default="auto", show_default=True, callback=_projection, metavar="auto|N",
              help="nn_head scope: dimensions of the int8 candidate distances. auto: the fewest principal directions of "
                   "the bank keeping 98 % of its variance (a multiple of 16); N at or above the feature dimension: none. "
                   "Only candidates are chosen there; their distances are exact.")
@click.option("--int8-calibration", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="backbone scope: calibration-split images (tiles for a tiled run) that set the int8 activation ranges.")
@click.option("--int8-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax", show_default=True,
              help="backbone scope: how int8 activation ranges are calibrated.")
@click.option("--nn-rerank", type=click.IntRange(1, 3840), default=None, metavar="C",
              help="Memory-bank detectors: a two-stage nearest-neighbour head in the engines. C candidates per query from the "
                   "bank's leading principal directions, then the exact fp32 distance for those only. Exact whenever the "
                   "true neighbour is a candidate; the parity gate compares it with the full eager head. It pays only "
                   "where the fp32 GEMM is slow: measure on the target CPU (docs/PRECISION.md).")
@click.option("--nn-rerank-dim", type=click.IntRange(1, 4096), default=PCA_PROJECTION_DIM, show_default=True, help="Principal directions used to find the candidates.")
@click.option("--opset", type=click.IntRange(17, 21), default=17, show_default=True, help="ONNX opset.")
@click.option("--max-batch", type=click.IntRange(1, 4096), default=32, show_default=True, help="Largest batch the engines are declared for.")
@click.option("--golden", type=click.IntRange(2, 256), default=8, show_default=True, help="Number of held-out calibration images in the golden self-test set.")
@click.option("--tensorrt", is_flag=True, help="Also build a TensorRT engine (needs TensorRT and an NVIDIA GPU).")
@click.option("--force", is_flag=True, help="Replace an existing bundle at --out (only a bundle: never another folder, the run, or a folder holding it).")
@click.option("--sign-key", type=click.Path(dir_okay=False, exists=True), default=None, help="Sign the bundle digest with this Ed25519 PEM private key (see 'keygen'); writes bundle.sig.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
def export(run_dir: Path, category: str | None, out_dir: Path, precision: str, int8_scope: str, int8_candidates: int, int8_projection: int | None, int8_calibration: int, int8_method: str, nn_rerank: int | None, nn_rerank_dim: int, opset: int, max_batch: int, golden: int, tensorrt: bool, force: bool, sign_key: str | None, as_json: bool) -> None:
    """Export a trained run to a self-contained deployment bundle.

    Traces the detector's inference module (backbone and scoring head) to ONNX, checks
    ONNX Runtime against eager PyTorch on held-out calibration images (the parity gate),
    and writes bundle.json (manifest with thresholds, provenance and checksums),
    model.onnx and golden.npz. The bundle is written to a hidden work folder, checked with
    'validate', optionally signed, and swapped into place at the end: a failed export leaves
    nothing that validates. Prints the bundle digest (sha256:...) to pin in release pipelines.

    Exit codes (the shared table below): 2 a bad option or one the run's detector cannot take,
    8 --out exists and is not replaced (or cannot be written), 5 TensorRT unavailable,
    6 parity gate failed, 7 the signing key cannot be used, 1 a run that cannot be exported.
    """
    from pyimgano_deploy.bundles.errors import SignatureError
    from pyimgano_deploy.bundles.replace import UnsafeOutputError
    from pyimgano_deploy.exporters.bundle_export import BundleExistsError, ExportOptions, OutputNotWritableError, export_run
    from pyimgano_deploy.exporters.onnx_export import ExportError
    from pyimgano_deploy.bundles.parity import ParityError
    from pyimgano_deploy.exporters.run_source import RunDirError
    from pyimgano_deploy.exporters.tensorrt_build import TensorRTUnavailableError
    from pyimgano_deploy.models.detectors.reranked_distance import NoNearestNeighbourHeadError

    try:
        opts = ExportOptions(precision=precision, int8_scope=int8_scope, int8_candidates=int8_candidates,
                             int8_projection=int8_projection, int8_calibration=int8_calibration, int8_method=int8_method,
                             nn_rerank=nn_rerank, nn_rerank_dim=nn_rerank_dim, opset=opset, max_batch=max_batch, golden=golden, tensorrt=tensorrt, force=force,
                             sign_key=sign_key)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    try:
        result = export_run(run_dir, out_dir, opts, category=category)
    except SignatureError as exc:
        fail(str(exc), exc.exit_code, as_json=as_json)
    except (BundleExistsError, UnsafeOutputError, OutputNotWritableError) as exc:
        fail(str(exc), EXIT_OUTPUT, as_json=as_json)
    except NoNearestNeighbourHeadError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    except (RunDirError, ExportError, ValueError, FileNotFoundError) as exc:
        fail(str(exc), EXIT_FAILED, as_json=as_json)
    except ParityError as exc:
        fail(str(exc), ParityError.exit_code, as_json=as_json)
    except TensorRTUnavailableError as exc:
        fail(str(exc), EXIT_ENGINE, as_json=as_json)
    summary = {
        "bundle": str(result.bundle_dir),
        "digest": result.digest,
        "signed": sign_key is not None,
        "engines": [e["file"] for e in result.manifest["engines"]],
        "parity": {p: r.to_manifest() for p, r in result.parity.items()},
        "tensorrt_compatibility": result.compat,
        "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        click.echo(f"bundle written to {result.bundle_dir} ({', '.join(summary['engines'])}); total {summary['timings_s']['total']:.1f} s", err=True)
        click.echo(f"digest: {result.digest}" + (" (signed)" if sign_key else ""))

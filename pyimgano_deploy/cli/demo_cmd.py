"""``pyimgano-deploy demo``: the whole flow on a generated data set, through the real commands."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_OUTPUT
from pyimgano_deploy.cli.failing import fail
from pyimgano_deploy.models.registry import list_models, model_entry

#: written into --out by the demo; only a folder holding it is ever replaced by a later demo
DEMO_MARKER = ".pyimgano-demo"
DEMO_MARKER_SCHEMA_VERSION = "1.0"


def prepare_out(out_dir: Path) -> None:
    """Make ``out_dir`` ready: create it, or replace an earlier demo's output (recognised by
    its marker). Any other existing, non-empty folder is refused untouched (exit code 8)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        fail(f"--out {out_dir} exists and is not a folder; choose another --out", EXIT_OUTPUT)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / DEMO_MARKER).is_file():
            fail(f"--out {out_dir} exists and is not a demo output folder (no {DEMO_MARKER}); nothing was deleted: "
                 "choose another --out or empty it yourself", EXIT_OUTPUT)
        click.echo(f"replacing the previous demo output in {out_dir}", err=True)
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DEMO_MARKER).write_text(
        json.dumps({"schema_version": DEMO_MARKER_SCHEMA_VERSION, "written_by": "pyimgano-deploy demo",
                    "note": "the next 'demo --out' to this folder replaces it"}) + "\n", encoding="utf-8")


def _step(title: str, args: list[str]) -> None:
    from pyimgano_deploy.cli import main

    click.secho(f"\n==> pyimgano-deploy {' '.join(args)}", fg="cyan", err=True)
    click.echo(f"    ({title})", err=True)
    try:
        main.main(args, prog_name="pyimgano-deploy", standalone_mode=False)
    except SystemExit as exc:
        if exc.code not in (0, None):
            click.echo(f"demo: step '{title}' failed with exit code {exc.code}", err=True)
            sys.exit(int(exc.code) if isinstance(exc.code, int) else 1)


@click.command("demo", epilog=EXIT_CODE_TABLE)
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for every artefact (created; only an earlier demo's output is replaced).")
@click.option("--model", default="vision_patchcore", show_default=True, type=click.Choice(list_models()), help="Detector to train (every registered model; see `pyimgano-deploy models`).")
@click.option("--size", default=128, show_default=True, type=click.IntRange(64, 512), help="Side of the generated images (px).")
@click.option("--pretrained/--random-init", default=True, show_default=True, help="Use the packaged ImageNet EfficientNet-Lite0 weights (offline).")
def demo(out_dir: Path, model: str, size: int, pretrained: bool) -> None:
    """Generate a synthetic industrial data set, then train -> export -> infer -> inspect -> validate.

    Everything runs on this machine, offline, in about a minute on 2 CPU cores, and every
    step goes through the same command a user would type.
    """
    if pretrained and not model_entry(model).metadata.get("packaged_weights", True):
        raise click.UsageError(f"--model {model}: its backbone's pretrained weights cannot be installed (they load from a local "
                               "file, see `pyimgano-deploy models info`); run the demo with --random-init")
    prepare_out(out_dir)
    run, bundle, results = out_dir / "run", out_dir / "bundle", out_dir / "results.jsonl"
    cfg = {
        "name": "demo",
        "recipe": "industrial-adapt",
        "model": {"name": model, "kwargs": {"pretrained": pretrained, "image_size": size}},
        "dataset": {"kind": "synthetic", "root": str(out_dir / "data"), "n_train": 40, "n_test": 20, "size": size},
        "output": {"dir": str(run)},
        "seed": 0,
    }
    cfg_path = out_dir / "demo_config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    _step("fit, calibrate on held-out normals, evaluate, write the run directory", ["train", "--config", str(cfg_path)])
    _step("export to ONNX, check parity against eager, write the bundle", ["export", "--run", str(run), "--out", str(bundle)])
    test_dir = out_dir / "data" / "surface" / "test"
    _step("score the test images with the torch-free runtime", ["infer", "--bundle", str(bundle), "--input", str(test_dir), "--save-jsonl", str(results), "--save-maps", str(out_dir / "maps"), "--max-errors", "0"])
    _step("describe the bundle on one page, as an integrator checks it before deploying", ["inspect", str(bundle)])
    _step("validate the bundle as a release pipeline would", ["validate", str(bundle)])
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    image = report.get("metrics", {}).get("image", {})
    click.secho("\nDemo finished. Artefacts:", fg="green", err=True)
    for label, path in [
        ("generated data set", out_dir / "data" / "surface"),
        ("run directory", run),
        ("human report", run / "report.html"),
        ("deployment bundle", bundle),
        ("inference results", results),
        ("anomaly maps", out_dir / "maps"),
    ]:
        click.echo(f"  {label:<20} {path}", err=True)
    auroc = image.get("auroc")
    if auroc is not None:
        click.echo(f"  image AUROC on the generated test split: {auroc:.3f}", err=True)

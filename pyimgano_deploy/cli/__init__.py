"""The ``pyimgano-deploy`` command group.

Each subcommand lives in its own module and is imported lazily, so ``--help`` and the
torch-free commands (``infer``, ``validate``) never pay for torch.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from pyimgano_deploy._version import __version__

# command name -> (module, attribute, one-line help shown in the group's --help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("pyimgano_deploy.cli.demo_cmd", "demo", "Run the whole pipeline on a generated synthetic data set."),
    "models": ("pyimgano_deploy.cli.models_cmd", "models", "List registered detectors and their capabilities."),
    "recipes": ("pyimgano_deploy.cli.recipes_cmd", "recipes", "List training recipes."),
    "train": ("pyimgano_deploy.cli.train_cmd", "train", "Fit, calibrate and evaluate a detector; write a run directory."),
    "export": ("pyimgano_deploy.cli.export_cmd", "export", "Export a run to a deployment bundle (ONNX, optional TensorRT)."),
    "export-triton": ("pyimgano_deploy.cli.export_triton_cmd", "export_triton", "Write a Triton model repository (ONNX engine + Python pre/post + ensemble) from a bundle."),
    "build-engine": ("pyimgano_deploy.cli.build_engine_cmd", "build_engine", "Build a TensorRT engine for a bundle on this GPU."),
    "infer": ("pyimgano_deploy.cli.infer_cmd", "infer", "Score images with a bundle (torch-free); write JSONL."),
    "validate": ("pyimgano_deploy.cli.validate_cmd", "validate", "Check a bundle for a release pipeline; exit codes per failure."),
    "inspect": ("pyimgano_deploy.cli.inspect_cmd", "inspect", "Describe a bundle on one page: model, input, engines, thresholds, metrics."),
    "recalibrate": ("pyimgano_deploy.cli.recalibrate_cmd", "recalibrate", "Re-set a bundle's thresholds on normal images from the line; write a new bundle (torch-free)."),
    "compare": ("pyimgano_deploy.cli.compare_cmd", "compare", "Compare two results files: inputs, status changes, label flips, score deltas; gates."),
    "keygen": ("pyimgano_deploy.cli.keygen_cmd", "keygen", "Make an Ed25519 key pair to sign bundles (export --sign-key)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in _COMMANDS.items() if importlib.util.find_spec(module) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr, _ = entry
        if importlib.util.find_spec(module_name) is None:
            return None
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="pyimgano-deploy")
def main() -> None:
    """pyimgano-deploy: train anomaly detectors, export them to ONNX/TensorRT bundles,
    and run them torch-free on the factory floor.

    \b
    Typical flow:
      pyimgano-deploy train  --config cfg.json
      pyimgano-deploy export --run runs/NAME --out bundle/
      pyimgano-deploy infer  --bundle bundle/ --input images/ --save-jsonl out.jsonl
      pyimgano-deploy validate bundle/
    """


__all__ = ["main"]

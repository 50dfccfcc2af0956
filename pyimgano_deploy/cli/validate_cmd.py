"""``pyimgano-deploy validate``: check a bundle for a release pipeline, with exit codes.

0 ok; 1 unexpected internal error; 2 usage error; 3 invalid bundle (schema, missing file,
path outside, bad thresholds); 4 checksum mismatch; 5 engine cannot load here; 6 parity failure.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from pyimgano_deploy.runtimes.validation import ValidationReport

_MEANING = {
    0: "OK",
    3: "invalid bundle",
    4: "checksum mismatch",
    5: "engine cannot load here",
    6: "golden parity failure",
}


def _print_table(report: ValidationReport) -> None:
    checks = report.checks
    width = max([len("CHECK")] + [len(c.name) for c in checks])
    click.echo(f"bundle: {report.bundle}")
    click.echo(f"{'CHECK':<{width}}  STATUS  DETAIL")
    for check in checks:
        first, *rest = (check.detail or "").splitlines() or [""]
        click.echo(f"{check.name:<{width}}  {check.status.upper():<6}  {first}")
        for line in rest:
            click.echo(f"{'':<{width}}  {'':<6}  {line}")
    code = report.exit_code
    verdict = "OK" if code == 0 else f"FAILED: {_MEANING.get(code, 'error')}"
    click.echo(f"result: {verdict} (exit {code})")


@click.command("validate")
@click.argument("bundle", type=click.Path())
@click.option("--engine", type=click.Choice(["auto", "onnx", "tensorrt"]), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for archiving).")
def validate(bundle: str, engine: str, device: str, as_json: bool) -> None:
    """Validate BUNDLE: schema, files, checksums, thresholds, engine load and golden parity.

    Exit codes: 0 ok, 3 invalid bundle, 4 checksum mismatch, 5 engine cannot load here,
    6 parity failure (1 unexpected internal error, 2 usage error).
    """
    from pyimgano_deploy.runtimes.validation import validate_bundle

    report = validate_bundle(bundle, engine=engine, device=device)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        _print_table(report)
    sys.exit(report.exit_code)

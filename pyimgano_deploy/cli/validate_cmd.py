"""``pyimgano-deploy validate``: check a bundle for a release pipeline, with exit codes
(:mod:`pyimgano_deploy.bundles.exit_codes`)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, MEANINGS
from pyimgano_deploy.runtimes.selection import PRECISIONS

if TYPE_CHECKING:
    from pyimgano_deploy.runtimes.validation import ValidationReport

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
    if report.digest:
        click.echo(f"digest: {report.digest}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    code = report.exit_code
    verdict = "OK" if code == 0 else f"FAILED: {MEANINGS.get(code, 'error')}"
    click.echo(f"result: {verdict} (exit {code})")


@click.command("validate", epilog=EXIT_CODE_TABLE)
@click.argument("bundle", type=click.Path())
@click.option("--engine", type=click.Choice(["auto", "onnx", "tensorrt"]), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="auto", show_default=True,
              help="Engine file to gate: auto picks as infer does (fp32 on CPU, fp16 on a GPU); name one to check "
                   "a file this machine would not pick (exit 5 when the bundle has none).")
@click.option("--expect-digest", default=None, metavar="sha256:HEX", help="Pin the bundle: fail (exit 4) unless its digest is this one (export prints it).")
@click.option("--public-key", type=click.Path(dir_okay=False), default=None, help="Require bundle.sig to verify with this Ed25519 PEM public key (exit 7).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for archiving; includes the digest).")
def validate(bundle: str, engine: str, device: str, precision: str, expect_digest: str | None, public_key: str | None, as_json: bool) -> None:
    """Validate BUNDLE: schema, files, checksums and digest, signature, thresholds, engine load,
    golden parity (the export's own gate) and the whole pipeline on the golden source files."""
    from pyimgano_deploy.bundles.identity import parse_digest
    from pyimgano_deploy.runtimes.validation import validate_bundle

    if expect_digest is not None:
        try:
            parse_digest(expect_digest)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expect-digest") from exc
    report = validate_bundle(bundle, engine=engine, device=device, precision=precision, expected_digest=expect_digest, public_key=public_key)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        _print_table(report)
    sys.exit(report.exit_code)

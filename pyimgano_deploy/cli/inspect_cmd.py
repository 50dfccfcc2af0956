"""``pyimgano-deploy inspect``: what a bundle is, on one page, after verifying its files."""

from __future__ import annotations

import json

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE
from pyimgano_deploy.cli.failing import fail


@click.command("inspect", epilog=EXIT_CODE_TABLE)
@click.argument("bundle", type=click.Path())
@click.option("--expect-digest", default=None, metavar="sha256:HEX", help="Refuse the bundle unless its digest is this one (exit 4).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def inspect(bundle: str, expect_digest: str | None, as_json: bool) -> None:
    """Describe BUNDLE: digest and signature, model and its key parameters, input contract and
    what the training images were, engines, thresholds with their provenance, the run's test
    metrics, export parity and the export machine.

    The files are verified first (schema, paths, checksums; exit 3 or 4), and no engine is
    loaded, so this runs anywhere. For the release checks (engine, golden parity, the whole
    pipeline) run `pyimgano-deploy validate`.
    """
    from pyimgano_deploy.bundles import BundleError, read_bundle
    from pyimgano_deploy.bundles.summary import describe_bundle, summary_lines

    try:
        described = describe_bundle(read_bundle(bundle, expected_digest=expect_digest))
    except BundleError as exc:
        fail(f"invalid bundle {bundle}: {exc}", exc.exit_code, as_json=as_json)
    if as_json:
        click.echo(json.dumps(described, indent=2, sort_keys=True))
    else:
        for line in summary_lines(described):
            click.echo(line)

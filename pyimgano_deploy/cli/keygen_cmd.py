"""``pyimgano-deploy keygen``: an Ed25519 key pair for signing bundles."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from pyimgano_deploy.bundles.exit_codes import EXIT_CODE_TABLE, EXIT_OUTPUT


@click.command("keygen", epilog=EXIT_CODE_TABLE)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for the two key files (created; existing keys are never overwritten).")
def keygen(out_dir: Path) -> None:
    """Write bundle_signing.key (private, PEM PKCS#8, mode 0600) and bundle_signing.pub (PEM).

    \b
    Sign:   pyimgano-deploy export --run R --out B --sign-key DIR/bundle_signing.key
    Verify: pyimgano-deploy validate B --public-key DIR/bundle_signing.pub
    Keep the private key off the machines that only run bundles. Needs the 'sign' extra
    (pip install 'pyimgano-deploy[sign]').
    """
    from pyimgano_deploy.bundles.errors import SignatureError
    from pyimgano_deploy.bundles.signing import generate_keypair

    try:
        private_path, public_path = generate_keypair(out_dir)
    except SignatureError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # keys that exist (never overwritten), or a folder that cannot be written
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_OUTPUT)
    click.echo(f"private key: {private_path}  (keep it secret)")
    click.echo(f"public key:  {public_path}  (give it to validate/infer --public-key)")

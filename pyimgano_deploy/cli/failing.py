"""How every command stops on an error: one ``error: ...`` line on stderr (and, with ``--json``,
``{"ok": false, "error", "exit_code"}`` on stdout), then the exit code of
:mod:`pyimgano_deploy.bundles.exit_codes`."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click


def fail(message: str, code: int, *, as_json: bool = False) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message, "exit_code": code}))
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


__all__ = ["fail"]

"""Running the real ``pyimgano-deploy`` entry point in-process, and reading its JSONL output."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pyimgano_deploy.cli import main


def run_cli(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of one command, reading ``stdin`` as its standard input;
    a bug (not a SystemExit) is re-raised."""
    result = CliRunner().invoke(main, list(args), input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def jsonl_records(path: Path) -> list[dict]:
    """Every line of a JSONL file, parsed."""
    return [json.loads(line) for line in Path(path).read_bytes().splitlines()]

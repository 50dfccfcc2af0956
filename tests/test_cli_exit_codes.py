"""One exit-code table: every command's --help prints it, and the README's table is the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pyimgano_deploy.bundles.exit_codes import MEANINGS
from pyimgano_deploy.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("command", main.list_commands(None))
def test_every_command_help_prints_the_shared_exit_codes(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Exit codes:" in result.output
    for code, meaning in MEANINGS.items():
        assert f"{code}  {meaning}" in result.output


def test_readme_lists_every_exit_code_of_the_table() -> None:
    section = README.read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert rows == set(MEANINGS)

"""The shell completion the README tells users to enable answers for the installed script."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def test_bash_completion_of_a_command_name() -> None:
    script = shutil.which("pyimgano-deploy")
    if script is None:
        pytest.skip("the pyimgano-deploy script is not on PATH (pip install -e . installs it)")
    env = {**os.environ, "_PYIMGANO_DEPLOY_COMPLETE": "bash_complete", "COMP_WORDS": "pyimgano-deploy reca", "COMP_CWORD": "1"}
    out = subprocess.run([script], env=env, capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["plain,recalibrate"]

"""benchmarks/bench_int8.py's model options: the PatchCore kwargs and the models measured."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _rundir import PATCHCORE_REGISTRY_KWARGS  # noqa: E402
from bench_int8 import parse_args  # noqa: E402


def test_defaults_are_the_issue_s_registry_patchcore_and_both_models():
    args = parse_args([])
    assert args.patchcore_kwargs == PATCHCORE_REGISTRY_KWARGS
    assert args.models.split(",") == ["vision_patchcore", "vision_padim"]


def test_an_empty_object_selects_the_default_recipe_s_patchcore():
    assert parse_args(["--patchcore-kwargs", "{}", "--models", "vision_patchcore"]).patchcore_kwargs == {}


@pytest.mark.parametrize("argv, message", [
    (["--patchcore-kwargs", "[1]"], "expected a JSON object"),
    (["--patchcore-kwargs", "{oops"], "not JSON"),
    (["--models", "vision_spade"], "unknown"),
])
def test_bad_options_are_refused_with_what_was_expected(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err

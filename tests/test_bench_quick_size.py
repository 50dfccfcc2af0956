"""benchmarks/: quick mode (``_rundir.train_cli_default``) shrinks every size policy, whatever its short side."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _rundir import quick_size  # noqa: E402
from bench_accuracy import TRIED  # noqa: E402


def test_quick_size_shrinks_every_keep_aspect_policy_and_keeps_fixed_sizes():
    assert quick_size("keep_aspect") == "keep_aspect:64"
    assert quick_size("keep_aspect:320") == "keep_aspect:64"  # a str.replace made this 'keep_aspect:64:320'
    assert quick_size(224) == 224 and quick_size([224, 544]) == [224, 544]


def test_every_tried_row_has_a_valid_quick_size():
    from pyimgano_deploy.workbench.size_policy import is_size_policy, short_side

    for _, _, kwargs in TRIED:
        size = quick_size(kwargs.get("image_size", 224))
        assert not is_size_policy(size) or short_side(size) == 64

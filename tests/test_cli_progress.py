"""The progress bar of infer and recalibrate: drawn on a terminal unless --no-progress or --json."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import run_cli

from pyimgano_deploy.cli import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("asked, as_json, terminal, drawn", [
    (True, False, True, True), (False, False, True, False), (True, True, True, False), (True, False, False, False),
])
def test_the_bar_is_drawn_only_when_asked_on_a_terminal_without_json(
    monkeypatch: pytest.MonkeyPatch, asked: bool, as_json: bool, terminal: bool, drawn: bool
) -> None:
    monkeypatch.setattr(progress.sys, "stderr", _Terminal() if terminal else io.StringIO())
    assert progress.bar_wanted(asked, as_json) is drawn


def _line(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i, image in enumerate(random_images(n, 40, 48, seed=3)):
        assert cv2.imwrite(str(folder / f"{i}.png"), image)
    return folder


def test_infer_and_recalibrate_take_no_progress(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "b")
    line = _line(tmp_path / "line", 4)
    code, _, err = run_cli("infer", "--bundle", str(bundle), "--input", str(line), "--save-jsonl", str(tmp_path / "r.jsonl"),
                           "--no-progress")
    assert code == 0, err
    code, _, err = run_cli("recalibrate", "--bundle", str(bundle), "--normal", str(line), "--out", str(tmp_path / "b2"),
                           "--no-progress")
    assert code == 0, err

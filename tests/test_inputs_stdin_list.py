"""``--input @-``: the list of inputs read from standard input, one per line or NUL-separated."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import pytest
from bundle_factory import build_tiny_bundle, random_images
from cli_helpers import jsonl_records, run_cli

from pyimgano_deploy.runtimes.sources import STDIN_LIST, expand_inputs


def _images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in names]
    for path, image in zip(paths, random_images(len(names), 40, 48, seed=3)):
        assert cv2.imwrite(str(path), image)
    return paths


def test_lines_on_stdin_are_specs_in_their_order(tmp_path: Path) -> None:
    b, a = _images(tmp_path / "d", ["b.png", "a.png"])
    text = f"# from the line PC\n{b}\n\n  {a}  \n{tmp_path / 'none*.png'}\n".encode()
    plan = expand_inputs([STDIN_LIST], stdin=io.BytesIO(text))
    assert plan.items == [str(b), str(a)] and plan.unmatched == [str(tmp_path / "none*.png")]


def test_nul_separated_names_are_taken_exactly(tmp_path: Path) -> None:
    (odd,) = _images(tmp_path, [" lead and\nnewline.png"])
    plan = expand_inputs([STDIN_LIST], stdin=io.BytesIO(os.fsencode(odd) + b"\0"))
    assert plan.items == [str(odd)]


def test_a_name_that_is_not_utf8_is_kept(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"
    plan = expand_inputs([STDIN_LIST], stdin=io.BytesIO(raw + b"\n"))
    assert [os.fsencode(p) for p in plan.items] == [raw]


def test_stdin_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only once"):
        expand_inputs([STDIN_LIST, STDIN_LIST], stdin=io.BytesIO(b""))


def test_infer_scores_a_list_piped_to_it(tmp_path: Path) -> None:
    paths = _images(tmp_path / "line", ["0.png", "1.png", "2.png"])
    out = tmp_path / "r.jsonl"
    listing = b"".join(os.fsencode(p) + b"\0" for p in paths[::-1])
    code, stdout, err = run_cli("infer", "--bundle", str(build_tiny_bundle(tmp_path / "b")), "--input", STDIN_LIST,
                                "--save-jsonl", str(out), "--json", stdin=listing)
    assert code == 0, err
    assert json.loads(stdout)["processed"] == 3
    assert [r["input"] for r in jsonl_records(out)] == [str(p) for p in paths[::-1]]


def test_an_empty_stdin_list_is_the_no_image_error(tmp_path: Path) -> None:
    code, _, err = run_cli("infer", "--bundle", str(build_tiny_bundle(tmp_path / "b")), "--input", STDIN_LIST,
                           "--save-jsonl", str(tmp_path / "r.jsonl"), stdin=b"")
    assert code == 1 and "no image files found in --input '@-'" in err


def test_watch_refuses_a_list_on_stdin(tmp_path: Path) -> None:
    code, _, err = run_cli("infer", "--bundle", str(tmp_path / "b"), "--input", STDIN_LIST, "--watch",
                           "--save-jsonl", str(tmp_path / "r.jsonl"), stdin=b"")
    assert code == 2 and "can be read only once" in err

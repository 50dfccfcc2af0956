"""Expand command-line input specs into an ordered list of image paths.

A spec is one of:

* ``@list.txt`` or an existing ``*.txt`` file: one spec per line (blank lines and ``#``
  comments ignored; lines are directories, globs or files, not further lists);
* ``@-`` (:data:`STDIN_LIST`): such a list read from standard input, once, for a pipe from
  ``find`` or a line controller; NUL-separated entries (``find -print0``) are taken exactly as
  they are, since no file name holds a NUL byte. Names are decoded as the file system's
  (``os.fsdecode``), so a name that is not valid UTF-8 is kept;
* a directory: every file below it, recursively, sorted by path, following symlinked
  sub-folders (each real folder once: a link back to a folder already walked is reported in
  ``loops``); files whose extension is not an image extension are reported in ``skipped``
  (nothing is silently dropped);
* a glob (``*``, ``?``, ``[``): its matches, sorted; directories are expanded as above,
  non-image files are skipped; a glob matching nothing is reported in ``unmatched``;
* anything else: an explicit file, kept whatever its extension or existence (the runtime
  turns a missing file or an unsupported extension into an error record).

Duplicates (the same resolved path, whatever the spelling or links) are kept once, at their
first position.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

from pyimgano_deploy.inputs import IMAGE_EXTENSIONS

_GLOB_CHARS = ("*", "?", "[")
#: the input spec that reads a list of specs from standard input
STDIN_LIST = "@-"


@dataclass
class InputPlan:
    """Inputs in processing order, plus what was found but not used."""

    items: list[str] = field(default_factory=list)
    #: ``os.path.realpath`` of each item, in the same order (what records and ``--resume`` use)
    resolved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    #: symlinked folders not walked because their target was already walked (a loop or an alias)
    loops: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(self, path: str) -> None:
        key = os.path.realpath(path)  # one record per file, however it is spelled or linked
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(path)
            self.resolved.append(key)

    def nothing_found(self, option: str, specs: Sequence[str | os.PathLike[str]]) -> str:
        """The error for a plan with no image: what was given, what was skipped, what is read."""
        given = ", ".join(repr(str(s)) for s in specs)
        skipped = ""
        if self.skipped:
            shown = ", ".join(Path(p).name for p in self.skipped[:3]) + (" …" if len(self.skipped) > 3 else "")
            skipped = f"; {len(self.skipped)} file(s) skipped for their extension or a dangling link ({shown})"
        return f"no image files found in {option} {given}{skipped}; image files end in {', '.join(IMAGE_EXTENSIONS)}"


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _walk(plan: InputPlan, directory: str) -> list[str]:
    """Files below ``directory``, following symlinked folders, each real folder once."""
    found = []
    st = os.stat(directory)
    visited = {(st.st_dev, st.st_ino)}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            try:
                sub = os.stat(full)
            except OSError:
                plan.skipped.append(full)  # a dangling link: reported, not dropped
                continue
            key = (sub.st_dev, sub.st_ino)
            if key in visited:
                plan.loops.append(full)
                continue
            visited.add(key)
            keep.append(name)
        dirnames[:] = keep
        found.extend(os.path.join(dirpath, name) for name in filenames)
    return sorted(found, key=lambda p: Path(p).as_posix())


def _add_found(plan: InputPlan, paths: Sequence[str]) -> None:
    for path in paths:
        if is_image_path(path):
            plan.add(path)
        else:
            plan.skipped.append(path)


def _read_list(list_file: str) -> list[str]:
    path = Path(list_file)
    if not path.is_file():
        raise ValueError(f"input list file not found: {list_file}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read input list file {list_file}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _read_stdin_list(stream: BinaryIO) -> list[str]:
    data = stream.read()
    if b"\0" in data:  # find -print0: each entry exactly as written, spaces and newlines included
        return [os.fsdecode(entry) for entry in data.split(b"\0") if entry]
    lines = (os.fsdecode(line).strip() for line in data.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _expand_one(plan: InputPlan, spec: str) -> None:
    if os.path.isdir(spec):
        _add_found(plan, _walk(plan, spec))
    elif any(c in spec for c in _GLOB_CHARS) and not os.path.exists(spec):
        matches = sorted(glob.glob(spec, recursive=True), key=lambda p: Path(p).as_posix())
        if not matches:
            plan.unmatched.append(spec)
        for match in matches:
            if os.path.isdir(match):
                _add_found(plan, _walk(plan, match))
            else:
                _add_found(plan, [match])
    else:
        plan.add(spec)


def expand_inputs(specs: Sequence[str | os.PathLike[str]], stdin: BinaryIO | None = None) -> InputPlan:
    """Expand ``specs`` (see the module docstring); ``ValueError`` for an unreadable list file,
    or :data:`STDIN_LIST` given twice. ``stdin``: the byte stream ``@-`` reads (standard input
    when ``None``)."""
    plan = InputPlan()
    if sum(os.fspath(s) == STDIN_LIST for s in specs) > 1:
        raise ValueError(f"{STDIN_LIST} (the list on standard input) can be read only once; give it once")
    for raw in specs:
        spec = os.fspath(raw)
        if spec == STDIN_LIST:
            lines = _read_stdin_list(sys.stdin.buffer if stdin is None else stdin)
        elif spec.startswith("@"):
            lines = _read_list(spec[1:])
        elif spec.lower().endswith(".txt") and os.path.isfile(spec):
            lines = _read_list(spec)
        else:
            _expand_one(plan, spec)
            continue
        for line in lines:
            _expand_one(plan, line)
    return plan

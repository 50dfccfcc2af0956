"""Write bundle.json: hash every file in the bundle directory into ``files`` and validate."""

from __future__ import annotations

import copy
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from pyimgano_deploy.bundles.errors import InvalidBundleError, format_problems
from pyimgano_deploy.bundles.hashing import sha256_file
from pyimgano_deploy.bundles.manifest import (
    INCOMPLETE_MARKER,
    MANIFEST_NAME,
    relative_path_problem,
    to_jsonable,
    validate_manifest,
)
from pyimgano_deploy.bundles.signing import SIGNATURE_NAME

#: files of a bundle folder that ``files`` never lists
_NOT_LISTED = (MANIFEST_NAME, SIGNATURE_NAME, INCOMPLETE_MARKER)


def scan_bundle_files(bundle_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``[{path, sha256, bytes}]`` for every regular file under ``bundle_dir`` except bundle.json,
    bundle.sig and the incomplete marker.

    Sorted by path. Symlinks and special files are refused (``InvalidBundleError`` naming them),
    as are names the reader would refuse (backslashes and the like).
    """
    root = Path(bundle_dir)
    problems: list[str] = []
    entries: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                rel = (here / name).relative_to(root).as_posix()
                problems.append(f"{rel}: is a symlink (to a directory); bundles may not contain symlinks")
        for name in sorted(filenames):
            full = here / name
            rel = full.relative_to(root).as_posix()
            if rel in _NOT_LISTED:
                continue
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{rel}: is a symlink; bundles may not contain symlinks, copy the file instead")
                continue
            if not stat.S_ISREG(mode):
                problems.append(f"{rel}: is not a regular file")
                continue
            bad = relative_path_problem(rel)
            if bad:
                problems.append(f"{rel}: {bad}")
                continue
            entries.append({"path": rel, "sha256": sha256_file(full), "bytes": full.stat().st_size})
    if problems:
        raise InvalidBundleError(format_problems(f"cannot write a manifest for {root}", problems), problems=problems)
    entries.sort(key=lambda e: e["path"])
    return entries


def manifest_text(manifest: dict[str, Any]) -> str:
    """The exact bytes written to bundle.json: indent=2, sorted keys, ASCII, trailing newline."""
    return json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_manifest(bundle_dir: str | os.PathLike[str], manifest_without_files: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under ``bundle_dir`` (except bundle.json) into ``files``, validate, write.

    A ``files`` key already in ``manifest_without_files`` is replaced (so a manifest read from a
    bundle can be rewritten after adding a file). numpy scalars, tuples and paths are converted
    to JSON types. The input dict is not modified. Writing is atomic (temp file + rename), and
    the same inputs always give byte-identical bundle.json. Returns the full manifest.
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise InvalidBundleError(f"bundle directory not found: {root}")
    try:
        manifest = to_jsonable(copy.deepcopy(dict(manifest_without_files)))
    except TypeError as exc:
        raise InvalidBundleError(f"invalid bundle manifest: {exc}") from exc
    manifest["files"] = scan_bundle_files(root)
    validate_manifest(manifest)
    text = manifest_text(manifest)
    fd, tmp_name = tempfile.mkstemp(prefix=".bundle.json.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, root / MANIFEST_NAME)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return manifest

"""Replacing a bundle folder safely: only a bundle is ever replaced, and readers never see half.

An export writes into the hidden sibling ``.NAME.tmp-PID`` (holding the ``.incomplete`` marker
until it is finished), then swaps it with ``NAME`` in one ``renameat2(RENAME_EXCHANGE)`` where
the OS has it, so a reader sees either the old bundle or the new one. The old bundle, now at
the hidden name, is marked incomplete and deleted. Work folders a killed export left behind
are removed by the next export to the same place (or reported when their process still runs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path
from typing import Callable

from pyimgano_deploy.bundles.errors import BundleError
from pyimgano_deploy.bundles.identity import read_manifest_file
from pyimgano_deploy.bundles.manifest import INCOMPLETE_MARKER, LEFTOVER_DIR, MANIFEST_NAME
from pyimgano_deploy.bundles.signing import SIGNATURE_NAME

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class UnsafeOutputError(FileExistsError):
    """The output folder is not something this command may replace; nothing was touched."""


class BundleExistsError(FileExistsError):
    """The output directory exists and ``force`` was not given."""


class OutputNotWritableError(OSError):
    """The bundle's folder (or the work folder beside it) cannot be created; names the path."""


def _listed_paths(manifest: object) -> set[str]:
    files = manifest.get("files") if isinstance(manifest, dict) else None
    return {f["path"] for f in files if isinstance(f, dict) and isinstance(f.get("path"), str)} if isinstance(files, list) else set()


def replaceable_bundle_problem(out: Path) -> str | None:
    """Why the existing ``out`` may not be replaced by a new bundle (``None``: it is a bundle and
    holds nothing but the files its manifest lists)."""
    if out.is_symlink():
        return f"{out} is a symlink; give the real folder"
    if not out.is_dir():
        return f"{out} exists and is not a folder"
    manifest_path = out / MANIFEST_NAME
    if not manifest_path.exists():
        return f"{out} is not a bundle (no {MANIFEST_NAME}); --force only replaces an existing bundle"
    try:
        manifest = read_manifest_file(manifest_path)
    except BundleError as exc:
        return f"{out} does not hold a readable bundle manifest ({exc}); --force only replaces an existing bundle"
    listed = _listed_paths(manifest) | {MANIFEST_NAME, SIGNATURE_NAME, INCOMPLETE_MARKER}
    extra = []
    for dirpath, dirnames, filenames in os.walk(out):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = full.relative_to(out).as_posix()
            if full.is_dir() and not full.is_symlink():
                continue
            if rel not in listed:
                extra.append(rel)
    if extra:
        shown = ", ".join(sorted(extra)[:5]) + (" ..." if len(extra) > 5 else "")
        return f"{out} holds {len(extra)} file(s) that are not part of the bundle ({shown}); move them away first"
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path, log: Callable[[str], None]) -> None:
    """Remove the work folders (``.NAME.tmp-PID``, ``.NAME.old-PID``) of earlier exports to ``out``
    whose process is gone; ``UnsafeOutputError`` when one still runs (two exports to one place)."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        match = LEFTOVER_DIR.match(entry.name)
        if not match or match["name"] != out.name or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(match["pid"])
        if _pid_alive(pid) and pid != os.getpid():
            raise UnsafeOutputError(f"another export (process {pid}) is writing {out} (work folder {entry}); wait for it")
        log(f"removing {entry}: the work folder of an interrupted export")
        shutil.rmtree(entry)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2(RENAME_EXCHANGE)``; False where unsupported."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is None:
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False  # this kernel or file system cannot exchange
    raise OSError(err, os.strerror(err), str(a))


def install_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an existing ``out`` (see module doc)."""
    marker = tmp / INCOMPLETE_MARKER
    if marker.exists():
        marker.unlink()
    if not os.path.lexists(out):
        os.replace(tmp, out)
        return
    if _exchange(tmp, out):
        old = tmp  # after the swap the hidden name holds the previous bundle
    else:
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
    (old / INCOMPLETE_MARKER).write_text("replaced\n", encoding="utf-8")
    shutil.rmtree(old)


def check_replaceable(out: Path, force: bool) -> None:
    """Refuse an ``out`` that may not be written (nothing is touched): an existing path without
    ``force`` (:class:`BundleExistsError`), or, with it, anything but a bundle holding only its
    listed files (:class:`UnsafeOutputError`)."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise BundleExistsError(f"{out} already exists; pass --force to replace the bundle there")
    problem = replaceable_bundle_problem(out)
    if problem is not None:
        raise UnsafeOutputError(f"refusing to replace {out}: {problem}")


def open_work_dir(out: Path, log: Callable[[str], None]) -> Path:
    """Create ``out``'s folder, remove work folders of interrupted writes to ``out``, and return
    a fresh work folder beside it (:func:`make_work_dir`); :class:`OutputNotWritableError`
    naming the folder when it cannot be created or written in."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in (out.parent, *out.parent.parents) if p.exists()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir() else exc.strerror or str(exc)
        raise OutputNotWritableError(f"--out {out}: cannot create its folder {out.parent} ({why}); "
                                     "choose a writable folder") from exc
    clean_leftovers(out, log)
    try:
        return make_work_dir(out)
    except OSError as exc:
        raise OutputNotWritableError(f"--out {out}: cannot write in {out.parent} ({exc.strerror or exc}); "
                                     "choose a writable folder") from exc


def install_signed(tmp: Path, out: Path, digest: str, sign_key: str | None) -> None:
    """Sign the finished folder ``tmp`` (``bundle.sig`` over ``digest``) when a PEM ``sign_key`` is
    given, then :func:`install_dir` it at ``out``."""
    if sign_key is not None:
        from pyimgano_deploy.bundles.signing import sign_bundle

        sign_bundle(tmp, digest, sign_key)
    install_dir(tmp, out)


def make_work_dir(out: Path) -> Path:
    """A fresh hidden work folder beside ``out``, marked incomplete from the start."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / INCOMPLETE_MARKER).write_text("export in progress\n", encoding="utf-8")
    return tmp


__all__ = [
    "BundleExistsError", "OutputNotWritableError", "UnsafeOutputError", "check_replaceable", "clean_leftovers", "install_dir",
    "install_signed", "make_work_dir", "open_work_dir", "replaceable_bundle_problem",
]

"""A bundle's identity: reading bundle.json safely, and the bundle digest that pins it.

The digest is ``"sha256:" + sha256(canonical JSON of the manifest)``. The manifest lists every
other file with its sha256, so the digest pins the whole bundle: ``validate --expect-digest``,
``load_bundle(expected_digest=...)``, the signature and every JSONL record refer to it.

bundle.json is parsed with limits (size, nesting depth, integer range) so that a malformed or
hostile manifest is an ``InvalidBundleError`` (exit 3) with a message, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from pyimgano_deploy.bundles.errors import DigestMismatchError, InvalidBundleError
from pyimgano_deploy.bundles.manifest import canonical_json

DIGEST_PREFIX = "sha256:"
MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is a few kB; the golden data lives in golden.npz
MAX_JSON_DEPTH = 32
MAX_JSON_INT = 2**63 - 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def bundle_digest(manifest: dict[str, Any]) -> str:
    """``"sha256:<64 hex>"`` of the canonical JSON of ``manifest`` (as parsed from bundle.json)."""
    return DIGEST_PREFIX + hashlib.sha256(canonical_json(manifest).encode("utf-8")).hexdigest()


def parse_digest(text: str) -> str:
    """Normalise a user-given digest (``sha256:HEX`` or bare ``HEX``) to ``sha256:<lowercase hex>``.

    ``ValueError`` naming what was expected for anything else.
    """
    value = str(text).strip()
    hexpart = value[len(DIGEST_PREFIX):] if value.lower().startswith(DIGEST_PREFIX) else value
    hexpart = hexpart.lower()
    if not _HEX64.match(hexpart):
        raise ValueError(f"expected a bundle digest like 'sha256:<64 hex characters>', got {text!r}")
    return DIGEST_PREFIX + hexpart


def check_expected_digest(actual: str, expected: str | None, where: str) -> None:
    """``DigestMismatchError`` (exit 4) when ``expected`` is given and differs from ``actual``."""
    if expected is None:
        return
    want = parse_digest(expected)
    if want != actual:
        raise DigestMismatchError(
            f"{where}: bundle digest is {actual}, expected {want}; the bundle is not the one that was pinned"
        )


def json_limit_problem(obj: Any) -> str | None:
    """Why ``obj`` is past the manifest's structural limits (depth, integer range), else ``None``.

    Iterative, so it is safe on any object ``json.loads`` produced.
    """
    stack: list[tuple[Any, int, str]] = [(obj, 1, "(root)")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"{path}: nested deeper than {MAX_JSON_DEPTH} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                stack.append((child, depth + 1, f"{path}.{key}" if isinstance(value, dict) else f"{path}[{key}]"))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_JSON_INT:
            return f"{path}: integer with {len(str(abs(value)))} digits is out of range (|n| <= 2**63-1)"
    return None


def read_manifest_file(path: Path) -> Any:
    """Parse bundle.json at ``path``: a regular file (never a symlink), at most 16 MiB, UTF-8 JSON
    within the structural limits. ``InvalidBundleError`` naming the file otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise InvalidBundleError(f"bundle.json not found: {path}") from None
    except OSError as exc:
        raise InvalidBundleError(f"cannot read bundle.json {path}: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise InvalidBundleError(f"{path}: bundle.json is a symlink; the manifest must be a regular file inside the bundle")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidBundleError(f"{path}: bundle.json is not a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise InvalidBundleError(f"{path}: bundle.json is {st.st_size} bytes; a manifest is at most {MAX_MANIFEST_BYTES} bytes")
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1).decode("utf-8")
    except OSError as exc:
        raise InvalidBundleError(f"cannot read bundle.json {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidBundleError(f"{path}: bundle.json is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidBundleError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except RecursionError:
        raise InvalidBundleError(f"{path}: bundle.json is nested too deeply to be a manifest") from None
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit
        raise InvalidBundleError(f"{path}: bundle.json holds a value that cannot be parsed: {exc}") from exc
    problem = json_limit_problem(data)
    if problem is not None:
        raise InvalidBundleError(f"{path}: not a plausible manifest: {problem}")
    return data


__all__ = [
    "DIGEST_PREFIX", "MAX_JSON_DEPTH", "MAX_MANIFEST_BYTES", "bundle_digest", "check_expected_digest",
    "json_limit_problem", "parse_digest", "read_manifest_file",
]

"""Adding an engine to a bundle's manifest (``build-engine`` and ``export --tensorrt``)."""

from __future__ import annotations

from typing import Any


def updated_manifest(manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` without ``files``, with the engine ``entry`` in ``engines`` (an
    entry for the same file is replaced), ready for ``write_manifest``."""
    out = {k: v for k, v in manifest.items() if k != "files"}
    engines = [e for e in (out.get("engines") or []) if not (isinstance(e, dict) and e.get("file") == entry["file"])]
    engines.append(entry)
    out["engines"] = engines
    return out


__all__ = ["updated_manifest"]

"""The small validators every config and manifest check shares (stdlib + numpy only).

The manifest checker, the training config, the defects and tiling configs, preprocessing and
the run-directory validator all describe a bad value the same way, ``<key>: expected <what>,
got <value>``, with :func:`describe` for the value and :func:`unknown_keys_message` for
misspelt keys. Each keeps its own error type (collected problems or a raised ``ValueError``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

MISSING: Any = object()  # a key that is not there (``describe`` says so)


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), and not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A finite real number (Python or numpy), and not a bool."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(float(value)))


def describe(value: Any) -> str:
    """How a message shows a value it refuses: JSON words for null/booleans/non-finite numbers,
    the kind for containers, a repr cut at 80 characters otherwise."""
    if value is MISSING:
        return "nothing (key missing)"
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"an array of {len(value)}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def expected(key: str, what: str, value: Any) -> str:
    """The one message shape: ``"<key>: expected <what>, got <value>"``."""
    return f"{key or '(root)'}: expected {what}, got {describe(value)}"


def unknown_keys(keys: Iterable[Any], allowed: Iterable[str]) -> list[str]:
    """The keys not in ``allowed``, sorted (as strings)."""
    allowed = set(allowed)
    return sorted(str(k) for k in keys if k not in allowed)


def unknown_keys_message(where: str, unknown: list[str], allowed: Iterable[str]) -> str:
    return f"{where}: unknown key(s) {unknown}; allowed keys: {list(allowed)}"


def u16_max_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as the full-scale value of 16-bit images (an integer in
    1..65535), or None when nothing is."""
    if not is_int(value):
        return f"u16_max must be an integer in 1..65535; got {value!r}"
    if not 1 <= int(value) <= 65535:
        return f"u16_max must be an integer in 1..65535; got {int(value)}"
    return None


__all__ = ["MISSING", "describe", "expected", "is_int", "is_number", "u16_max_problem", "unknown_keys", "unknown_keys_message"]

"""The training config's error type and the small validators every config block uses.

Each validator returns the value when it has the expected type and range, and raises
:class:`ConfigError` naming the key and what was expected otherwise. ``workbench.config`` and
``workbench.recipes`` both use these, so neither imports the other for them.
"""

from __future__ import annotations

from typing import Any, Mapping

from pyimgano_deploy.checks import is_int, is_number, unknown_keys

#: defaults of the ``calibration`` block (``CalibrationConfig`` and ``recipes info`` show them)
CALIBRATION_DEFAULTS: dict[str, Any] = {"fraction": 0.2, "quantile": 0.99, "pixel_quantile": 0.99}


class ConfigError(ValueError):
    """An invalid training configuration; the message names the key and the allowed values."""


def mapping_of(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected an object/mapping, got {type(data).__name__}")
    return data


def check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = unknown_keys(data, allowed)
    if unknown:
        names = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(f"unknown key(s) {names}; allowed keys{' in ' + where if where else ''}: {list(allowed)}")


def as_str(value: Any, key: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a non-empty string{' or null' if optional else ''}, got {value!r}")
    return value


def as_int(value: Any, key: str, *, lo: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not is_int(value) or value < lo:
        raise ConfigError(f"{key}: expected an integer >= {lo}{' or null' if optional else ''}, got {value!r}")
    return int(value)


def as_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def as_fraction(value: Any, key: str, *, lo_open: bool, hi_open: bool, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    ok = is_number(value)
    if ok:
        f = float(value)
        ok = (f > 0.0 if lo_open else f >= 0.0) and (f < 1.0 if hi_open else f <= 1.0)
    if not ok:
        rng = f"{'(' if lo_open else '['}0, 1{')' if hi_open else ']'}"
        raise ConfigError(f"{key}: expected a number in {rng}{' or null' if optional else ''}, got {value!r}")
    return float(value)


def as_choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
    return value


__all__ = ["CALIBRATION_DEFAULTS", "ConfigError", "as_bool", "as_choice", "as_fraction", "as_int", "as_str", "check_keys", "mapping_of"]

"""Optional dependencies of scale-out, imported on first use with the install command."""

from __future__ import annotations

from types import ModuleType

RAY_INSTALL = "pip install 'pyimgano-deploy[ray]'"
PARQUET_INSTALL = "pip install pyarrow (or pip install 'pyimgano-deploy[ray]', which brings it)"


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the install command."""


def require_ray() -> ModuleType:
    """``ray`` with Ray Data, or :class:`MissingExtraError`."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is a separate import and may be missing)
    except ImportError as exc:
        raise MissingExtraError(f"Ray Data is not installed ({exc}); install it with: {RAY_INSTALL}") from exc
    return ray


def require_pyarrow() -> ModuleType:
    """``pyarrow`` (with ``pyarrow.parquet``), or :class:`MissingExtraError`."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"pyarrow is not installed ({exc}); install it with: {PARQUET_INSTALL}") from exc
    return pyarrow

"""Scale-out on engines our users already run: Ray Data batch inference and Triton model
repositories. Nothing here is imported by the core runtime (``import pyimgano_deploy.runtimes``
never imports Ray or tritonclient); each optional dependency is imported when first used, with
an error naming its install command when it is missing."""

from __future__ import annotations

from typing import Any


def ray_infer(*args: Any, **kwargs: Any) -> Any:
    """See :func:`pyimgano_deploy.scale.ray_data.ray_infer`."""
    from pyimgano_deploy.scale.ray_data import ray_infer as run

    return run(*args, **kwargs)


__all__ = ["ray_infer"]

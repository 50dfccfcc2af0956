"""fp32 scopes: which graph nodes / TensorRT layers stay fp32 in reduced-precision builds.

A scope is a dotted module path of a detector's inference module (``"scorer"``,
``"members.0.finisher"``). The ONNX exporter names each node after the modules it was
called through (``/scorer/distance/Gemm``) and each module constant after its state-dict key
(``scorer.distance.bank_aug``); TensorRT's ONNX parser keeps those names for its layers. Torch-
and onnx-free: the manifest check, the exporter and the TensorRT builder share it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

#: Scopes of bundles written before manifests recorded them (schema < 1.2): the modules every
#: built-in inference module of that time used for its head.
LEGACY_FP32_SCOPES: tuple[str, ...] = ("scorer", "finisher", "score_head", "reweight")


def check_scopes(scopes: object, where: str = "fp32_scopes") -> tuple[str, ...]:
    """A sequence of non-empty dotted module paths → tuple; ValueError naming ``where``."""
    if isinstance(scopes, (str, bytes)) or not isinstance(scopes, Sequence):
        raise ValueError(f"{where}: expected a list of module paths such as ['scorer', 'finisher'], got {scopes!r}")
    out = []
    for s in scopes:
        if not isinstance(s, str) or not s or s.startswith(".") or s.endswith(".") or "/" in s or ".." in s:
            raise ValueError(f"{where}: expected dotted module paths such as 'scorer' or 'members.0.finisher', got {s!r}")
        out.append(s)
    return tuple(out)


def manifest_fp32_scopes(manifest: dict) -> tuple[str, ...]:
    """``model.fp32_scopes`` of a bundle manifest (:data:`LEGACY_FP32_SCOPES` when absent)."""
    scopes = (manifest.get("model") or {}).get("fp32_scopes")
    return LEGACY_FP32_SCOPES if scopes is None else check_scopes(scopes, "model.fp32_scopes")


@functools.lru_cache(maxsize=256)
def _matcher(scope: str) -> re.Pattern[str]:
    """Node names join a path's parts with "/" at each *called* module and with "." inside
    containers that are not called (``/members.0/scorer/Gemm`` for ``members.0.scorer``);
    module constants are named by their dotted state-dict key (``scorer.distance.bank_aug``)."""
    parts = [re.escape(p) for p in scope.split(".")]
    # The path starts the name (after any wrapper such as "[ONNX Layer: "), never mid-path.
    return re.compile(r"(?:^|[^\w./])/" + "[./]".join(parts) + "/|^" + r"\.".join(parts) + r"\.")


def in_scopes(name: str, scopes: Iterable[str]) -> bool:
    """True when a node or layer called ``name`` belongs to one of ``scopes``; the scope may
    sit anywhere in the name (TensorRT wraps names, e.g. ``[ONNX Layer: /scorer/Sqrt]``)."""
    return any(_matcher(scope).search(name) for scope in scopes)


def select_in_scopes(names: Iterable[str], scopes: Sequence[str]) -> list[str]:
    """``names`` (in order, unique) that lie in ``scopes``."""
    picked, seen = [], set()
    for name in names:
        if name not in seen and in_scopes(name, scopes):
            seen.add(name)
            picked.append(name)
    return picked

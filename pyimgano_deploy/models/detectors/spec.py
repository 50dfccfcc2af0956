"""What a detector folder declares about itself, torch-free: :class:`DetectorSpec`.

Each ``models/detectors/<name>/spec.py`` defines ``SPEC = DetectorSpec(...)``; the registry
finds those modules by walking this package, so listing models never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyimgano_deploy.models.detectors.params import CommonParams


@dataclass(frozen=True)
class DetectorSpec:
    """Name, family, tags and the human statement of one detector.

    ``target`` is ``"package.module:Class"`` of the torch model; ``params`` the dataclass of
    its constructor arguments (extends :class:`CommonParams`); ``memory`` states how the
    fitted state's size follows from the parameters; ``packaged_weights`` is False when the
    default backbone's pretrained weights cannot be installed (they come from a local file);
    ``small_kwargs`` make a small, fast instance on 64 px random-init inputs (contract tests).
    """

    name: str
    family: str
    target: str
    params: type[CommonParams]
    tags: frozenset[str]
    summary: str
    paper: str
    head: str
    memory: str
    packaged_weights: bool = True
    small_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family, "summary": self.summary, "paper": self.paper, "head": self.head,
                               "memory": self.memory, "packaged_weights": self.packaged_weights}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

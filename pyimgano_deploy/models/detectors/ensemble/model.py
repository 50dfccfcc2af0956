"""Score ensembles: several detectors in one graph, combined on calibration-split scales.

Each member is a registered detector sharing the ensemble's input contract (size,
interpolation, crop), seed and device. After fitting, :meth:`Ensemble.calibrate` scores the
**calibration split** with every member and fixes a location and scale per member for scores
and for map pixels (quantile: median and q-quantile; zscore: mean and std), recorded with
their provenance. The ensemble's score is the mean of the members' normalised scores; its map
the mean of their normalised maps. A score therefore never depends on the other images of a
batch. The members' graphs and the combination export as one ONNX graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.ensemble.spec import OPTIONAL_FOR_MEMBERS, SHARED_WITH_MEMBERS, SPEC, EnsembleParams
from pyimgano_deploy.models.detectors.inference_module import ScopedModule
from pyimgano_deploy.models.registry import create_model

MAX_PIXEL_SAMPLES = 2_000_000  # map pixels per member used for the map quantiles


class NormalizedMean(nn.Module):
    """Members' scores ``[B]`` and maps ``[B, H, W]`` → mean of ``(x − loc) / scale``, fp32."""

    def __init__(self, n_members: int) -> None:
        super().__init__()
        for name, value in (("score_loc", 0.0), ("score_scale", 1.0), ("map_loc", 0.0), ("map_scale", 1.0)):
            self.register_buffer(name, torch.full((n_members,), value))

    def forward(self, scores: list[torch.Tensor], maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.stack([x.to(torch.float32) for x in scores], dim=1)  # [B, M]
        m = torch.stack([x.to(torch.float32) for x in maps], dim=1)  # [B, M, H, W]
        score = ((s - self.score_loc) / self.score_scale).mean(dim=1)
        amap = ((m - self.map_loc.view(1, -1, 1, 1)) / self.map_scale.view(1, -1, 1, 1)).mean(dim=1)
        return score, amap


class EnsembleInferenceModule(ScopedModule):
    """Every member's inference module on the same batch, then :class:`NormalizedMean`."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine = NormalizedMean(len(members))
        self.fp32_scopes = tuple(f"members.{i}.{s}" for i, m in enumerate(members) for s in m.fp32_scopes) + ("combine",)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [member(images) for member in self.members]
        return self.combine([o[0] for o in outs], [o[1] for o in outs])


def location_scale(values: np.ndarray, method: str, quantile: float) -> dict[str, float]:
    """Location and (positive) scale of ``values`` by ``method``, with the summary behind them."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if method == "quantile":
        loc, top = float(np.quantile(v, 0.5)), float(np.quantile(v, quantile))
        scale = top - loc
    else:
        loc, scale = float(v.mean()), float(v.std())
    floor = 1e-6 * max(1.0, abs(loc))  # a constant member must not divide by zero
    return {"loc": loc, "scale": max(scale, floor), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


class Ensemble(Detector):
    """A calibrated score ensemble of registered detectors; see the module docstring."""

    family = SPEC.family
    model_name = SPEC.name
    Params = EnsembleParams
    needs_calibration = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.members = [create_model(m["name"], **self._member_kwargs(m)) for m in self.params.members]

    def _member_kwargs(self, member: dict[str, Any]) -> dict[str, Any]:
        p = self.params
        kwargs = {key: getattr(p, key) for key in SHARED_WITH_MEMBERS}
        kwargs.update({key: getattr(p, key) for key in OPTIONAL_FOR_MEMBERS if getattr(p, key) is not None})
        kwargs.update(member["kwargs"])
        return kwargs

    @property
    def calibrated(self) -> bool:
        return bool(self.fit_summary.get("normalization"))

    def _assemble(self, modules: list[nn.Module]) -> EnsembleInferenceModule:
        for member, module in zip(self.members, modules):
            member.inference_module = module.eval()
        return EnsembleInferenceModule(modules)

    def _fit(self, source: BatchSource) -> EnsembleInferenceModule:
        modules = []
        for member in self.members:
            torch.manual_seed(member.seed)
            modules.append(member._fit(source))  # one re-iterable source: images are decoded once
        self.fit_summary = {"members": [dict(m.fit_summary) for m in self.members], "normalization": None}
        return self._assemble(modules)

    @torch.no_grad()
    def calibrate(self, images: object, *, input_format: str | None = None, source_split: str = "calibration",
                  u16_max: int | None = None) -> None:
        """Fix every member's score and map scale from ``images`` (normal, never fit images)."""
        module = self._require_fitted()
        n = len(self.members)
        scores: list[list[np.ndarray]] = [[] for _ in range(n)]
        pixels: list[list[np.ndarray]] = [[] for _ in range(n)]
        source = self.batch_source(images, input_format=input_format, desc="calibrating the ensemble", u16_max=u16_max)
        stride = max(1, int(np.ceil(len(source) * self.input_size[0] * self.input_size[1] / MAX_PIXEL_SAMPLES)))
        for batch in source:
            x = torch.from_numpy(batch).to(self.device)
            for i, member in enumerate(module.members):
                s, m = member(x)
                scores[i].append(s.float().cpu().numpy())
                pixels[i].append(m.float().cpu().numpy().reshape(-1)[::stride])
        p = self.params
        stats = []
        for i in range(n):
            stats.append({"member": self.params.members[i]["name"],
                          "score": location_scale(np.concatenate(scores[i]), p.normalization, p.quantile),
                          "map": location_scale(np.concatenate(pixels[i]), p.normalization, p.quantile)})
        combine = module.combine
        for key, part in (("score", "score"), ("map", "map")):
            getattr(combine, f"{part}_loc").copy_(torch.tensor([s[key]["loc"] for s in stats]))
            getattr(combine, f"{part}_scale").copy_(torch.tensor([s[key]["scale"] for s in stats]))
        self.fit_summary["normalization"] = {
            "method": p.normalization, "quantile": p.quantile if p.normalization == "quantile" else None,
            "source_split": source_split, "n_images": len(source), "pixel_stride": stride,
            "code": "pyimgano_deploy.models.detectors.ensemble.model:Ensemble.calibrate", "members": stats,
        }

    def _require_fitted(self) -> EnsembleInferenceModule:
        return super()._require_fitted()  # type: ignore[return-value]

    def predict_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.inference_module is not None and not self.calibrated:
            raise RuntimeError("vision_ensemble is fitted but not calibrated: call calibrate(normal_images) with held-out "
                               "normal images (the workbench uses the calibration split) before scoring")
        return super().predict_batch(batch)

    def _empty_module(self, fitted: dict[str, Any]) -> EnsembleInferenceModule:
        modules = []
        for member, summary in zip(self.members, fitted["members"]):
            member.fit_summary = dict(summary)
            modules.append(member._empty_module(summary))
        return self._assemble(modules)

    def memory_bytes(self) -> int:
        """The members' fitted state in bytes (their ``memory_bytes``), fp32."""
        return int(sum(getattr(m, "memory_bytes", lambda: 0)() for m in self.members))

"""Detector base: fit on normal images, score through the one inference module, save/load.

Inputs everywhere are paths, numpy arrays with an explicit ``input_format``, or one
``(N, H, W, C)`` array (ARCHITECTURE §3). Saved state is ``detector.json`` +
``state.safetensors`` (no pickle); a loaded detector gives bit-identical scores.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pyimgano_deploy._version import __version__
from pyimgano_deploy.inputs import Preprocess
from pyimgano_deploy.models.backbones import FeatureExtractor, create_feature_extractor
from pyimgano_deploy.models.detectors.batches import DEFAULT_CACHE_BYTES, BatchSource, iter_batches, progress_bar
from pyimgano_deploy.models.detectors.params import CommonParams
from pyimgano_deploy.models.illumination import host_contrast
from pyimgano_deploy.postprocess.thresholds import ThresholdCalibration

DETECTOR_SCHEMA_VERSION = "1.0"


class Detector(ABC):
    """Common behaviour of eager detectors.

    A detector class names its parameter dataclass (``Params``, a :class:`CommonParams`
    subclass, declared in its torch-free ``spec.py``) and implements :meth:`_fit` (or, for a
    backbone → head detector, :meth:`_fit_head`) and :meth:`_empty_module` (the inference
    module with the right buffer shapes, for loading).
    """

    family: ClassVar[str]
    model_name: ClassVar[str]
    Params: ClassVar[type[CommonParams]]
    #: True when :meth:`calibrate` must see the calibration split before scores are final.
    needs_calibration: ClassVar[bool] = False
    #: True when the head reads the fit images in one pass: :meth:`fit` then keeps no cache of
    #: the preprocessed batches (up to 1 GiB otherwise, held until the head is built)
    fits_in_one_pass: ClassVar[bool] = False

    def __init__(self, **kwargs: Any) -> None:
        try:
            self.params = self.Params(**kwargs)
        except TypeError as exc:  # an unknown keyword: name the valid ones
            valid = sorted(self.Params.defaults())
            raise TypeError(f"{self.model_name}: {exc}; valid arguments: {valid}") from None
        p = self.params
        self.preprocess = Preprocess(size=p.image_size, interpolation=p.interpolation, center_crop=p.center_crop,
                                     contrast=host_contrast(p.illumination))
        self.device = torch.device(p.device)
        self.inference_module: nn.Module | None = None
        self.threshold: ThresholdCalibration | None = None
        self.pixel_threshold: ThresholdCalibration | None = None
        self.fit_summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ parameters
    @property
    def seed(self) -> int:
        return self.params.seed

    @property
    def batch_size(self) -> int:
        return self.params.batch_size

    @property
    def progress(self) -> bool:
        return self.params.progress

    @property
    def blur_sigma(self) -> float:
        return self.params.blur_sigma

    @property
    def backbone_name(self) -> str:
        return self.params.backbone

    @property
    def pretrained(self) -> bool | str:
        return self.params.pretrained

    @property
    def stages(self) -> tuple[str, ...] | None:
        return self.params.stages  # type: ignore[return-value]

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the module receives — after resize and optional centre crop."""
        return self.preprocess.output_size

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments that rebuild this detector (JSON-ready)."""
        return self.params.hyperparameters()

    def _extractor_stages(self) -> tuple[str, ...] | None:
        """The backbone stages the extractor returns (None: the backbone's default)."""
        return self.stages

    def _make_extractor(self, pretrained: bool | str | None = None) -> FeatureExtractor:
        torch.manual_seed(self.seed)
        return create_feature_extractor(
            self.backbone_name,
            stages=self._extractor_stages(),
            pretrained=self.pretrained if pretrained is None else pretrained,
            illumination=self.params.illumination,
        )

    def _grid(self, extractor: FeatureExtractor) -> tuple[int, int]:
        stride = extractor.stage_strides[extractor.stages[0]]
        h, w = self.input_size
        return (-(-h // stride), -(-w // stride))

    # ------------------------------------------------------------------ fitting
    def batch_source(self, images: object, *, input_format: str | None = None, desc: str = "extracting features",
                     u16_max: int | None = None, cache: bool = True) -> BatchSource:
        """A re-iterable source of this detector's preprocessed batches of ``images`` (``cache``:
        keep the first pass in memory when it fits, for heads that read the images again)."""
        return BatchSource(images, self.preprocess, input_format=input_format, batch_size=self.batch_size,
                           progress=self.progress, desc=desc, u16_max=u16_max, cache_bytes=DEFAULT_CACHE_BYTES if cache else 0)

    def fit(self, images: object, *, input_format: str | None = None, u16_max: int | None = None) -> "Detector":
        """Fit on normal images (paths, arrays with ``input_format``, or an (N,H,W,C) array);
        ``u16_max``: the full-scale value of 16-bit images (required for them, never guessed)."""
        torch.manual_seed(self.seed)
        self.inference_module = None
        source = self.batch_source(images, input_format=input_format, u16_max=u16_max, cache=not self.fits_in_one_pass)
        self.inference_module = self._fit(source).eval().to(self.device)
        return self

    def calibrate(self, images: object, *, input_format: str | None = None, source_split: str = "calibration",
                  u16_max: int | None = None) -> None:
        """Fit what the calibration split decides (only when :attr:`needs_calibration`):
        called by the workbench after :meth:`fit`, before thresholds are calibrated."""

    def _fit(self, source: BatchSource) -> nn.Module:
        """Fit from a re-iterable batch source; the default builds the backbone and calls
        :meth:`_fit_head`. Detectors that are not "backbone → head" override this."""
        return self._fit_head(self._make_extractor().to(self.device), source)

    def _progress_bar(self, total: int, desc: str, unit: str) -> Any:
        return progress_bar(total, desc, unit, self.progress)

    def _fit_head(self, extractor: FeatureExtractor, batches: BatchSource) -> nn.Module:
        """Consume preprocessed uint8 batches (``len(batches)`` images, re-iterable) and
        return the fitted inference module."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _fit nor _fit_head")

    @abstractmethod
    def _empty_module(self, fitted: dict[str, Any]) -> nn.Module:
        """An inference module with correctly shaped (unfitted) buffers, for :meth:`load`."""

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> nn.Module:
        if self.inference_module is None:
            raise RuntimeError(f"{self.model_name} is not fitted: call fit(images) or load(dir) first")
        return self.inference_module

    @torch.no_grad()
    def predict_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score a preprocessed ``uint8 [B, H, W, 3]`` batch → (``score [B]``, ``map [B, H, W]``) float32."""
        module = self._require_fitted()
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected a uint8 batch [B, H, W, 3], got shape {batch.shape} dtype {batch.dtype}")
        score, amap = module(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        return score.float().cpu().numpy(), amap.float().cpu().numpy()

    def score_and_maps(
        self, images: object, *, input_format: str | None = None, batch_size: int | None = None, u16_max: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``[N]`` and maps ``[N, H, W]`` (model resolution) for all inputs; the first bad
        input raises :class:`~pyimgano_deploy.models.detectors.batches.InputError`."""
        self._require_fitted()
        scores, maps = [], []
        for _, batch in iter_batches(images, self.preprocess, input_format=input_format, batch_size=batch_size or self.batch_size,
                                     u16_max=u16_max):
            s, m = self.predict_batch(batch)
            scores.append(s)
            maps.append(m)
        return np.concatenate(scores), np.concatenate(maps)

    def decision_function(self, images: object, *, input_format: str | None = None, batch_size: int | None = None,
                          u16_max: int | None = None) -> np.ndarray:
        """Anomaly scores ``float32 [N]`` (higher = more anomalous)."""
        return self.score_and_maps(images, input_format=input_format, batch_size=batch_size, u16_max=u16_max)[0]

    def anomaly_maps(self, images: object, *, input_format: str | None = None, batch_size: int | None = None,
                     u16_max: int | None = None) -> np.ndarray:
        """Anomaly maps ``float32 [N, H, W]`` at the model input resolution."""
        return self.score_and_maps(images, input_format=input_format, batch_size=batch_size, u16_max=u16_max)[1]

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``detector.json`` and ``state.safetensors`` into ``directory``."""
        from safetensors.torch import save_file

        module = self._require_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(out / "state.safetensors"), metadata={"family": self.family})
        doc = {
            "schema_version": DETECTOR_SCHEMA_VERSION,
            "toolkit_version": __version__,
            "model_name": self.model_name,
            "family": self.family,
            "hyperparameters": self.hyperparameters(),
            "backbone": self.backbone_spec(),
            "input_size": list(self.input_size),
            "preprocess": self.preprocess.to_dict(),
            "fitted": self.fit_summary,
            "thresholds": {
                "image": None if self.threshold is None else self.threshold.to_dict(),
                "pixel": None if self.pixel_threshold is None else self.pixel_threshold.to_dict(),
            },
        }
        (out / "detector.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return out

    def backbone_spec(self) -> dict[str, Any] | None:
        """The backbone's :meth:`FeatureExtractor.spec` (None for a model without one)."""
        extractor = getattr(self.inference_module, "extractor", None)
        return extractor.spec() if isinstance(extractor, FeatureExtractor) else None

    @classmethod
    def load(cls, directory: str | Path, *, device: str = "cpu") -> "Detector":
        """Rebuild a fitted detector from :meth:`save` output (any registered family)."""
        from safetensors.torch import load_file

        from pyimgano_deploy.models.registry import create_model

        d = Path(directory)
        meta_path, state_path = d / "detector.json", d / "state.safetensors"
        for p in (meta_path, state_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} is missing: a saved detector needs detector.json and state.safetensors")
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
        major = str(doc.get("schema_version", "")).split(".")[0]
        if major != DETECTOR_SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"{meta_path}: unsupported schema_version {doc.get('schema_version')!r}, expected {DETECTOR_SCHEMA_VERSION}")
        params = dict(doc["hyperparameters"])
        params["pretrained"] = False  # weights come from state.safetensors
        params["device"] = device
        params["progress"] = False
        det: Detector = create_model(doc["model_name"], **params)
        det.params.pretrained = doc["hyperparameters"].get("pretrained", False)
        det.fit_summary = dict(doc.get("fitted", {}))
        module = det._empty_module(det.fit_summary)
        module.load_state_dict(load_file(str(state_path)), strict=True)
        det.inference_module = module.requires_grad_(False).eval().to(det.device)
        thresholds = doc.get("thresholds") or {}
        if thresholds.get("image"):
            det.threshold = ThresholdCalibration.from_dict(thresholds["image"])
        if thresholds.get("pixel"):
            det.pixel_threshold = ThresholdCalibration.from_dict(thresholds["pixel"])
        return det

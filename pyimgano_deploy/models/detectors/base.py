"""Detector base: fit on normal images, score through the one inference module, save/load.

Inputs everywhere are paths, numpy arrays with an explicit ``input_format``, or one
``(N, H, W, C)`` array (ARCHITECTURE §3). Saved state is ``detector.json`` +
``state.safetensors`` (no pickle); a loaded detector gives bit-identical scores.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from pyimgano_deploy._version import __version__
from pyimgano_deploy.inputs import Preprocess
from pyimgano_deploy.models.backbones import FeatureExtractor, create_feature_extractor
from pyimgano_deploy.models.detectors.batches import count_inputs, iter_batches
from pyimgano_deploy.models.detectors.inference_module import AnomalyInferenceModule
from pyimgano_deploy.postprocess.thresholds import ThresholdCalibration

DETECTOR_SCHEMA_VERSION = "1.0"


def _size_pair(value: int | tuple[int, int] | list[int], key: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 16:
        raise ValueError(f"{key}: expected an int or (height, width) of at least 16 px, got {value!r}")
    return pair  # type: ignore[return-value]


class Detector(ABC):
    """Common behaviour of eager detectors. Subclasses implement :meth:`_fit_head` and
    :meth:`_empty_head` (the scorer with the right buffer shapes, for loading)."""

    family: ClassVar[str]
    model_name: ClassVar[str]

    def __init__(
        self,
        *,
        backbone: str,
        pretrained: bool | str,
        stages: tuple[str, ...] | list[str] | None,
        image_size: int | tuple[int, int],
        interpolation: str,
        center_crop: int | tuple[int, int] | None,
        blur_sigma: float,
        seed: int,
        device: str,
        batch_size: int,
        progress: bool,
    ) -> None:
        size = _size_pair(image_size, "image_size")
        crop = None if center_crop is None else _size_pair(center_crop, "center_crop")
        self.preprocess = Preprocess(size=size, interpolation=interpolation, center_crop=crop)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0, got {blur_sigma}")
        if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        self.device = torch.device(device)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self.blur_sigma = float(blur_sigma)
        self.backbone_name = backbone
        self.pretrained = pretrained
        self.stages = None if stages is None else tuple(stages)
        self.inference_module: AnomalyInferenceModule | None = None
        self.threshold: ThresholdCalibration | None = None
        self.pixel_threshold: ThresholdCalibration | None = None
        self.fit_summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ parameters
    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) the module receives — after resize and optional centre crop."""
        return self.preprocess.output_size

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments that rebuild this detector (JSON-ready)."""

    def _common_hyperparameters(self) -> dict[str, Any]:
        size = self.preprocess.size
        crop = self.preprocess.center_crop
        return {
            "backbone": self.backbone_name,
            "pretrained": self.pretrained,
            "stages": None if self.stages is None else list(self.stages),
            "image_size": list(size),
            "interpolation": self.preprocess.interpolation,
            "center_crop": None if crop is None else list(crop),
            "blur_sigma": self.blur_sigma,
            "seed": self.seed,
        }

    def _make_extractor(self, pretrained: bool | str | None = None) -> FeatureExtractor:
        torch.manual_seed(self.seed)
        return create_feature_extractor(
            self.backbone_name,
            stages=self.stages,
            pretrained=self.pretrained if pretrained is None else pretrained,
        )

    def _grid(self, extractor: FeatureExtractor) -> tuple[int, int]:
        stride = extractor.stage_strides[extractor.stages[0]]
        h, w = self.input_size
        return (-(-h // stride), -(-w // stride))

    # ------------------------------------------------------------------ fitting
    def fit(self, images: object, *, input_format: str | None = None) -> "Detector":
        """Fit on normal images (paths, arrays with ``input_format``, or an (N,H,W,C) array)."""
        torch.manual_seed(self.seed)
        extractor = self._make_extractor().to(self.device)
        self.inference_module = None
        total = count_inputs(images, input_format)
        batches = iter_batches(images, self.preprocess, input_format=input_format, batch_size=self.batch_size)
        self.inference_module = self._fit_head(extractor, self._progress(batches, total, "extracting features"), total)
        self.inference_module.eval().to(self.device)
        return self

    def _progress_bar(self, total: int, desc: str, unit: str) -> Any:
        """A tqdm bar on stderr (hidden when stderr is not a terminal or progress is off)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=None if self.progress else True)

    def _progress(self, batches: Iterator[tuple[list[int], np.ndarray]], total: int, desc: str) -> Iterator[np.ndarray]:
        with self._progress_bar(total, desc, "img") as bar:
            for idx, batch in batches:
                yield batch
                bar.update(len(idx))

    @abstractmethod
    def _fit_head(self, extractor: FeatureExtractor, batches: Iterator[np.ndarray], total: int) -> AnomalyInferenceModule:
        """Consume preprocessed uint8 batches and return the fitted inference module."""

    @abstractmethod
    def _empty_module(self, fitted: dict[str, Any]) -> AnomalyInferenceModule:
        """An inference module with correctly shaped (unfitted) buffers, for :meth:`load`."""

    @torch.no_grad()
    def _embed(self, extractor: FeatureExtractor, embedding: torch.nn.Module, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device)
        return embedding(extractor(x)).to(torch.float32)

    # ------------------------------------------------------------------ scoring
    def _require_fitted(self) -> AnomalyInferenceModule:
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
        self, images: object, *, input_format: str | None = None, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``[N]`` and maps ``[N, H, W]`` (model resolution) for all inputs; the first bad
        input raises :class:`~pyimgano_deploy.models.detectors.batches.InputError`."""
        self._require_fitted()
        scores, maps = [], []
        for _, batch in iter_batches(images, self.preprocess, input_format=input_format, batch_size=batch_size or self.batch_size):
            s, m = self.predict_batch(batch)
            scores.append(s)
            maps.append(m)
        return np.concatenate(scores), np.concatenate(maps)

    def decision_function(self, images: object, *, input_format: str | None = None, batch_size: int | None = None) -> np.ndarray:
        """Anomaly scores ``float32 [N]`` (higher = more anomalous)."""
        return self.score_and_maps(images, input_format=input_format, batch_size=batch_size)[0]

    def anomaly_maps(self, images: object, *, input_format: str | None = None, batch_size: int | None = None) -> np.ndarray:
        """Anomaly maps ``float32 [N, H, W]`` at the model input resolution."""
        return self.score_and_maps(images, input_format=input_format, batch_size=batch_size)[1]

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
            "backbone": module.extractor.spec(),
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
        det.pretrained = doc["hyperparameters"].get("pretrained", False)
        det.fit_summary = dict(doc.get("fitted", {}))
        module = det._empty_module(det.fit_summary)
        module.load_state_dict(load_file(str(state_path)), strict=True)
        det.inference_module = module.eval().to(det.device)
        thresholds = doc.get("thresholds") or {}
        if thresholds.get("image"):
            det.threshold = ThresholdCalibration.from_dict(thresholds["image"])
        if thresholds.get("pixel"):
            det.pixel_threshold = ThresholdCalibration.from_dict(thresholds["pixel"])
        return det

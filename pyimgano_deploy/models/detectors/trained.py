"""Base of trained detectors: fit = the shared epoch loop (:mod:`pyimgano_deploy.models.training`)."""

from __future__ import annotations

import hashlib
import time
from abc import abstractmethod
from dataclasses import replace
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from pyimgano_deploy.models.detectors.base import Detector
from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.params import TrainedParams
from pyimgano_deploy.models.training.loop import TrainingHooks, TrainingTask, fingerprint_of, planned_epochs, run_epochs


class TrainedDetector(Detector):
    """A detector whose network is trained for epochs on the fit images.

    Subclasses build a fresh, seeded :class:`TrainingTask` (:meth:`_training_task`) and turn the
    trained task into the inference module (:meth:`_inference_module`). Set
    :attr:`training_hooks` before :meth:`fit` for checkpoints, ``--resume`` and early stopping.
    """

    Params: ClassVar[type[TrainedParams]]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training_hooks = TrainingHooks()

    @abstractmethod
    def _training_task(self) -> TrainingTask:
        """Fresh networks (seeded) and the loss."""

    @abstractmethod
    def _inference_module(self, task: TrainingTask) -> nn.Module:
        """The inference module around the trained networks of ``task``."""

    def _fit(self, source: BatchSource) -> nn.Module:
        torch.manual_seed(self.seed)
        task = self._training_task()
        task.module.to(self.device)
        images = np.ascontiguousarray(np.concatenate(list(source)))
        hooks = self.training_hooks
        if not hooks.fingerprint:
            digest = hashlib.sha256(images.tobytes()).hexdigest()
            hooks = replace(hooks, fingerprint=fingerprint_of(self.model_name, self.hyperparameters(), images.shape, digest))
        t0 = time.perf_counter()
        result = run_epochs(task, images, self.params, self.device, hooks, progress_bar=self._progress_bar,
                            validate=self._validator(task, hooks))
        run = result.history[result.resumed_from_epoch:]
        self.fit_summary = {
            "n_images": int(images.shape[0]),
            "training": {
                "epochs": len(result.history), "epochs_planned": planned_epochs(self.params, images.shape[0]), "stopped_early": result.stopped_early,
                "best_epoch": result.best_epoch, "resumed_from_epoch": result.resumed_from_epoch,
                "epoch_seconds_mean": round(float(np.mean([h.seconds for h in run])), 3) if run else None,
                "device": str(self.device), "amp": self.params.amp,
                "history": [h.to_dict() for h in result.history],
            },
            "timings_s": {"training": round(time.perf_counter() - t0, 4)},
            **self._fit_details(),
        }
        module = self._inference_module(task)
        module.requires_grad_(False)
        return module

    def _validator(self, task: TrainingTask, hooks: TrainingHooks) -> Callable[[], float] | None:
        """Mean score of the validation images under the model being trained (None: no early stop)."""
        if hooks.validation_images is None or self.params.early_stop_patience is None:
            return None
        source = self.batch_source(hooks.validation_images, input_format=hooks.validation_format, desc="validation",
                                   u16_max=hooks.validation_u16_max)

        def mean_score() -> float:
            module = self._inference_module(task).eval()
            scores = [module(torch.from_numpy(b).to(self.device))[0].float().cpu().numpy() for b in source]
            return float(np.concatenate(scores).mean())

        return mean_score

    def _fit_details(self) -> dict[str, Any]:
        """Extra ``fit_summary`` entries (sizes that :meth:`_empty_module` needs)."""
        return {}

"""The epoch loop of trained detectors and its checkpoints (torch).

The loop lives beside the models, not in the workbench, so that ``Detector.fit`` trains from
the Python API too; the workbench supplies where checkpoints go, ``--resume`` and the
calibration-split validation through :class:`~pyimgano_deploy.models.training.loop.TrainingHooks`.
"""

from pyimgano_deploy.models.training.loop import EpochRecord, TrainingHooks, TrainingTask, run_epochs

__all__ = ["EpochRecord", "TrainingHooks", "TrainingTask", "run_epochs"]

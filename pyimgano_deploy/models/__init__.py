"""Detectors and backbones (torch). Importing this package does not import torch:
the registry is declarative and loads a detector module only in ``create_model``."""

from pyimgano_deploy.models.registry import KNOWN_TAGS, create_model, list_models, model_entry, model_info, register_model

__all__ = ["KNOWN_TAGS", "create_model", "list_models", "model_entry", "model_info", "register_model"]

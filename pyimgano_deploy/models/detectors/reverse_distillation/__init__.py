"""Reverse Distillation: ``spec`` (torch-free) and ``model`` (torch)."""

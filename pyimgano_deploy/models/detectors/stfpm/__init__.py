"""STFPM: ``spec`` (torch-free) and ``model`` (torch)."""

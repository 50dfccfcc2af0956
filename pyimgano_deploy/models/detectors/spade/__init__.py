"""SPADE: ``spec`` (torch-free) and ``model`` (torch)."""

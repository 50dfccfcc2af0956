"""PatchCore: ``spec`` (torch-free) and ``model`` (torch)."""

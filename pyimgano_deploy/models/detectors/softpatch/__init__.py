"""SoftPatch: ``spec`` (torch-free) and ``model`` (torch)."""

"""AnomalyDINO: ``spec`` (torch-free) and ``model`` (torch)."""

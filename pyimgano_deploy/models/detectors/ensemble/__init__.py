"""Score ensembles: ``spec`` (torch-free) and ``model`` (torch)."""

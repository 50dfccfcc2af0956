"""PaDiM: ``spec`` (torch-free) and ``model`` (torch)."""

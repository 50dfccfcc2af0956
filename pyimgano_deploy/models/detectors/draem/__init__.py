"""DRAEM: ``spec`` (torch-free), ``model`` and ``anomalies`` (torch)."""

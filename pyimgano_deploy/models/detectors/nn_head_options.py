"""What the two-stage nearest-neighbour heads accept, torch-free, so that the export CLI and
``ExportOptions`` show the same defaults as the heads (:mod:`.reranked_distance`) apply."""

from __future__ import annotations

#: where the re-ranked head's candidates come from: the bank's principal directions (fp32, any
#: engine) or int8 distances to the whole bank (ONNX Runtime's int8 kernels: the int8 engine)
CANDIDATE_SOURCES = ("pca", "int8")

#: principal directions of the PCA candidates when none are given
PCA_PROJECTION_DIM = 64

__all__ = ["CANDIDATE_SOURCES", "PCA_PROJECTION_DIM"]

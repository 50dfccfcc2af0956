"""Fitting steps shared by the memory-bank detectors (PatchCore, SoftPatch, AnomalyDINO, SPADE).

Patch features of every fit image, and a greedy k-centre coreset of them
(:mod:`~pyimgano_deploy.models.detectors.coreset`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pyimgano_deploy.models.detectors.batches import BatchSource
from pyimgano_deploy.models.detectors.coreset import DEFAULT_PROJECTION_DIM, greedy_coreset

_LOG = logging.getLogger(__name__)


def available_memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Memory the kernel can give this process without swapping (Linux ``MemAvailable``; None elsewhere)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def warn_if_features_exceed_memory(n_images: int, per_image: tuple[int, int], available: int | None) -> None:
    """Say before extraction when ``n_images`` × ``per_image`` ``(P, D)`` fp32 features and their
    coreset projection will not fit in ``available`` bytes: the kernel would otherwise kill the
    fit part-way with no message."""
    p, d = per_image
    need = n_images * p * (d + min(d, DEFAULT_PROJECTION_DIM)) * 4  # the default projection: an estimate
    if available is not None and need > available:
        _LOG.warning("fitting on %d images needs about %.1f GiB for the patch features (%d × %d × %d fp32) and the "
                     "coreset's projection, and %.1f GiB are available: fit on fewer images, lower image_size, or use "
                     "a machine with more memory", n_images, need / 2**30, n_images, p, d, available / 2**30)


@torch.no_grad()
def patch_features(embed: Callable[[np.ndarray], torch.Tensor], batches: BatchSource) -> np.ndarray:
    """``float32 [N, P, D]``: the embedding ``[B, D, h, w]`` of every fit image, positions
    flattened row-major (``P = h·w``). ``embed`` maps a uint8 batch to that embedding.

    The array is allocated once, at the first batch, and filled in place: gathering per-batch
    arrays and concatenating them held every feature twice at the end of extraction."""
    out: np.ndarray | None = None
    filled = 0
    for batch in batches:
        emb = embed(batch).to(torch.float32)
        rows = emb.permute(0, 2, 3, 1).reshape(emb.shape[0], -1, emb.shape[1]).cpu().numpy()
        if out is None:
            warn_if_features_exceed_memory(len(batches), rows.shape[1:], available_memory_bytes())
            out = np.empty((len(batches), *rows.shape[1:]), dtype=np.float32)
        out[filled : filled + len(rows)] = rows
        filled += len(rows)
    if out is None or filled != len(out):
        raise RuntimeError(f"the batch source yielded {filled} images, expected {len(batches)}")
    return out


def coreset_bank(features: np.ndarray, ratio: float, *, projection_dim: int, seed: int,
                 progress_bar: Callable[[int, str, str], Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Greedy coreset of ``features [M, D]`` keeping ``round(ratio·M)`` rows (at least one) →
    (selected row indices, summary for ``fit_summary``)."""
    n_select = max(1, int(round(ratio * features.shape[0])))
    t = time.perf_counter()
    with progress_bar(n_select, "coreset", "centre") as bar:
        idx, stats = greedy_coreset(features, n_select, projection_dim=projection_dim, seed=seed, progress=bar.update)
    summary = {"projection_dim": stats.projection_dim, "levels": stats.levels, "flushes": stats.flushes,
               "seconds": round(time.perf_counter() - t, 4)}
    return idx, summary


def embedder(extractor: nn.Module, embedding: nn.Module, device: torch.device) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 batch → ``embedding(extractor(x))`` on ``device`` (no grad)."""

    @torch.no_grad()
    def embed(batch: np.ndarray) -> torch.Tensor:
        return embedding(extractor(torch.from_numpy(batch).to(device)))

    return embed

"""Shared fixtures: the real-image data set beside the repository, and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HAZELNUT_ROOT = REPO_ROOT.parent / "shared" / "data" / "hazelnut_toy"


@pytest.fixture(scope="session")
def hazelnut_root() -> Path:
    """``../shared/data/hazelnut_toy`` (MVTec layout, one category 'colour' defects)."""
    if not (HAZELNUT_ROOT / "train" / "good").is_dir():
        pytest.skip(f"real-image data set not found at {HAZELNUT_ROOT} (expected ../shared beside the repo)")
    return HAZELNUT_ROOT

"""Shared fixtures. Keep additive: one fixture per concern."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The repo is cloned at X/main with the real data at X/shared/data beside it.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real GLUE-layout data folder ($FASTBERT_NAS_DATA, else ../shared/data)."""
    path = Path(os.environ.get("FASTBERT_NAS_DATA") or DEFAULT_DATA_DIR)
    if not path.is_dir():
        pytest.fail(f"real data folder not found: {path} (set FASTBERT_NAS_DATA to the GLUE-layout "
                    "data folder, or clone the repo beside ../shared/data)", pytrace=False)
    return path

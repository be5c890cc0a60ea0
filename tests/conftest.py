"""Shared fixtures: the real DICOM files beside the checkout and the synthetic sample dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real DICOM files); tests skip with a reason when it is absent."""
    if not (SHARED_DATA / "dicom").is_dir():
        pytest.skip(f"real DICOM test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the CSAW-S release layout, made once per test session."""
    from csaws_tools.sample import write_sample

    root = tmp_path_factory.mktemp("sample")
    write_sample(root, seed=0)
    return root

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


@pytest.fixture(scope="session")
def small_release(tmp_path_factory) -> Path:
    """A small sample release (4 + 2 patients, 192 x 160) in ``raw/`` and its label maps in ``maps/``.

    Made once per session for the training tests; they write their inputs elsewhere.
    """
    from csaws_tools.merge import merge_masks
    from csaws_tools.sample import write_sample

    root = tmp_path_factory.mktemp("small_release")
    write_sample(root / "raw", seed=0, n_train_patients=4, n_test_patients=2, size=(192, 160))
    assert merge_masks(root / "raw", root / "maps", progress=False, workers=1).exit_code == 0
    return root

"""The examples in the package's docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "csaws_tools"
TORCH = ("csaws_tools.train.model", "csaws_tools.train.loop", "csaws_tools.train.predict")
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py") if ">>>" in p.read_text(encoding="utf-8")
)


def test_the_modules_with_examples_are_found():
    assert "csaws_tools.train.loop" in MODULES and "csaws_tools.splits" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name in TORCH:
        pytest.importorskip("torch")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    if result.attempted == 0:
        pytest.skip(f"{name}: its examples need data files (marked +SKIP)")
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (output above)"

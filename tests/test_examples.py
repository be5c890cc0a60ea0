"""The scripts in examples/ run as documented."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*args, cwd):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_pipeline_example(tmp_path):
    done = run(EXAMPLES / "pipeline.py", tmp_path / "work", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "0 failed" in done.stdout and "mammary_gland" in done.stdout
    assert "binary               " in done.stdout and "2 classes: ['background', 'cancer']" in done.stdout
    assert (tmp_path / "work" / "crops.h5").is_file()


def test_torch_dataloader_example(tmp_path):
    pytest.importorskip("torch")
    work = tmp_path / "work"
    assert run(EXAMPLES / "pipeline.py", work, cwd=tmp_path).returncode == 0
    done = run(EXAMPLES / "torch_dataloader.py", work / "crops.h5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "all: " in done.stdout and "12 classes" in done.stdout and "binary: " in done.stdout

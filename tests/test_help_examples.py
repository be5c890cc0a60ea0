"""Every example in the --help of sample, dicom2png, merge-masks, splits, patches, preview and stats runs on the default sample."""

from __future__ import annotations

import shlex
import shutil

import pytest
from click.testing import CliRunner

from csaws_tools.cli import main

#: In the order a user runs them: later commands read what earlier ones wrote.
COMMANDS = ("merge-masks", "splits", "patches", "preview", "stats")


def help_examples(command: str) -> list[list[str]]:
    """The ``csaws-prepare ...`` lines under "Example(s):" in ``command --help``, as argument lists."""
    text = CliRunner().invoke(main, [command, "--help"], terminal_width=200).output
    lines = text.splitlines()
    out: list[list[str]] = []
    inside = False
    pending = ""
    for line in lines:
        stripped = line.strip()
        if stripped in ("Example:", "Examples:"):
            inside = True
            continue
        if not inside:
            continue
        if not stripped:
            inside = False
            continue
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        words = shlex.split(pending)
        pending = ""
        if words and words[0] == "csaws-prepare":
            out.append(words[1:])
    return out


def run_example(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, f"csaws-prepare {' '.join(args)}\n{result.output}"


def test_every_command_has_examples():
    for command in ("sample", "dicom2png", *COMMANDS):
        assert help_examples(command), command


@pytest.mark.slow
def test_every_help_example_runs_on_the_default_sample(sample_root, tmp_path, monkeypatch):
    # the sample's own example, in a folder of its own
    monkeypatch.chdir(tmp_path)
    for args in help_examples("sample"):
        run_example(args)
    # the others in a folder holding the default sample's CsawS, as the examples assume
    work = tmp_path / "work"
    shutil.copytree(sample_root / "CsawS", work / "CsawS")
    # dicom2png's examples read raw/ (the sample's DICOM) and dbt/ (any DICOM: --frame all on single frames)
    shutil.copytree(sample_root / "dicom", work / "raw")
    shutil.copytree(sample_root / "dicom_test", work / "dbt")
    monkeypatch.chdir(work)
    ran = 0
    for args in help_examples("dicom2png"):
        run_example(args)
        ran += 1
    for command in COMMANDS:
        for args in help_examples(command):
            run_example(args)
            ran += 1
    assert ran >= 14

"""Every CLI option's default is the default of the API parameter it maps to (defined once, in defaults.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import click
import pytest

from csaws_tools.cli import main
from csaws_tools.cli._common import int_list

# command path -> (API function "module:attr", CLI name -> API name renames, CLI name -> converter)
COMMANDS = {
    ("dicom2png",): ("csaws_tools.dicom.convert:convert", {}, {"bits": int}),
    ("merge-masks",): ("csaws_tools.masks.merge:merge_masks", {}, {}),
    ("patches",): ("csaws_tools.patches.stage:write_patches", {"splits_file": "splits"}, {}),
    ("splits",): ("csaws_tools.splits:make_splits", {}, {"sizes": lambda v: int_list(None, None, v)}),
    ("preview",): ("csaws_tools.review.preview:preview", {}, {}),
    ("stats",): ("csaws_tools.review.stats:class_table", {}, {}),
    ("sample",): ("csaws_tools.sample.release:write_sample",
                  {"patients": "n_train_patients", "test_patients": "n_test_patients"}, {}),
    ("export", "nnunet"): ("csaws_tools.review.export:export_nnunet", {"splits_file": "splits"}, {}),
    ("export", "monai"): ("csaws_tools.review.export:export_monai", {"splits_file": "splits"}, {}),
}
#: Options whose CLI default deliberately differs from the API's, and why.
DIFFERENT = {
    ("patches", "classes"): "the CLI passes the parsed list; both mean every class",
}


def command(path: tuple[str, ...]) -> click.Command:
    ctx = click.Context(main)
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(ctx, name)
    return cmd


def api_function(target: str):
    import importlib

    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p))
def test_every_cli_default_is_the_api_default(path):
    target, renames, converters = COMMANDS[path]
    api = inspect.signature(api_function(target)).parameters
    compared = []
    cmd = command(path)
    ctx = click.Context(cmd)
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        name = renames.get(param.name, param.name)
        if name not in api or (path[-1], param.name) in DIFFERENT:
            continue
        expected = api[name].default
        if expected is inspect.Parameter.empty:
            continue
        got = param.get_default(ctx, call=False)
        if param.name in converters and got is not None:
            got = converters[param.name](got)
        if isinstance(expected, tuple) and isinstance(got, (list, tuple)):
            got = tuple(got)
        assert got == expected, f"{' '.join(path)} --{param.name.replace('_', '-')}: CLI {got!r} != API {expected!r}"
        compared.append(name)
    assert compared, "no option of this command was compared"


def test_the_shared_batch_options_default_to_the_run_options_defaults():
    from csaws_tools.execution.options import RunOptions

    run = RunOptions()
    cmd = command(("dicom2png",))
    ctx = click.Context(cmd)
    options = {p.name: p.get_default(ctx, call=False) for p in cmd.params if isinstance(p, click.Option)}
    assert options["workers"] == run.workers and options["batch_size"] == run.batch_size
    assert options["scheduler"] == run.scheduler and options["shard"] == run.shard
    assert options["overwrite"] is run.overwrite is False and options["fail_fast"] is run.fail_fast is False
    assert options["quiet"] is False and options["no_progress"] is False and run.progress is True


def test_the_defaults_module_imports_without_numpy():
    code = "import sys, csaws_tools.defaults, csaws_tools.cli; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

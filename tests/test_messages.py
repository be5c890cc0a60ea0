"""Error messages: the Python API names its parameters (``crop=448``), the command line names its flags (``--crop 448``)."""

from __future__ import annotations

import json
import pickle

import click
import numpy as np
import pytest
from click.testing import CliRunner

from csaws_tools.cli import main
from csaws_tools.cli._common import cli_message, handle_errors
from csaws_tools.errors import (
    CsawsError,
    DependencyError,
    InputError,
    MissingCodecError,
    OutputError,
    OutputWriteError,
    SettingsError,
)
from csaws_tools.png import write_png


def _error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


# --------------------------------------------------------------------------- the errors themselves


@pytest.mark.parametrize("cls", [CsawsError, InputError, MissingCodecError, SettingsError, OutputError,
                                 DependencyError])
def test_an_error_keeps_the_parameters_it_names_across_pickling(cls):
    exc = cls("crop=448 is larger than the crops", param="crop")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == str(exc)
    assert back.params == ("crop",) and back.param == "crop"
    two = pickle.loads(pickle.dumps(cls("give epochs=N or iterations=N", param=("epochs", "iterations"))))
    assert two.params == ("epochs", "iterations") and two.param == "epochs"
    assert cls("no parameter").params == () and cls("no parameter").param is None


def test_an_output_write_error_has_no_parameter_and_stays_picklable():
    exc = pickle.loads(pickle.dumps(OutputWriteError("out.png: cannot write the output (No space)", 28)))
    assert exc.params == () and exc.param is None and exc.errno == 28


# --------------------------------------------------------------------------- the CLI's spelling


@click.command()
@click.option("--crop", type=int)
@click.option("--pretrained")
@click.option("--sizes")
@click.option("--overwrite", is_flag=True)
@click.option("--val-size", "val_size", type=int)
@click.option("--name", "name_template")
@click.option("--message")
@click.option("--params")
@handle_errors
def _command(crop, pretrained, sizes, overwrite, val_size, name_template, message, params):
    raise SettingsError(message, param=params.split(","))


@pytest.mark.parametrize("message, params, shown", [
    ("crop=448 is larger; use crop=64 or less", "crop", "--crop 448 is larger; use --crop 64 or less"),
    ("pretrained='x.pth': file not found", "pretrained", "--pretrained x.pth: file not found"),
    ("pretrained='my weights.pth': no", "pretrained", "--pretrained 'my weights.pth': no"),
    ("sizes=[7, 9]: no subset", "sizes", "--sizes 7,9: no subset"),
    ("use overwrite=True or another folder", "overwrite", "use --overwrite or another folder"),
    ("val_size=500 is more; pass val_size=3 or less", "val_size", "--val-size 500 is more; pass --val-size 3 or less"),
    ("name='{Nope}': not a keyword", "name", "--name '{Nope}': not a keyword"),
    ("give crop=N or epochs=N", "crop,epochs", "give --crop N or epochs=N"),  # no --epochs here: API words stay
    ("the file /data/crop=3/a.png: crop=3", "crop", "the file /data/crop=3/a.png: --crop 3"),
    ("xcrop=4 is not ours", "crop", "xcrop=4 is not ours"),
])
def test_the_cli_spells_the_parameters_an_error_names_as_the_commands_flags(message, params, shown):
    result = CliRunner().invoke(_command, ["--message", message, "--params", params])
    assert result.exit_code == 2
    assert _error_line(result) == f"error: {shown}"


def test_outside_a_command_the_message_keeps_the_api_words():
    assert cli_message(SettingsError("crop=448 is larger", param="crop"), None) == "crop=448 is larger"


# --------------------------------------------------------------------------- dicom2png


def test_dicom2png_a_bad_name_template_is_named_as_the_parameter_in_python_and_as_the_flag_on_the_cli(tmp_path):
    from csaws_tools.dicom.convert import convert

    (tmp_path / "in").mkdir()
    with pytest.raises(SettingsError) as err:
        convert(tmp_path / "in", tmp_path / "out", name="{Nope}", workers=1, progress=False)
    assert str(err.value).startswith("name='{Nope}': {Nope} is not a DICOM keyword")
    assert "--" not in str(err.value) and err.value.param == "name"
    result = CliRunner().invoke(main, ["dicom2png", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                       "--name", "{Nope}", "-j", "1", "--quiet"])
    assert result.exit_code == 2
    assert _error_line(result).startswith("error: --name '{Nope}': {Nope} is not a DICOM keyword")


# --------------------------------------------------------------------------- patches


@pytest.fixture
def image_and_maps(tmp_path):
    images, maps = tmp_path / "images", tmp_path / "maps"
    images.mkdir()
    maps.mkdir()
    write_png(images / "000_1.png", np.zeros((16, 16), dtype=np.uint8))
    write_png(maps / "000_1.png", np.zeros((16, 16), dtype=np.uint8))
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"format": "csaws-splits/1", "train": {"images": ["000_1"]},
                                  "val": {"images": []}}))
    return images, maps, splits


def test_patches_settings_are_named_as_parameters_in_python_and_as_flags_on_the_cli(image_and_maps, tmp_path):
    from csaws_tools.patches.stage import write_patches

    images, maps, splits = image_and_maps
    out = tmp_path / "p.h5"
    with pytest.raises(SettingsError) as err:
        write_patches(images, maps, out, splits=splits, workers=1, progress=False)
    assert str(err.value).startswith("splits= needs split= (train, val") and "--" not in str(err.value)
    with pytest.raises(SettingsError) as err:
        write_patches(images, maps, out, compression="gzip", level=12, workers=1, progress=False)
    assert str(err.value) == "level=12: the gzip level must be 0-9" and err.value.param == "level"

    runner = CliRunner()
    base = ["patches", "--images", str(images), "--masks", str(maps), "-o", str(out), "-j", "1", "--quiet"]
    result = runner.invoke(main, [*base, "--splits", str(splits)])
    assert result.exit_code == 2 and _error_line(result).startswith("error: --splits needs --split (train, val")
    result = runner.invoke(main, [*base, "--compression", "gzip", "--level", "12"])
    assert result.exit_code == 2 and _error_line(result) == "error: --level 12: the gzip level must be 0-9"
    assert not out.exists()


# --------------------------------------------------------------------------- export


def test_export_a_bad_dataset_id_is_named_as_the_parameter_in_python_and_as_the_flag_on_the_cli(image_and_maps,
                                                                                                 tmp_path):
    from csaws_tools.review.export import export_nnunet

    images, maps, _ = image_and_maps
    with pytest.raises(SettingsError) as err:
        export_nnunet(maps, images, tmp_path / "raw", dataset_id=1000, progress=False)
    assert str(err.value) == "dataset_id=1000 must be 1 to 999 (nnU-Net's three-digit ids)"
    with pytest.raises(SettingsError, match=r"^name='a b': use letters"):
        export_nnunet(maps, images, tmp_path / "raw", name="a b", progress=False)

    runner = CliRunner()
    base = ["export", "nnunet", str(maps), str(images), "-o", str(tmp_path / "raw"), "--no-progress"]
    result = runner.invoke(main, [*base, "--dataset-id", "1000"])
    assert result.exit_code == 2
    assert _error_line(result) == "error: --dataset-id 1000 must be 1 to 999 (nnU-Net's three-digit ids)"
    result = runner.invoke(main, [*base, "--name", "a b"])
    assert result.exit_code == 2 and _error_line(result).startswith("error: --name 'a b': use letters")
    assert not (tmp_path / "raw").exists()


# --------------------------------------------------------------------------- train prepare


def test_train_prepare_a_validation_set_too_large_is_named_as_the_parameter_and_as_the_flag(tmp_path):
    from csaws_tools.cli.train import train as train_main
    from csaws_tools.sample_public import write_public_sample
    from csaws_tools.train.datasets import get_adapter
    from csaws_tools.train.datasets.prepare import prepare_dataset

    root = write_public_sample("voc", tmp_path / "voc").root
    with pytest.raises(InputError) as err:
        prepare_dataset(get_adapter("voc", root), tmp_path / "in", workers=1, progress=False)
    message = str(err.value)
    assert message.startswith("val_size=500 is more than the 10 images") and "pass val_size=3 or less" in message
    assert "--" not in message and err.value.param == "val_size"

    result = CliRunner().invoke(train_main, ["prepare", "--dataset", "voc", str(tmp_path / "voc"),
                                             "-o", str(tmp_path / "in2")])
    assert result.exit_code == 2
    line = _error_line(result)
    assert line.startswith("error: --val-size 500 is more than the 10 images") and "pass --val-size 3 or less" in line


def test_export_warning_names_the_parameter_in_python_and_the_flag_on_the_cli(image_and_maps, tmp_path):
    from csaws_tools.review.export import export_nnunet

    images, flat, _ = image_and_maps
    maps = tmp_path / "MAPS"
    (maps / "test" / "consensus").mkdir(parents=True)
    (maps / "trainval").mkdir()
    for image_id in ("000_1", "001_1"):
        (maps / "trainval" / f"{image_id}.png").write_bytes((flat / "000_1.png").read_bytes())
        (images / f"{image_id}.png").write_bytes((images / "000_1.png").read_bytes())
    result = export_nnunet(maps, images, tmp_path / "raw", test_labels="annotator_1", workers=1, progress=False)
    assert any(w.endswith("(pick another test_labels=)") for w in result.warnings), result.warnings
    cli = CliRunner().invoke(main, ["export", "nnunet", str(maps), str(images), "-o", str(tmp_path / "raw2"),
                                    "--test-labels", "annotator_1", "-j", "1", "--no-progress"])
    warnings = [ln for ln in cli.output.splitlines() if ln.startswith("warning: ")]
    assert any(w.endswith("(pick another --test-labels)") for w in warnings), cli.output


def test_ctrl_c_ends_any_command_with_one_line_and_status_130_like_the_batch_commands():
    @click.command()
    @handle_errors
    def long_job() -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of, e.g., a training run

    result = CliRunner().invoke(long_job, [])
    assert result.exit_code == 130
    assert result.output.strip().splitlines() == ["interrupted: finished outputs are kept; a rerun goes on from there"]
    assert "Aborted" not in result.output

"""Small JSON files that must hold an object: one-line errors naming the file."""

from __future__ import annotations

import pytest

from csaws_tools.errors import InputError
from csaws_tools.jsonfile import read_json_object
from csaws_tools.splits import load_splits


def test_an_object_is_returned_as_a_dict(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"x": [1, 2]}')
    assert read_json_object(p, "a test file") == {"x": [1, 2]}


@pytest.mark.parametrize("text, found", [("[1, 2]", "found list"), ("{oops", "invalid JSON"), ('"s"', "found str")])
def test_anything_but_an_object_is_one_line_naming_the_file(tmp_path, text, found):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(InputError) as err:
        read_json_object(p, "a test file")
    message = str(err.value)
    assert message.startswith(f"{p}: not a test file") and found in message and "\n" not in message


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"missing\.json: cannot read a test file"):
        read_json_object(tmp_path / "missing.json", "a test file")


def test_a_splits_file_holding_a_list_is_refused_by_name(tmp_path):
    p = tmp_path / "splits.json"
    p.write_text("[]")
    with pytest.raises(InputError, match=r"splits\.json: not a splits file \(expected a JSON object"):
        load_splits(p)

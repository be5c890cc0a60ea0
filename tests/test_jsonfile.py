"""Small JSON files that must hold an object: one-line errors naming the file."""

from __future__ import annotations

import os
import threading

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


def test_a_file_over_the_default_limit_is_one_line_naming_the_file_and_the_limit(tmp_path):
    from csaws_tools.jsonfile import MAX_JSON_BYTES

    p = tmp_path / "huge.json"
    with open(p, "wb") as f:  # sparse: the size is what stat reports, nothing is written
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(InputError) as err:
        read_json_object(p, "a test file")
    message = str(err.value)
    assert message.startswith(f"{p}: too large for a test file ({MAX_JSON_BYTES + 1} bytes")
    assert f"the limit is {MAX_JSON_BYTES} bytes" in message and "\n" not in message
    assert err.value.param == "max_bytes"


def test_a_file_at_the_limit_is_read_and_one_byte_more_is_refused(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"x": 1}')  # 8 bytes
    assert read_json_object(p, "a test file", max_bytes=8) == {"x": 1}
    with pytest.raises(InputError, match=r"too large for a test file \(8 bytes; the limit is 7 bytes"):
        read_json_object(p, "a test file", max_bytes=7)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_a_stream_longer_than_the_limit_is_refused_after_reading_limit_plus_one_bytes(tmp_path):
    # a pipe's stat size is 0: the bounded read is what stops it
    p = tmp_path / "pipe.json"
    os.mkfifo(p)
    sent = []

    def feed():
        try:
            with open(p, "wb", buffering=0) as f:
                for _ in range(1000):  # up to 1 MB, far more than the limit
                    f.write(b" " * 1000)
                    sent.append(1000)
        except BrokenPipeError:
            pass  # the reader stopped reading: what it had was enough

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with pytest.raises(InputError, match=r"pipe\.json: too large for a test file \(more than 100 bytes"):
        read_json_object(p, "a test file", max_bytes=100)
    writer.join(timeout=10)
    assert not writer.is_alive() and sum(sent) < 1_000_000

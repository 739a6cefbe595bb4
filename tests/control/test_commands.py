"""Control commands: valid ones parse into typed commands, every bad one is one clear line."""

from __future__ import annotations

import json

import pytest

from monitor.control.commands import (
    MAX_PAYLOAD_BYTES,
    AddLabel,
    CommandError,
    SetThreshold,
    parse_command,
)


def test_a_label_with_one_prompt_or_several() -> None:
    one = parse_command(
        b'{"command": "add_label", "label_set": "home", "name": "kettle whistling", '
        b'"prompt": "a kettle whistling", "threshold": 0.3, "id": "r1"}'
    )
    assert isinstance(one, AddLabel)
    assert (one.prompt, one.threshold, one.id, one.device_class) == (
        ["a kettle whistling"],
        0.3,
        "r1",
        "sound",
    )
    two = parse_command(
        json.dumps(
            {"command": "add_label", "label_set": "h", "name": "k", "prompt": ["a", "b"]}
        ).encode()
    )
    assert isinstance(two, AddLabel) and two.prompt == ["a", "b"]
    default = parse_command(b'{"command": "set_threshold", "label_set": "h", "threshold": 0.2}')
    assert isinstance(default, SetThreshold) and default.name is None


@pytest.mark.parametrize(
    ("payload", "message", "command"),
    [
        (b"{not json", "malformed JSON", ""),
        (b"[1, 2]", "a command is a JSON object", ""),
        (b'{"command": "explode"}', "command: expected one of add_label", "explode"),
        (b'{"label_set": "h"}', "command: expected one of", ""),
        (
            b'{"command": "set_threshold", "label_set": "h", "threshold": 1.5}',
            "threshold: Input should be less than or equal to 1 (got 1.5)",
            "set_threshold",
        ),
        (
            b'{"command": "add_label", "label_set": "h"}',
            "name: required key is missing",
            "add_label",
        ),
        (
            b'{"command": "add_label", "label_set": "h", "name": "k", "colour": "red"}',
            "colour: unknown key",
            "add_label",
        ),
        (
            b'{"command": "add_label", "label_set": "h", "name": "k", "device_class": "toaster"}',
            "device_class: Input should be",
            "add_label",
        ),
        (
            b'{"command": "add_label", "label_set": "h", "name": ""}',
            "name: String should",
            "add_label",
        ),
    ],
)
def test_each_bad_command_is_one_line_naming_what_is_wrong(
    payload: bytes, message: str, command: str
) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(payload)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.command == command


def test_an_oversized_payload_is_refused_before_it_is_parsed() -> None:
    name = "k" * MAX_PAYLOAD_BYTES
    payload = json.dumps({"command": "add_label", "label_set": "h", "name": name}).encode()
    with pytest.raises(CommandError, match=r"payload too large \(\d+ bytes; at most 16384\)"):
        parse_command(payload)


def test_the_request_id_is_kept_for_the_answer_even_when_the_command_is_bad() -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(b'{"command": "remove_label", "id": "abc", "label_set": 3}')
    assert caught.value.request_id == "abc"

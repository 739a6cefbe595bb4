"""The JSON commands of the control topic, parsed strictly; a bad one is one line, nothing else."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from monitor.config import StrictModel
from monitor.config.labels import BinarySensorClass

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_NAME_CHARS = 100
MAX_PROMPT_CHARS = 300
MAX_PROMPTS = 16


class CommandError(ValueError):
    """A command that cannot be applied; its message is the one line the sender gets."""

    def __init__(self, message: str, command: str = "", request_id: str | None = None) -> None:
        super().__init__(message)
        self.command = command
        self.request_id = request_id


class _Command(StrictModel):
    id: str | None = Field(
        default=None, max_length=100, description="Echoed in the result, to match the answer."
    )


class AddLabel(_Command):
    """Add a label to a set (its prompts are embedded before it is scored)."""

    command: Literal["add_label"] = Field(description="What to do.")
    label_set: str = Field(description="The set the label joins.")
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="The label.")
    prompt: list[Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROMPTS,
        description="Own prompt(s); None = the set's template(s) filled with the name.",
    )
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Own threshold; None = the set's."
    )
    device_class: BinarySensorClass = Field(
        default="sound", description="Home Assistant device class of its binary_sensor."
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class RemoveLabel(_Command):
    """Remove a label from a set (its open event ends, its entity goes)."""

    command: Literal["remove_label"] = Field(description="What to do.")
    label_set: str = Field(description="The set the label is in.")
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="The label.")


class SetThreshold(_Command):
    """Change one label's threshold, or the set's default threshold."""

    command: Literal["set_threshold"] = Field(description="What to do.")
    label_set: str = Field(description="The set.")
    name: str | None = Field(
        default=None, max_length=MAX_NAME_CHARS, description="The label; None = the set's default."
    )
    threshold: float = Field(ge=0.0, le=1.0, description="The new threshold, 0..1.")


class EnableSet(_Command):
    """Score a label set again."""

    command: Literal["enable_set"] = Field(description="What to do.")
    label_set: str = Field(description="The set.")


class DisableSet(_Command):
    """Stop scoring a label set (its entities stay, OFF)."""

    command: Literal["disable_set"] = Field(description="What to do.")
    label_set: str = Field(description="The set.")


class UseProfile(_Command):
    """Score exactly the sets of a profile defined in the config."""

    command: Literal["profile"] = Field(description="What to do.")
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="The profile.")


class Reset(_Command):
    """Forget every live change: back to the config file."""

    command: Literal["reset"] = Field(description="What to do.")


class Show(_Command):
    """Change nothing; the result carries what is listened for now."""

    command: Literal["show"] = Field(description="What to do.")


Command = Annotated[
    AddLabel | RemoveLabel | SetThreshold | EnableSet | DisableSet | UseProfile | Reset | Show,
    Field(discriminator="command"),
]
COMMAND_NAMES = (
    "add_label",
    "remove_label",
    "set_threshold",
    "enable_set",
    "disable_set",
    "profile",
    "reset",
    "show",
)
_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)


def parse_command(payload: bytes) -> Command:
    """The command in an MQTT payload; CommandError (one line) when it is not a valid one."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(f"payload too large ({len(payload)} bytes; at most {MAX_PAYLOAD_BYTES})")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as err:
        raise CommandError(f"malformed JSON: {err}") from None
    if not isinstance(body, dict):
        raise CommandError("a command is a JSON object with a 'command' key")
    name = body.get("command")
    request_id = body.get("id") if isinstance(body.get("id"), str) else None
    what = name if isinstance(name, str) else ""
    if name not in COMMAND_NAMES:
        raise CommandError(
            f"command: expected one of {', '.join(COMMAND_NAMES)} (got {name!r})", what, request_id
        )
    try:
        return _ADAPTER.validate_python(body)
    except ValidationError as err:
        raise CommandError(_one_line(err), what, request_id) from None


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "command"
    if first["type"] == "extra_forbidden":
        what = "unknown key"
    elif first["type"] == "missing":
        what = "required key is missing"
    else:
        what = str(first["msg"]).removeprefix("Value error, ")
        what += f" (got {repr(first.get('input'))[:60]})"
    return f"{where}: {what}"

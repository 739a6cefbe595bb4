"""`control:` and `profiles:`: what may change the listened labels while the monitor runs."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from monitor.config.base import StrictModel


class ControlConfig(StrictModel):
    """Live label control over MQTT (commands on <base>/control, results on its /result)."""

    enabled: bool = Field(
        default=False,
        description=(
            "Accept JSON commands on <prefix>/<device>/control: add or remove a label, change "
            "a threshold, enable or disable a set, switch profile. Whoever may publish there "
            "may change what is listened for: limit it with a broker ACL."
        ),
    )
    state_file: Path | None = Field(
        default=None,
        description=(
            "Where accepted changes are kept across restarts; None = "
            "$STATE_DIRECTORY/control/<device_id>.json under systemd, else "
            "~/.local/state/audio-monitor/control/<device_id>.json."
        ),
    )
    max_labels_per_set: int = Field(
        default=64, ge=1, le=1000, description="An add_label beyond this many labels is refused."
    )
    max_changes: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description=(
            "At most this many accepted changes are kept on top of the config file; beyond "
            "it commands are refused until a reset (put lasting changes in the file)."
        ),
    )


class ProfileConfig(StrictModel):
    """A named choice of label sets (e.g. day and night), switched to by a control command."""

    label_sets: list[str] = Field(
        min_length=1, description="The label sets scored while this profile is active."
    )

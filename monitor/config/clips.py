"""`clips:`: the audio of each detection event saved to disk, with a JSON sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from monitor.config.base import StrictModel

ClipFormat = Literal["flac", "wav", "ogg"]


class ClipsConfig(StrictModel):
    """Each event's audio, from a little before its first detection to a little after its
    last, written next to a JSON sidecar; bounded by size and age. Off by default."""

    enabled: bool = Field(default=False, description="Save a clip of every detection event.")
    directory: Path | None = Field(
        default=None,
        description=(
            "Where; None = $STATE_DIRECTORY/clips under systemd, else "
            "~/.local/state/audio-monitor/clips."
        ),
    )
    pre_roll_seconds: float = Field(
        default=3.0,
        ge=0,
        le=60,
        description="Audio kept before the start of the event's first detecting window.",
    )
    post_roll_seconds: float = Field(
        default=3.0,
        ge=0,
        le=60,
        description="Audio kept after the end of the event's last detecting window.",
    )
    format: ClipFormat = Field(
        default="flac",
        description="flac (lossless, 24-bit), wav (24-bit PCM) or ogg (Vorbis, smallest).",
    )
    max_clip_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A longer event's clip is cut here (pre-roll included).",
    )
    max_megabytes: float = Field(
        default=1000.0,
        gt=0,
        le=10_000_000,
        description="At most this much disk used by clips and sidecars; oldest deleted first.",
    )
    max_age_days: float = Field(
        default=30.0, gt=0, le=36500, description="Older clips (and sidecars) are deleted."
    )

    @model_validator(mode="after")
    def _clip_longer_than_pre_roll(self) -> ClipsConfig:
        if self.max_clip_seconds <= self.pre_roll_seconds:
            raise ValueError(
                f"max_clip_seconds ({self.max_clip_seconds:g}) must be longer than "
                f"pre_roll_seconds ({self.pre_roll_seconds:g}), or no detection fits in a clip"
            )
        return self

"""`source:`: a live capture device or a replayed file, told apart by `type`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from monitor.config.base import StrictModel, check_slug


class _SourceCommon(StrictModel):
    """What every source kind has."""

    id: str = Field(default="source", description="Source id used in payloads.")
    buffer_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Ring buffer capacity; must hold at least one window.",
    )

    _check_id = field_validator("id")(lambda v: check_slug(v, "source id"))


class MicrophoneSourceConfig(_SourceCommon):
    """A live capture device, read through sounddevice/PortAudio in callback mode."""

    type: Literal["microphone"] = Field(description="Source kind: a capture device.")
    id: str = Field(default="mic", description="Source id used in payloads.")
    device: int | str | None = Field(
        default=None,
        description="Input device index, or a substring of its name; None = system default.",
    )
    sample_rate_hz: int | None = Field(
        default=None,
        ge=8000,
        le=384000,
        description="Capture rate; None = the device's default rate (resampled to 48 kHz).",
    )
    channels: int = Field(
        default=1, ge=1, le=32, description="Channels to capture (downmixed to mono)."
    )
    block_seconds: float = Field(
        default=0.05,
        gt=0,
        le=1.0,
        description="Audio delivered per callback; smaller = lower latency, more wake-ups.",
    )

    @property
    def live(self) -> bool:
        """A device that should deliver audio all the time: silence from it is a fault."""
        return True

    @property
    def lossless(self) -> bool:
        """Every window must be scored, even late: never, a live device drops the oldest."""
        return False


class FileSourceConfig(_SourceCommon):
    """An audio file (WAV/FLAC/OGG) replayed as if it were a live stream."""

    type: Literal["file"] = Field(description="Source kind: an audio file.")
    id: str = Field(default="file", description="Source id used in payloads.")
    path: Path = Field(description="Audio file to replay (anything libsndfile reads).")
    realtime: bool = Field(
        default=True,
        description="Pace the replay in real time; false = as fast as the worker consumes it.",
    )
    loop: bool = Field(default=False, description="Start again at the end of the file.")
    block_seconds: float = Field(
        default=0.1, gt=0, le=1.0, description="Audio written to the ring buffer per step."
    )

    @property
    def live(self) -> bool:
        """A file may pause or end: its silence is not a fault."""
        return False

    @property
    def lossless(self) -> bool:
        """Replayed as fast as it is consumed, so no window may be dropped to catch up."""
        return not self.realtime


SourceConfig = Annotated[MicrophoneSourceConfig | FileSourceConfig, Field(discriminator="type")]

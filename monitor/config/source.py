"""`sources:`: capture devices, replayed files and network streams, told apart by `type`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from monitor.config.base import StrictModel, check_slug
from monitor.config.labels import LabelSetConfig
from monitor.config.secrets import redact_url

# What ffmpeg reads as a live stream: cameras (RTSP/RTSPS), HTTP(S) audio (Icecast, go2rtc
# restreams), RTMP, SRT, raw UDP/TCP, and local files (handy for testing a stream setup).
STREAM_URL_SCHEMES = (
    "rtsp",
    "rtsps",
    "rtmp",
    "rtmps",
    "http",
    "https",
    "srt",
    "udp",
    "tcp",
    "file",
)


class _SourceCommon(StrictModel):
    """What every source kind has."""

    id: str = Field(default="source", description="Source id used in payloads.")
    buffer_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Ring buffer capacity; must hold at least one window.",
    )
    label_sets: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Names of the label sets this source is scored against; unset = every set.",
    )

    @property
    def stall_limit_seconds(self) -> float | None:
        """How long without audio marks this source stalled; None = health.capture_stall_seconds."""
        return None

    def routed(self, label_sets: Sequence[LabelSetConfig]) -> list[LabelSetConfig]:
        """The sets of `label_sets` this source is scored against, in their order."""
        if self.label_sets is None:
            return list(label_sets)
        wanted = set(self.label_sets)
        return [s for s in label_sets if s.name in wanted]

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

    @property
    def reopens_forever(self) -> bool:
        """No: a device still gone after health.max_source_restarts reopenings needs a fresh
        process (PortAudio lists devices once), so it is given up on."""
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

    @property
    def reopens_forever(self) -> bool:
        """No: a file that fails to read would fail again."""
        return False


class StreamSourceConfig(_SourceCommon):
    """A network stream (an RTSP camera, an HTTP audio stream) read through an ffmpeg process."""

    type: Literal["stream"] = Field(description="Source kind: anything ffmpeg opens, by URL.")
    id: str = Field(default="stream", description="Source id used in payloads and topics.")
    url: str = Field(
        description=(
            "Stream URL, e.g. rtsp://camera.lan:554/stream1 or http://host:8000/live. Put the "
            "password in password_file, not here: it would be in the config for anyone to read."
        ),
    )
    username: str | None = Field(
        default=None, description="User name for the stream; merged into the URL for ffmpeg."
    )
    password_file: Path | None = Field(
        default=None,
        description=(
            "File holding the stream's password. A relative name is looked up in "
            "$CREDENTIALS_DIRECTORY (systemd LoadCredential=) when that is set."
        ),
    )
    rtsp_transport: Literal["tcp", "udp", "udp_multicast", "http", "https"] = Field(
        default="tcp",
        description="RTSP lower transport; tcp survives lossy Wi-Fi and NAT (RTSP URLs only).",
    )
    sample_rate_hz: int = Field(
        default=48000,
        ge=8000,
        le=192000,
        description="Rate ffmpeg delivers (it resamples); 48000 = the model's rate, no resampling.",
    )
    connect_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Network connect/read timeout ffmpeg applies, so a half-open link is noticed.",
    )
    no_data_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="Restart the stream when it is connected but sends no audio for this long.",
    )
    block_seconds: float = Field(
        default=0.1, gt=0, le=1.0, description="Audio written to the ring buffer per read."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        shown = redact_url(value)
        parts = urlsplit(value)
        if parts.scheme.lower() not in STREAM_URL_SCHEMES:
            got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise ValueError(
                f"url {shown!r}: {got}; expected one of {', '.join(STREAM_URL_SCHEMES)}"
            )
        if parts.scheme.lower() != "file" and not parts.hostname:
            raise ValueError(f"url {shown!r}: no host name")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as err:
            raise ValueError(f"url {shown!r}: the port is not a number") from err
        return value

    @model_validator(mode="after")
    def _credentials(self) -> StreamSourceConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        if self.username is not None and urlsplit(self.url).username is not None:
            raise ValueError("the url already holds a user name; give it in one place only")
        return self

    @property
    def stall_limit_seconds(self) -> float | None:
        """Connecting may take the connect timeout before the first audio can arrive."""
        return self.connect_timeout_seconds + self.no_data_timeout_seconds

    @property
    def redacted_url(self) -> str:
        """The URL as logs and payloads may show it: no password, whatever the config holds."""
        return redact_url(self.url)

    @property
    def is_rtsp(self) -> bool:
        """RTSP takes its own transport and timeout options in ffmpeg."""
        return urlsplit(self.url).scheme.lower() in ("rtsp", "rtsps")

    @property
    def live(self) -> bool:
        """A camera or a radio stream never pauses: silence from it is a fault."""
        return True

    @property
    def lossless(self) -> bool:
        """Real-time: when scoring falls behind, the oldest audio is dropped."""
        return False

    @property
    def reopens_forever(self) -> bool:
        """Yes: a camera or a server may be away for hours and then come back; each attempt
        is a fresh ffmpeg, spaced by the capped backoff."""
        return True


SourceConfig = Annotated[
    MicrophoneSourceConfig | FileSourceConfig | StreamSourceConfig, Field(discriminator="type")
]

SOURCE_TYPES = ("microphone", "file", "stream")

"""`mqtt:`: the broker, its TLS options and the on-disk outbox of detections."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from monitor.config.base import StrictModel, check_slug, slugify


def _default_device_id() -> str:
    return slugify(socket.gethostname()) or "audio-monitor"


class TlsConfig(StrictModel):
    """TLS for the MQTT connection."""

    enabled: bool = Field(default=False, description="Connect over TLS.")
    ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the broker; None = the system CAs."
    )
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="Client private key (mutual TLS).")
    insecure: bool = Field(
        default=False,
        description="Skip hostname verification (testing only; the certificate is still checked).",
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class OutboxConfig(StrictModel):
    """Detections kept on disk until the broker acknowledges them, across restarts."""

    enabled: bool = Field(
        default=True, description="Keep unacknowledged detections on disk (survive a restart)."
    )
    directory: Path | None = Field(
        default=None,
        description=(
            "Where; None = $STATE_DIRECTORY/outbox under systemd, else "
            "~/.local/state/audio-monitor/outbox."
        ),
    )
    max_messages: int = Field(
        default=10000, ge=1, le=10_000_000, description="At most this many messages kept."
    )
    max_megabytes: float = Field(
        default=50.0,
        gt=0,
        le=100_000,
        description="At most this much disk used (blocks on disk, 10^6 bytes per MB).",
    )
    max_age_hours: float = Field(
        default=168.0, gt=0, le=24 * 365, description="Older messages are dropped, not sent."
    )


class MqttConfig(StrictModel):
    """The MQTT broker that receives status, detections and states."""

    enabled: bool = Field(default=True, description="Publish to MQTT at all.")
    host: str = Field(default="localhost", min_length=1, description="Broker host name or IP.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str | None = Field(
        default=None, description="MQTT client id; None = 'audio-monitor-<device_id>'."
    )
    topic_prefix: str = Field(
        default="audio-monitor", min_length=1, description="First level(s) of every topic."
    )
    device_id: str = Field(
        default_factory=_default_device_id,
        description="This monitor's name in topics; default = the host name.",
    )
    topic_layout: Literal["auto", "flat", "per_source"] = Field(
        default="auto",
        description=(
            "per_source: <prefix>/<device_id>/<source>/<set>/...; flat: <prefix>/<device_id>/"
            "<set>/... (one source only); auto: flat for a config with `source:`, per_source "
            "for one with `sources:`."
        ),
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of detections and states.")
    keepalive_seconds: int = Field(
        default=60, ge=5, le=3600, description="MQTT keepalive; the Last Will fires after ~1.5x."
    )
    reconnect_min_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description=(
            "First reconnect delay; doubles per failure up to the cap, each wait a random "
            "50-100 % of it (jitter, so many monitors do not reconnect in step)."
        ),
    )
    reconnect_max_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="Cap on the reconnect delay."
    )
    max_queued_messages: int = Field(
        default=10000,
        ge=0,
        description=(
            "Messages held in memory while the broker is away; 0 = unbounded. With the "
            "outbox on, the overflow waits on disk instead of being dropped."
        ),
    )
    username: str | None = Field(default=None, description="Username, if the broker wants one.")
    password_file: Path | None = Field(
        default=None,
        description=(
            "File holding the password (never put it in this file). A relative name is looked "
            "up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) when that is set."
        ),
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS options.")
    outbox: OutboxConfig = Field(
        default_factory=OutboxConfig, description="On-disk queue of unacknowledged detections."
    )

    _check_device = field_validator("device_id")(lambda v: check_slug(v, "device_id"))

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError("topic_prefix must not contain '+', '#' or start/end with '/'")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> MqttConfig:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        if self.reconnect_min_seconds > self.reconnect_max_seconds:
            raise ValueError("reconnect_min_seconds must not exceed reconnect_max_seconds")
        return self

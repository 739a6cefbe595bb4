"""`health:`: when capture or scoring counts as stuck, and what the supervisor does."""

from __future__ import annotations

from pydantic import Field

from monitor.config.base import StrictModel


class HealthConfig(StrictModel):
    """When the supervisor considers capture or scoring stuck, and what it does about it."""

    capture_stall_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="No audio block for this long marks the source degraded and reopens it.",
    )
    max_source_restarts: int = Field(
        default=5,
        ge=0,
        le=1000,
        description=(
            "Consecutive failed reopen attempts before exiting with 75 (systemd then restarts "
            "the service with a fresh device list)."
        ),
    )
    restart_backoff_seconds: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="First delay between reopen attempts; doubles per failure, capped at 30 s.",
    )
    worker_stall_seconds: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        description=(
            "A scoring worker without progress for this long stops the systemd watchdog "
            "pings, so systemd restarts the service."
        ),
    )

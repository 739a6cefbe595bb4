"""`events:`: how per-window detections become start/end events."""

from __future__ import annotations

from pydantic import Field

from monitor.config.base import StrictModel


class EventsConfig(StrictModel):
    """How per-window detections become start/end events."""

    cooldown_seconds: float = Field(
        default=5.0,
        ge=0,
        le=86400,
        description="An event ends after this much audio time without a detection of its label.",
    )
    hold_seconds: float = Field(
        default=0.0,
        ge=0,
        le=86400,
        description="Minimum time an event stays ON after it started, however short the sound.",
    )

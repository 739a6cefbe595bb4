"""`scores:`: what the monitor is hearing, the top labels of each set, at a bounded rate."""

from __future__ import annotations

from pydantic import Field

from monitor.config.base import StrictModel


class ScoresConfig(StrictModel):
    """An optional per-source topic with the top labels of each set and their scores."""

    enabled: bool = Field(
        default=False,
        description="Publish <base>/<source>/scores (not retained): the top labels per set.",
    )
    interval_seconds: float = Field(
        default=5.0,
        ge=0.5,
        le=3600,
        description="At most one scores message per source this often (the newest window's).",
    )
    top_k: int = Field(default=3, ge=1, le=50, description="Labels per set in each message.")

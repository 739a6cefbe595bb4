"""`output:`: local outputs besides MQTT."""

from __future__ import annotations

from pydantic import Field

from monitor.config.base import StrictModel


class OutputConfig(StrictModel):
    """Local outputs besides MQTT."""

    json_lines: bool = Field(
        default=False, description="Also print every event as one JSON line on stdout."
    )

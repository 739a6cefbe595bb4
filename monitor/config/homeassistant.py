"""`homeassistant:`: MQTT discovery, so Home Assistant shows a device per source without YAML."""

from __future__ import annotations

from pydantic import Field, field_validator

from monitor.config.base import StrictModel


class HomeAssistantConfig(StrictModel):
    """Home Assistant MQTT discovery (needs mqtt.enabled)."""

    enabled: bool = Field(
        default=True,
        description="Publish discovery: a device per source with its entities (retained).",
    )
    discovery_prefix: str = Field(
        default="homeassistant",
        min_length=1,
        description="Home Assistant's discovery prefix (its MQTT integration setting).",
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix_is_plain(cls, value: str) -> str:
        if any(c in value for c in "#+\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"discovery_prefix {value!r}: no wildcards, no leading or trailing /")
        return value

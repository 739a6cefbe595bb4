"""The whole configuration: every section, and the checks that span sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from monitor.config.base import StrictModel
from monitor.config.events import EventsConfig
from monitor.config.health import HealthConfig
from monitor.config.labels import LabelSetConfig
from monitor.config.model import ModelConfig
from monitor.config.mqtt import MqttConfig
from monitor.config.output import OutputConfig
from monitor.config.source import SourceConfig
from monitor.config.window import WindowConfig


class Config(StrictModel):
    """The whole monitor configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The CLAP model.")
    source: SourceConfig | None = Field(
        default=None,
        description="Where the audio comes from; required by `run`, unused by classify/eval.",
    )
    window: WindowConfig = Field(default_factory=WindowConfig, description="Windowing.")
    label_sets: list[LabelSetConfig] = Field(
        min_length=1, description="One or more sets of labels to score every window against."
    )
    events: EventsConfig = Field(default_factory=EventsConfig, description="Event logic.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT publishing.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Local outputs.")
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Stall detection and recovery."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Logging level."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if (
            self.source is not None
            and self.source.buffer_seconds < self.window.seconds + self.source.block_seconds
        ):
            raise ValueError(
                f"source.buffer_seconds ({self.source.buffer_seconds}) must hold at least one "
                f"window plus one block ({self.window.seconds + self.source.block_seconds} s)"
            )
        names = [s.name for s in self.label_sets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate label set name(s): {', '.join(dupes)}")
        return self

"""The whole configuration: every section, and the checks that span sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from monitor.config.base import StrictModel, check_slug
from monitor.config.clips import ClipsConfig
from monitor.config.control import ControlConfig, ProfileConfig
from monitor.config.events import EventsConfig
from monitor.config.health import HealthConfig
from monitor.config.history import HistoryConfig
from monitor.config.homeassistant import HomeAssistantConfig
from monitor.config.labels import LabelSetConfig
from monitor.config.metrics import MetricsConfig
from monitor.config.model import ModelConfig
from monitor.config.mqtt import MqttConfig
from monitor.config.output import OutputConfig
from monitor.config.scores import ScoresConfig
from monitor.config.source import SourceConfig
from monitor.config.window import WindowConfig


class Config(StrictModel):
    """The whole monitor configuration."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The CLAP model.")
    sources: list[SourceConfig] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Where the audio comes from, one item per microphone, file or stream, each with a "
            "unique id; required by `run`, unused by classify/eval."
        ),
    )
    source: SourceConfig | None = Field(
        default=None,
        description=(
            "A single source, as before `sources:` existed: the same as a one-item list, and "
            "it keeps the MQTT topics without a source level (mqtt.topic_layout: auto)."
        ),
    )
    window: WindowConfig = Field(default_factory=WindowConfig, description="Windowing.")
    label_sets: list[LabelSetConfig] = Field(
        min_length=1, description="One or more sets of labels to score every window against."
    )
    events: EventsConfig = Field(default_factory=EventsConfig, description="Event logic.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT publishing.")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig,
        description="Home Assistant MQTT discovery (a device per source, no YAML).",
    )
    scores: ScoresConfig = Field(
        default_factory=ScoresConfig,
        description="What it is hearing: the top labels per set on a topic, off by default.",
    )
    control: ControlConfig = Field(
        default_factory=ControlConfig,
        description="Live label control over MQTT, off by default.",
    )
    profiles: dict[str, ProfileConfig] = Field(
        default={},
        description="Named choices of label sets (e.g. day, night) a control command switches to.",
    )
    profile: str | None = Field(
        default=None,
        description="The profile active at start-up; None = every label set.",
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="Local outputs.")
    clips: ClipsConfig = Field(
        default_factory=ClipsConfig,
        description="Audio clips of detection events, with a JSON sidecar each; off by default.",
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig, description="Stall detection and recovery."
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="A Prometheus endpoint with the monitor's counters, off by default.",
    )
    history: HistoryConfig = Field(
        default_factory=HistoryConfig,
        description="Audio embeddings of the past for `audio-monitor search`, off by default.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Logging level."
    )

    @property
    def source_configs(self) -> tuple[SourceConfig, ...]:
        """Every configured source, whichever key named them (empty for the offline commands)."""
        if self.sources is not None:
            return tuple(self.sources)
        return (self.source,) if self.source is not None else ()

    @property
    def per_source_topics(self) -> bool:
        """Whether MQTT topics carry a source level (`<prefix>/<device>/<source>/...`)."""
        if self.mqtt.topic_layout == "auto":
            return self.sources is not None
        return self.mqtt.topic_layout == "per_source"

    def label_sets_of(self, source: SourceConfig) -> list[LabelSetConfig]:
        """The label sets `source` is scored against, in config order."""
        return source.routed(self.label_sets)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = [s.name for s in self.label_sets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate label set name(s): {', '.join(dupes)}")
        if self.source is not None and self.sources is not None:
            raise ValueError("give either source: (one) or sources: (a list), not both")
        key = "sources" if self.sources is not None else "source"
        ids = [s.id for s in self.source_configs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"{key}: duplicate source id(s): {', '.join(dupes)}")
        for index, src in enumerate(self.source_configs):
            where = f"sources[{index}] ({src.id})" if self.sources is not None else "source"
            if src.buffer_seconds < self.window.seconds + src.block_seconds:
                raise ValueError(
                    f"{where}.buffer_seconds ({src.buffer_seconds}) must hold at least one "
                    f"window plus one block ({self.window.seconds + src.block_seconds} s)"
                )
            unknown = [n for n in src.label_sets or () if n not in names]
            if unknown:
                raise ValueError(
                    f"{where}.label_sets: no label set named {', '.join(map(repr, unknown))} "
                    f"(have {', '.join(map(repr, names))})"
                )
        for profile, chosen in self.profiles.items():
            check_slug(profile, "profile name")
            unknown = [n for n in chosen.label_sets if n not in names]
            if unknown:
                raise ValueError(
                    f"profiles.{profile}.label_sets: no label set named "
                    f"{', '.join(map(repr, unknown))} (have {', '.join(map(repr, names))})"
                )
        if self.profile is not None and self.profile not in self.profiles:
            have = ", ".join(map(repr, self.profiles)) or "none defined"
            raise ValueError(f"profile: no profile named {self.profile!r} (have {have})")
        if self.control.enabled and not self.mqtt.enabled:
            raise ValueError("control.enabled needs mqtt.enabled: commands arrive over MQTT")
        if self.mqtt.topic_layout == "flat" and len(ids) > 1:
            raise ValueError(
                "mqtt.topic_layout: flat topics cannot tell several sources apart; "
                "use per_source (or auto)"
            )
        return self

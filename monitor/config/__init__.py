"""The YAML configuration: typed pydantic sections and a loader that fails in one clear line."""

from monitor.config.base import StrictModel, check_slug, looks_like_path, slugify
from monitor.config.clips import ClipFormat, ClipsConfig
from monitor.config.control import ControlConfig, ProfileConfig
from monitor.config.events import EventsConfig
from monitor.config.health import HealthConfig
from monitor.config.history import HistoryConfig
from monitor.config.homeassistant import HomeAssistantConfig
from monitor.config.labels import DEFAULT_PROMPT_TEMPLATE, LabelConfig, LabelSetConfig, ScoringMode
from monitor.config.loader import MAX_CONFIG_BYTES, MAX_YAML_ALIASES, load_config, parse_config
from monitor.config.metrics import DEFAULT_METRICS_PORT, MetricsConfig
from monitor.config.model import ModelConfig
from monitor.config.mqtt import MqttConfig, OutboxConfig, TlsConfig
from monitor.config.output import OutputConfig
from monitor.config.root import Config
from monitor.config.scores import ScoresConfig
from monitor.config.source import (
    SOURCE_TYPES,
    FileSourceConfig,
    MicrophoneSourceConfig,
    SourceConfig,
    StreamSourceConfig,
)
from monitor.config.window import MAX_WINDOW_SECONDS, WindowConfig

__all__ = [
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PROMPT_TEMPLATE",
    "MAX_CONFIG_BYTES",
    "MAX_WINDOW_SECONDS",
    "MAX_YAML_ALIASES",
    "SOURCE_TYPES",
    "ClipFormat",
    "ClipsConfig",
    "Config",
    "ControlConfig",
    "EventsConfig",
    "FileSourceConfig",
    "HealthConfig",
    "HistoryConfig",
    "HomeAssistantConfig",
    "LabelConfig",
    "LabelSetConfig",
    "MetricsConfig",
    "MicrophoneSourceConfig",
    "ModelConfig",
    "MqttConfig",
    "OutboxConfig",
    "OutputConfig",
    "ProfileConfig",
    "ScoresConfig",
    "ScoringMode",
    "SourceConfig",
    "StreamSourceConfig",
    "StrictModel",
    "TlsConfig",
    "WindowConfig",
    "check_slug",
    "load_config",
    "looks_like_path",
    "parse_config",
    "slugify",
]

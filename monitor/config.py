"""The YAML configuration: typed pydantic models and a loader that fails in one clear line."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from monitor.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
# A real config has a handful of anchors at most; a YAML "billion laughs" needs many.
MAX_YAML_ALIASES = 100
MAX_WINDOW_SECONDS = 10.0  # the checkpoint's extractor randomly crops anything longer
DEFAULT_PROMPT_TEMPLATE = "This is a sound of {}."

_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def slugify(text: str) -> str:
    """Turn a free-text label into a topic-safe name: lower case, runs of other chars -> '_'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def looks_like_path(name: str) -> bool:
    """Whether a model or dataset name can only mean a local directory.

    A hub id is "name" or "owner/name"; anything else is meant as a path.
    """
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _default_device_id() -> str:
    return slugify(socket.gethostname()) or "audio-monitor"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_slug(value: str, what: str) -> str:
    if not _SLUG_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and contain only "
            "letters, digits, '_' and '-' (it becomes part of MQTT topics)"
        )
    return value


class ModelConfig(_Strict):
    """Which CLAP checkpoint to load and how to run it."""

    name: str = Field(
        default="laion/clap-htsat-unfused",
        min_length=1,
        description="Hugging Face hub id or a local directory holding the checkpoint.",
    )
    revision: str | None = Field(
        default=None, description="Hub revision (branch, tag or commit) to load; None = main."
    )
    torch_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Intra-op threads for inference (torch or ONNX Runtime); 0 = the default.",
    )
    precision: Literal["fp32", "bf16", "int8"] = Field(
        default="fp32",
        description=(
            "Audio tower weights: fp32 (reference scores), bf16 or int8 (dynamic quantisation "
            "of Linear layers; faster, scores agree closely - see `audio-monitor bench`)."
        ),
    )
    backend: Literal["torch", "onnx"] = Field(
        default="torch",
        description=(
            "torch, or onnx: the audio tower exported once to ONNX Runtime (cached), so the "
            "daemon runs without importing torch."
        ),
    )
    cache_dir: Path | None = Field(
        default=None,
        description=(
            "Cache of label embeddings and exported models; None = $CACHE_DIRECTORY or "
            "$STATE_DIRECTORY/cache under systemd, else ~/.cache/audio-monitor."
        ),
    )
    max_batch: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Windows scored in one forward pass when several are waiting.",
    )
    trace: bool = Field(
        default=True,
        description=(
            "torch backend: run the audio tower as one TorchScript graph, traced once in a "
            "helper process, checked against the eager model and cached, so the daemon loads "
            "neither transformers nor a text tower (faster, and about 40 % less memory); "
            "false runs transformers' model in this process."
        ),
    )

    @model_validator(mode="after")
    def _backend_supports_precision(self) -> ModelConfig:
        if self.backend == "onnx" and self.precision == "bf16":
            raise ValueError("precision bf16 is for the torch backend; onnx takes fp32 or int8")
        return self


class _SourceCommon(_Strict):
    """What every source kind has."""

    id: str = Field(default="source", description="Source id used in payloads.")
    buffer_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Ring buffer capacity; must hold at least one window.",
    )

    _check_id = field_validator("id")(lambda v: _check_slug(v, "source id"))


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


SourceConfig = Annotated[MicrophoneSourceConfig | FileSourceConfig, Field(discriminator="type")]


class WindowConfig(_Strict):
    """How audio is cut into windows for scoring."""

    seconds: float = Field(
        default=5.0,
        gt=0,
        le=MAX_WINDOW_SECONDS,
        description="Window length; at most 10 s so scoring stays deterministic.",
    )
    hop_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="Time between the starts of consecutive windows."
    )
    min_dbfs: float | None = Field(
        default=None,
        ge=-150,
        le=0,
        description=(
            "Energy gate: windows quieter than this RMS level (dBFS) skip the model; "
            "None = score every window."
        ),
    )


class LabelConfig(_Strict):
    """One free-text label of a label set."""

    name: str = Field(min_length=1, description="The label as published, e.g. 'glass breaking'.")
    prompt: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Own text prompt, or several (a prompt ensemble, averaged); None = the set's "
            "prompt_template(s) filled with the name."
        ),
    )
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Own detection threshold; None = the set's."
    )

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("prompt")
    @classmethod
    def _prompts_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not p.strip() for p in value):
            raise ValueError("a prompt must not be blank")
        return value

    @field_validator("name")
    @classmethod
    def _name_has_slug(cls, value: str) -> str:
        if not slugify(value):
            raise ValueError(f"label {value!r} needs at least one letter or digit")
        return value


ScoringMode = Literal["softmax", "absolute"]


class LabelSetConfig(_Strict):
    """Labels scored together against the same window."""

    name: str = Field(description="Set name, used in MQTT topics.")
    mode: ScoringMode = Field(
        default="softmax",
        description=(
            "softmax: a label's score is its share of the softmax over the set (labels and "
            "background); absolute: it depends only on the label's own similarity (its margin "
            "over the best background prompt when the set has background prompts)."
        ),
    )
    prompt_template: list[str] = Field(
        default=[DEFAULT_PROMPT_TEMPLATE],
        min_length=1,
        description=(
            "Prompt for each label, '{}' replaced by the label name; a list of templates is "
            "a prompt ensemble (their text embeddings are averaged)."
        ),
    )
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Default detection threshold of the set's labels."
    )
    labels: list[LabelConfig] = Field(min_length=1, description="The labels to detect.")
    background: list[str] = Field(
        default=[],
        description=(
            "Background labels (e.g. 'silence', 'people talking'): scored with the same "
            "templates, part of the softmax, never detected."
        ),
    )

    _check_name = field_validator("name")(lambda v: _check_slug(v, "label set name"))

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("prompt_template", mode="before")
    @classmethod
    def _template_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("prompt_template")
    @classmethod
    def _template_has_one_slot(cls, value: list[str]) -> list[str]:
        for template in value:
            if template.count("{}") != 1:
                raise ValueError(f"prompt_template {template!r} must contain '{{}}' exactly once")
        return value

    @model_validator(mode="after")
    def _background_apart(self) -> LabelSetConfig:
        slugs = {label.slug for label in self.labels}
        for name in self.background:
            if not slugify(name):
                raise ValueError(f"background {name!r} needs at least one letter or digit")
            if slugify(name) in slugs:
                raise ValueError(f"background {name!r} is also a label")
        if self.mode == "softmax" and len(self.labels) + len(self.background) < 2:
            raise ValueError(
                "a softmax set needs at least two labels or background labels "
                "(the softmax over one label is always 1)"
            )
        return self

    @field_validator("labels", mode="after")
    @classmethod
    def _labels_unique(cls, labels: list[LabelConfig]) -> list[LabelConfig]:
        seen: dict[str, str] = {}
        for label in labels:
            if label.slug in seen:
                raise ValueError(
                    f"duplicate label {label.name!r} (same topic name as {seen[label.slug]!r})"
                )
            seen[label.slug] = label.name
        return labels

    def prompts_for(self, label: LabelConfig) -> list[str]:
        """The prompt(s) of a label: its own, else the set's template(s) filled in."""
        if label.prompt is not None:
            return list(label.prompt)
        return self.background_prompts(label.name)

    def background_prompts(self, name: str) -> list[str]:
        """The set's template(s) filled with `name`."""
        return [template.format(name) for template in self.prompt_template]

    def threshold_for(self, label: LabelConfig) -> float:
        return label.threshold if label.threshold is not None else self.threshold


class EventsConfig(_Strict):
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


class TlsConfig(_Strict):
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


class OutboxConfig(_Strict):
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


class MqttConfig(_Strict):
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

    _check_device = field_validator("device_id")(lambda v: _check_slug(v, "device_id"))

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


class HealthConfig(_Strict):
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


class OutputConfig(_Strict):
    """Local outputs besides MQTT."""

    json_lines: bool = Field(
        default=False, description="Also print every event as one JSON line on stdout."
    )


class Config(_Strict):
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


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif i > 0 and loc[i - 1] == "source" and item in ("microphone", "file"):
            continue  # the discriminated union's tag, not a key the user wrote
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def _format_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    where = _format_location(tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        what = "unknown key"
    elif first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        where += ".type"
        what = "expected one of 'microphone', 'file'"
        if first["type"] == "union_tag_invalid":
            what += f" (got {first['ctx']['tag']!r})"
    elif first["type"] == "missing":
        what = "required key is missing"
    else:
        what = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] != "value_error":
            shown = repr(first.get("input"))
            what += f" (got {shown[:60]})"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {where}: {what}{suffix}"


def _count_aliases(text: str) -> int:
    return sum(isinstance(tok, yaml.AliasToken) for tok in yaml.scan(text, Loader=yaml.SafeLoader))


def parse_config(text: str, path: Path, *, require_source: bool = True) -> Config:
    """Validate YAML text into a Config; `path` only names the source in errors.

    `require_source=False` is for the offline commands, which read label sets and the model
    from a config but bring their own audio.
    """
    try:
        if _count_aliases(text) > MAX_YAML_ALIASES:
            raise ConfigError(f"{path}: too many YAML aliases (more than {MAX_YAML_ALIASES})")
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error at {where}: {problem}") from err
    except RecursionError as err:
        raise ConfigError(f"{path}: YAML nested too deeply") from err
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {kind}")
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err)) from err
    except RecursionError as err:
        raise ConfigError(f"{path}: configuration nested too deeply") from err
    if require_source and config.source is None:
        raise ConfigError(f"{path}: source: required key is missing")
    return config


def load_config(path: str | Path, *, require_source: bool = True) -> Config:
    """Read and validate a config file; raises ConfigError with a one-line message."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, expected a YAML file")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: file is {size} bytes, more than {MAX_CONFIG_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such file") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from err
    return parse_config(text, path, require_source=require_source)

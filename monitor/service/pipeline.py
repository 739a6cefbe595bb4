"""The running pipeline, built in one place: sources and their buffers, the worker, the outputs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, StreamFormat
from monitor.audio.windowing import Windower
from monitor.clips.layout import resolve_clips_root
from monitor.clips.recorder import ClipRecorder, min_ring_seconds
from monitor.config import Config, ModelConfig, SourceConfig
from monitor.control.commands import Command
from monitor.control.controller import LabelController, build_scorers_of, restore
from monitor.control.journal import ChangeJournal, resolve_state_file
from monitor.control.state import LabelState
from monitor.errors import ConfigError
from monitor.frames import Event
from monitor.history.writer import HistoryWriter
from monitor.outputs.fanout import FanOut
from monitor.outputs.sink import Sink
from monitor.pipeline.events import EventTracker
from monitor.pipeline.gate import ChangeGate
from monitor.pipeline.scoring import LabelSetScorer
from monitor.pipeline.worker import Feed, ScoringObserver, ScoringWorker

if TYPE_CHECKING:
    from monitor.model.runner import ClapRunner

logger = logging.getLogger(__name__)

SOURCE_STOP_TIMEOUT_SECONDS = 2.0
BUILD_FAILED_STOP_SECONDS = 2.0  # outputs made before a failed build get this to close

ModelLoader = Callable[[ModelConfig], "ClapRunner"]
SourceFactory = Callable[[SourceConfig], Source]


class PipelineObserver(ScoringObserver, Protocol):
    """Told when audio starts to flow and about every batch scored (benchmarks, tests)."""

    def on_streaming_started(self) -> None:
        """The model is loaded, the outputs and the worker run; the sources start next."""


def make_source(cfg: SourceConfig) -> Source:
    """The source the config asks for (the capture module is imported only when needed)."""
    if cfg.type == "microphone":
        from monitor.audio.microphone import MicrophoneSource

        return MicrophoneSource(cfg)
    if cfg.type == "stream":
        from monitor.audio.stream import StreamSource

        return StreamSource(cfg)
    from monitor.audio.file import FileSource

    return FileSource(cfg)


def load_model(cfg: ModelConfig) -> ClapRunner:
    """The configured checkpoint; torch is imported only here, after the outputs are built."""
    from monitor.model.runner import load_clap

    return load_clap(cfg)


@dataclass(frozen=True)
class Lane:
    """One source and what it feeds: its ring buffer and the windows cut from it."""

    config: SourceConfig
    source: Source
    stream_format: StreamFormat
    ring: RingBuffer
    windower: Windower


@dataclass(frozen=True)
class Pipeline:
    """Everything one run needs, built but not yet started."""

    lanes: tuple[Lane, ...]
    worker: ScoringWorker
    outputs: FanOut
    controller: LabelController  # live label changes and config reloads
    clips: ClipRecorder | None = None  # clips.enabled: names each event's clip, writes it
    # (backend, precision) the model runs in: what model.precision auto resolved to.
    model_runs_as: tuple[str, str] | None = None
    history: HistoryWriter | None = None  # keeps every window's embedding (history.enabled)


def build_outputs(
    config: Config, state: LabelState | None = None, extra_sinks: Sequence[Sink] = ()
) -> FanOut:
    """The configured outputs, then `extra_sinks` (a command's own view, such as listen's);
    the MQTT one reads its password file here. `state`: the labels as changed live, when they
    differ from the config file's."""
    sinks: list[Sink] = []
    if config.mqtt.enabled:
        from monitor.outputs.mqtt.discovery import DeviceInfo
        from monitor.outputs.mqtt.sink import MqttSink

        labels = state or LabelState.of(config)
        label_sets_of = {src.id: labels.routed_sets_of(src) for src in config.source_configs}
        ha = config.homeassistant
        discovery = (
            DeviceInfo(
                ha.discovery_prefix,
                config.mqtt.device_id,
                config.model.name,
                top_labels=config.scores.enabled,
            )
            if ha.enabled
            else None
        )
        sinks.append(
            MqttSink(
                config.mqtt,
                label_sets_of,
                per_source=config.per_source_topics,
                discovery=discovery,
                scores=config.scores,
                control=config.control.enabled,
            )
        )
    if config.output.json_lines:
        from monitor.outputs.jsonlines import JsonLinesSink

        sinks.append(JsonLinesSink(config.mqtt.device_id))
    sinks.extend(extra_sinks)
    if not sinks:
        logger.warning("mqtt and output.json_lines are both off: events go only to the log")
    return FanOut(sinks)


def build_pipeline(
    config: Config,
    *,
    source_factory: SourceFactory = make_source,
    model_loader: ModelLoader = load_model,
    status: Callable[[str], object] | None = None,
    observer: ScoringObserver | None = None,
    reload_config: Callable[[], Config] | None = None,
    extra_sinks: Sequence[Sink] = (),
) -> Pipeline:
    """Outputs first (a missing secret fails before the model loads), then the model and the
    label sets, then each source opened with its ring buffer and windower, then the worker.

    Nothing is started. `extra_sinks` are outputs the caller made, after the configured ones
    (they hear scores only when config.scores.enabled). `status` hears what is being done,
    for the service manager. When a step fails, the sources and outputs already made are
    stopped again before the error propagates. `reload_config` re-reads the config file for a
    reload (SIGHUP).
    """
    source_configs = config.source_configs
    if not source_configs:  # load_config(require_source=True) already refuses this
        raise ConfigError("sources: required key is missing")
    journal = (
        ChangeJournal(resolve_state_file(config.control.state_file, config.mqtt.device_id))
        if config.control.enabled
        else None
    )
    state, changes = restore(config, journal)
    outputs = build_outputs(config, state, extra_sinks)
    sources: list[Source] = []
    history: HistoryWriter | None = None
    try:
        history = _build_history(config)  # a bad path fails before the model loads
        if status is not None:
            status("loading model")
        runner = model_loader(config.model)
        scorers_of = build_scorers_of(state, source_configs, runner.embed_text, runner.logit_scale)
        opened = []
        for source_cfg in source_configs:
            source = source_factory(source_cfg)
            sources.append(source)
            opened.append(_open_lane(config, source_cfg, source))
        lanes = tuple(opened)
        feeds = [
            Feed(lane.windower, scorers_of[lane.config.id], _finished_of(lane.source))
            for lane in lanes
        ]
        tracker = EventTracker(config.events.cooldown_seconds, config.events.hold_seconds)
        clips = _build_clips(config, lanes)
        worker = ScoringWorker(
            feeds,
            runner,
            tracker,
            outputs.publish_events if clips is None else _with_clips(clips, outputs),
            max_batch=config.model.max_batch,
            on_scores=outputs.publish_scores if config.scores.enabled else None,
            min_dbfs=config.window.min_dbfs,
            observer=observer,
            gate=ChangeGate(config.window.change_gate)
            if config.window.change_gate.enabled
            else None,
            on_embeddings=history.submit if history is not None else None,
        )
        controller = _build_controller(
            config, state, changes, journal, runner, worker, outputs, reload_config
        )
    except BaseException:
        for made in sources:
            stop_source(made)
        outputs.stop(BUILD_FAILED_STOP_SECONDS)
        if history is not None:
            history.store.close()  # never started: nothing queued
        raise
    runs_as = (
        str(getattr(runner, "backend", config.model.backend)),
        str(getattr(runner, "precision", config.model.precision)),
    )
    return Pipeline(lanes, worker, outputs, controller, clips, runs_as, history)


def _build_clips(config: Config, lanes: Sequence[Lane]) -> ClipRecorder | None:
    """The clip recorder over every lane's ring, when clips are on (not started)."""
    if not config.clips.enabled:
        return None
    root = resolve_clips_root(config.clips.directory)
    return ClipRecorder(config.clips, root, {lane.config.id: lane.ring for lane in lanes})


def _with_clips(clips: ClipRecorder, outputs: FanOut) -> Callable[[Sequence[Event]], None]:
    """Events on their way out: the recorder names their clips (without blocking), then the
    outputs publish them."""
    return lambda events: outputs.publish_events(clips.annotate(events))


def _build_history(config: Config) -> HistoryWriter | None:
    """The history writer (its database opened, not started) when history is enabled."""
    if not config.history.enabled:
        return None
    from monitor.history.paths import resolve_history_path

    cfg = config.history
    path = resolve_history_path(cfg.path)
    logger.info("history: keeping every window's embedding in %s", path)
    return HistoryWriter(
        path,
        model_id=config.model.name,
        max_age_days=cfg.max_age_days,
        max_megabytes=cfg.max_megabytes,
    )


def _build_controller(
    config: Config,
    state: LabelState,
    changes: list[Command],
    journal: ChangeJournal | None,
    runner: ClapRunner,
    worker: ScoringWorker,
    outputs: FanOut,
    reload_config: Callable[[], Config] | None,
) -> LabelController:
    """The label controller, wired to swap the worker's scorers and update the outputs."""
    sources = config.source_configs

    def apply(new: LabelState, scorers_of: dict[str, tuple[LabelSetScorer, ...]]) -> None:
        worker.set_scorers(scorers_of)
        outputs.update_labels({src.id: new.routed_sets_of(src) for src in sources})

    controller = LabelController(
        state,
        changes,
        sources,
        embed_text=runner.embed_text,
        logit_scale=runner.logit_scale,
        apply=apply,
        on_result=outputs.publish_control_result,
        journal=journal,
        max_changes=config.control.max_changes,
        load_config=reload_config,
    )
    if config.control.enabled:
        outputs.receive_commands(controller.submit)
    return controller


def _finished_of(source: Source) -> Callable[[], bool]:
    return lambda: source.finished


def _open_lane(config: Config, source_cfg: SourceConfig, source: Source) -> Lane:
    fmt = source.open()
    ring_seconds = source_cfg.buffer_seconds
    if config.clips.enabled:  # an event's pre-roll must still be in the ring when it starts
        ring_seconds = max(ring_seconds, min_ring_seconds(config.window.seconds, config.clips))
    ring = RingBuffer(
        max(1, round(ring_seconds * fmt.sample_rate_hz)),
        fmt.channels,
        fmt.sample_rate_hz,
    )
    windower = Windower(
        ring,
        source.source_id,
        config.window.seconds,
        config.window.hop_seconds,
        catch_up=source_cfg.lossless,
    )
    return Lane(source_cfg, source, fmt, ring, windower)


def stop_source(source: Source) -> None:
    """source.stop() in a helper thread: a driver that hangs on close cannot hang us."""
    stopper = threading.Thread(target=source.stop, name="source-stop", daemon=True)
    stopper.start()
    stopper.join(SOURCE_STOP_TIMEOUT_SECONDS)
    if stopper.is_alive():
        logger.error(
            "source %s did not stop within %.0f s; abandoned to a background thread",
            source.source_id,
            SOURCE_STOP_TIMEOUT_SECONDS,
        )

"""`audio-monitor listen`: the top labels per source, live in the terminal, never published."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pydantic import ValidationError

from monitor.config import (
    Config,
    HomeAssistantConfig,
    MetricsConfig,
    MicrophoneSourceConfig,
    MqttConfig,
    OutputConfig,
    ScoresConfig,
)
from monitor.errors import ConfigError
from monitor.frames import Event, Scores
from monitor.listen.view import SourceView, View, render, render_plain, source_view
from monitor.offline.common import (
    ADHOC_SET_NAME,
    adhoc_label_set,
    config_from_args,
    model_from_args,
)
from monitor.outputs.sink import HealthReport, Sink
from monitor.service.daemon import Daemon

logger = logging.getLogger(__name__)

REDRAW_SECONDS = 0.25  # at most four redraws a second, whatever the number of sources
TerminalSize = Callable[[], tuple[int, int]]


def _terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size()
    return size.columns, size.lines


def listen_config(args: argparse.Namespace, config: Config | None) -> Config:
    """The config listen runs: the --config file's (or the default microphone and model), the
    --labels set instead of its label sets, and every output that publishes switched off.

    Scores are switched on: they are what the terminal view is drawn from.
    """
    if args.top < 1:
        raise ConfigError(f"--top: must be at least 1 (got {args.top})")
    if args.labels:
        label_sets = [
            adhoc_label_set(
                ADHOC_SET_NAME,
                args.labels,
                templates=args.template,
                background=args.background,
                mode="absolute",
            )
        ]
    elif config is not None:
        if args.template or args.background:
            raise ConfigError(
                "--template, --background: only for --labels; the label sets of "
                f"{args.config} set their own"
            )
        label_sets = list(config.label_sets)
    else:
        raise ConfigError(
            "nothing to listen for: give --labels L1 L2 ... or --config FILE with label_sets"
        )
    sources = list(config.source_configs) if config is not None else []
    if not sources:
        sources = [MicrophoneSourceConfig(type="microphone")]
    if args.labels:  # the config's label-set names are gone: every source gets the one set
        sources = [s.model_copy(update={"label_sets": None}) for s in sources]
    fields: dict[str, Any] = (
        {name: getattr(config, name) for name in Config.model_fields} if config else {}
    )
    fields.update(
        model=model_from_args(args, config, reproducible=False),
        source=None,
        sources=sources,
        label_sets=label_sets,
        mqtt=MqttConfig(enabled=False),
        homeassistant=HomeAssistantConfig(enabled=False),
        scores=ScoresConfig(enabled=True),
        output=OutputConfig(json_lines=False),
        # The daemon may be serving metrics on the config's port; listen publishes nothing.
        metrics=MetricsConfig(),
    )
    try:
        return Config(**fields)
    except ValidationError as err:
        what = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"listen: {what}") from err


class TerminalView(Sink):
    """An output that draws the latest scores of every source on a terminal.

    The worker only keeps each source's latest scores (publish_scores); a thread of its own
    ranks them and writes, at most every `interval_seconds`, so neither the drawing nor a slow
    or paused terminal holds up scoring, and windows scored between two draws cost nothing.
    On a terminal the lines are redrawn in place; otherwise each update is one plain line per
    source, for a pipe or a log. `on_closed` hears when `out` cannot be written any
    more (the terminal closed, the reader of the pipe gone).
    """

    name = "listen"

    def __init__(
        self,
        title: str,
        source_ids: Sequence[str],
        top_k: int,
        out: TextIO,
        *,
        tty: bool,
        interval_seconds: float = REDRAW_SECONDS,
        terminal_size: TerminalSize = _terminal_size,
        on_closed: Callable[[], object] | None = None,
    ) -> None:
        self.title = title
        self.top_k = top_k
        self.out = out
        self.tty = tty
        self.interval_seconds = interval_seconds
        self.terminal_size = terminal_size
        self.on_closed = on_closed
        self._latest = {source_id: SourceView(source_id) for source_id in source_ids}
        self._pending: dict[str, Sequence[Scores]] = {}  # scored since the last draw
        self._changed: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drawn_lines = 0
        self._shown = False
        self._broken = False
        self._thread = threading.Thread(target=self._run, name="listen-view", daemon=True)

    def show(self) -> None:
        """Draw the view now, on a terminal: before the model is loaded, every source waits."""
        self._shown = True
        if self.tty:
            self._write(self._screen())

    def start(self) -> None:
        self.show()
        self._thread.start()

    def publish_event(self, event: Event) -> None:
        return None

    def publish_health(self, report: HealthReport) -> None:
        return None

    def publish_scores(self, scores: Sequence[Scores]) -> None:
        if not scores:
            return
        source_id = scores[0].window.source_id
        with self._lock:
            self._pending[source_id] = scores
            if source_id not in self._changed:
                self._changed.append(source_id)
        self._wake.set()

    def stop(self, timeout_seconds: float) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_seconds)
        if self._shown and not self._thread.is_alive():
            self._draw()  # the last scores, and the cursor on a fresh line below them

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            self._draw()
            self._stopping.wait(self.interval_seconds)

    def _take_changed(self) -> list[SourceView]:
        """The sources scored since the last draw, ranked now (on this thread), in the order
        they changed; _latest holds every source's view."""
        with self._lock:
            pending, self._pending = self._pending, {}
            changed, self._changed = self._changed, []
        for source_id, scores in pending.items():
            self._latest[source_id] = source_view(scores, self.top_k)
        return [self._latest[source_id] for source_id in changed]

    def _draw(self) -> None:
        if self.tty:
            self._write(self._screen())
            return
        changed = self._take_changed()
        if changed:
            self._write("".join(render_plain(source) + "\n" for source in changed))

    def _screen(self) -> str:
        """The whole view, starting where the previous one started (over it)."""
        self._take_changed()
        view = View(self.title, tuple(self._latest.values()))
        columns, rows = self.terminal_size()
        lines = render(view, max(1, columns))[: max(1, rows - 1)]
        # Back to the first line drawn last time, clear from there down, draw again. A ^C
        # echoed by the terminal below the view is cleared with it.
        up = f"\x1b[{self._drawn_lines}A" if self._drawn_lines else ""
        self._drawn_lines = len(lines)
        return "\r" + up + "\x1b[J" + "".join(line + "\n" for line in lines)

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError) as err:  # a closed pipe or terminal: nobody is watching
            self._broken = True
            logger.warning("listen: cannot write to stdout any more (%s); stopping", err)
            if self.on_closed is not None:
                self.on_closed()


def run_listen(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`audio-monitor listen`: run the monitor with the terminal view as its only output."""
    config = listen_config(args, config_from_args(args))
    out = out if out is not None else sys.stdout
    sources = [s.id for s in config.source_configs]
    view = TerminalView(
        f"audio-monitor listen: {config.model.name}  (Ctrl-C to stop)",
        sources,
        args.top,
        out,
        tty=out.isatty(),
    )
    daemon = Daemon(config, extra_sinks=[view])
    view.on_closed = daemon.request_stop  # `listen | head`: stop once head has had enough
    view.show()  # loading the model takes seconds: show at once what is coming
    daemon.install_signal_handlers()
    return daemon.run()

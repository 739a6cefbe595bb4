"""The controller thread: applies commands and config reloads without stopping the scoring."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from monitor.config import Config, SourceConfig
from monitor.control.commands import Command, CommandError, Reset, Show, parse_command
from monitor.control.journal import ChangeJournal, kept
from monitor.control.state import LabelState, replay
from monitor.errors import MonitorError
from monitor.frames import ControlResult
from monitor.pipeline.scoring import LabelSetScorer, TextEmbedder, build_scorers

logger = logging.getLogger(__name__)

QUEUE_LENGTH = 32
# What a reload takes from the file; any other section changed needs a restart.
RELOADED_KEYS = frozenset({"label_sets", "profiles", "profile"})

ScorersOf = dict[str, tuple[LabelSetScorer, ...]]
Apply = Callable[[LabelState, ScorersOf], None]


def build_scorers_of(
    state: LabelState,
    sources: Sequence[SourceConfig],
    embed_text: TextEmbedder,
    logit_scale: float,
) -> ScorersOf:
    """Source id -> the scorers of the sets it is scored against now (prompts embedded here).

    `sources` are the running ones: a reloaded file's sources take a restart.
    """
    by_name = {s.name: s for s in build_scorers(state.scored_sets, embed_text, logit_scale)}
    return {
        source.id: tuple(by_name[s.name] for s in state.scored_sets_of(source))
        for source in sources
    }


def restart_needed(running: Config, loaded: Config) -> list[str]:
    """The sections `loaded` changes that a reload cannot apply."""
    before = running.model_dump(exclude=set(RELOADED_KEYS))
    after = loaded.model_dump(exclude=set(RELOADED_KEYS))
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


class LabelController(threading.Thread):
    """Takes commands (from the paho thread) and reload requests (from a signal handler),
    one at a time. A change's new prompts are embedded here while the worker keeps scoring
    the running labels; `apply` then swaps them in between two batches."""

    def __init__(
        self,
        state: LabelState,
        changes: Sequence[Command],
        sources: Sequence[SourceConfig],
        *,
        embed_text: TextEmbedder,
        logit_scale: float,
        apply: Apply,
        on_result: Callable[[ControlResult], None],
        journal: ChangeJournal | None,
        max_changes: int,
        load_config: Callable[[], Config] | None = None,
    ) -> None:
        super().__init__(name="label-control", daemon=True)
        self._state = state
        self._changes = list(changes)
        self._sources = tuple(sources)
        self._embed_text = embed_text
        self._logit_scale = logit_scale
        self._apply = apply
        self._on_result = on_result
        self._journal = journal
        self._max_changes = max_changes
        self._load_config = load_config
        self._requests: queue.Queue[bytes | None] = queue.Queue(QUEUE_LENGTH)
        self._stopping = threading.Event()
        self.applied = 0  # changes swapped in since start (tests, health)

    @property
    def state(self) -> LabelState:
        return self._state

    def submit(self, payload: bytes) -> None:
        """A command payload; never blocks (a full queue refuses the command)."""
        try:
            self._requests.put_nowait(payload)
        except queue.Full:
            self._refuse("", f"busy: {QUEUE_LENGTH} commands already waiting", None)

    def request_reload(self) -> None:
        """Re-read the config file (from a signal handler: only queues the request)."""
        try:
            self._requests.put_nowait(None)
        except queue.Full:
            logger.warning("config reload not queued: %d requests already waiting", QUEUE_LENGTH)

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                request = self._requests.get(timeout=0.25)
            except queue.Empty:
                continue
            try:
                if request is None:
                    self._reload()
                else:
                    self._command(request)
            except Exception:  # one bad request must not end live control
                logger.exception("label control failed on a request")

    def _command(self, payload: bytes) -> None:
        try:
            command = parse_command(payload)
        except CommandError as err:
            self._refuse(err.command, str(err), err.request_id)
            return
        if not isinstance(command, Reset | Show) and len(self._changes) >= self._max_changes:
            self._refuse(
                command.command,
                f"{len(self._changes)} live changes kept (control.max_changes): put them in "
                "the config file and send reset",
                command.id,
            )
            return
        try:
            state, detail = self._state.apply(command)
        except CommandError as err:
            self._refuse(command.command, str(err), command.id)
            return
        if state is not self._state and not self._swap(state, command.command, command.id):
            return
        changes = kept(self._changes, command)
        if changes != self._changes:
            self._changes = changes
            detail += self._persist()
        logger.info("control: %s: %s", command.command, detail)
        self._on_result(self._state.result(command.command, True, detail, command.id, _now()))

    def _reload(self) -> None:
        if self._load_config is None:
            logger.warning("SIGHUP ignored: this monitor was not started from a config file")
            return
        try:
            config = self._load_config()
        except MonitorError as err:
            logger.error("config reload refused, the running labels stay: %s", err)
            self._refuse("reload", str(err), None)
            return
        unapplied = restart_needed(self._state.config, config)
        if unapplied:
            logger.warning(
                "config reload: %s changed; that takes a restart (labels reloaded now)",
                ", ".join(unapplied),
            )
        state, _, skipped = replay(LabelState.of(config), self._changes)
        for line in skipped:
            logger.warning("config reload: a live change no longer applies: %s", line)
        if not self._swap(state, "reload", None):
            return
        labels = sum(len(s.labels) for s in state.label_sets)
        detail = f"reloaded: {len(state.label_sets)} label set(s), {labels} labels"
        logger.info("config %s", detail)
        self._on_result(state.result("reload", True, detail, None, _now()))

    def _swap(self, state: LabelState, command: str, request_id: str | None) -> bool:
        """Embed the new state's prompts here, then hand it to the pipeline; False (and the
        sender told) when the text encoder fails."""
        try:
            scorers = build_scorers_of(state, self._sources, self._embed_text, self._logit_scale)
        except Exception as err:
            logger.exception("control: %s: embedding the prompts failed", command)
            self._refuse(command, f"embedding the prompts failed: {err}", request_id)
            return False
        self._apply(state, scorers)
        self._state = state
        self.applied += 1
        return True

    def _persist(self) -> str:
        if self._journal is None:
            return ""
        try:
            self._journal.save(self._changes)
        except OSError as err:
            logger.warning("control: change applied but not kept for a restart: %s", err)
            return f" (not kept across a restart: {err})"
        return ""

    def _refuse(self, command: str, detail: str, request_id: str | None) -> None:
        if command != "reload":
            logger.warning("control: %s refused: %s", command or "command", detail)
        self._on_result(self._state.result(command, False, detail, request_id, _now()))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def restore(config: Config, journal: ChangeJournal | None) -> tuple[LabelState, list[Command]]:
    """The state at start-up: the config file with the kept live changes replayed."""
    state = LabelState.of(config)
    if journal is None:
        return state, []
    loaded = journal.load()
    state, changes, skipped = replay(state, loaded)
    for line in skipped:
        logger.warning("a kept live change no longer applies and is dropped: %s", line)
    if changes:
        logger.info("restored %d live label change(s) from %s", len(changes), journal.path)
    return state, changes

"""The clip recorder: names each event's clip on the worker thread, writes it on its own thread."""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from monitor.atomic import atomic_write, write_json_atomic
from monitor.audio.decode import encode_audio
from monitor.audio.ringbuffer import RingBuffer
from monitor.clips.layout import clip_name, sidecar_name
from monitor.clips.retention import prune, remove_partials
from monitor.clips.sidecar import ClipFacts, sidecar
from monitor.config import ClipsConfig
from monitor.frames import Event

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # while clips are open: how often new audio is copied out of the rings
IDLE_WAIT_SECONDS = 1.0
# After an event's end, how long past the moment its post-roll should have been captured the
# writer waits for it: a source that stopped or stalls must not hold the clip back for ever.
LATE_AUDIO_GRACE_SECONDS = 2.0
# The ring must still hold an event's pre-roll when the writer first copies it: the window's
# own length, the pre-roll, and this much for scoring, queueing and the writer's poll.
RING_MARGIN_SECONDS = 5.0
# When the pre-roll is already being overwritten, start this far inside the ring instead.
OVERWRITE_GUARD_SECONDS = 0.25
SECONDS_PER_DAY = 86400.0
BYTES_PER_MEGABYTE = 1_000_000


def min_ring_seconds(window_seconds: float, clips: ClipsConfig) -> float:
    """The ring capacity a source needs so that an event's pre-roll is still there to copy."""
    return window_seconds + clips.pre_roll_seconds + RING_MARGIN_SECONDS


@dataclass(frozen=True)
class ClipStats:
    """The recorder's counters, for health."""

    written: int  # clips written with their sidecars
    failed: int  # clips that could not be written (disk full, read-only, ...)
    pending: int  # events whose clip is being recorded now
    deleted: int  # clips removed by retention
    failing: bool  # writing fails now (an episode: warned once)


@dataclass
class _Job:
    """One event's clip while it is recorded; touched only by the writer thread."""

    name: str
    start: Event
    ring: RingBuffer
    requested_first: int  # pre_roll before the first detecting window (may be < 0)
    pre_roll_seconds: float
    max_frames: int
    post_frames: int
    first_index: int | None = None  # the first frame actually copied
    next_index: int = 0  # the next frame to copy
    chunks: list[np.ndarray] = field(default_factory=list)
    end: Event | None = None
    end_index: int | None = None  # one past the last frame wanted (end + post-roll)
    due_monotonic: float = math.inf  # give up waiting for audio after this
    gap: bool = False

    @property
    def cap_index(self) -> int:
        first = self.first_index if self.first_index is not None else self.requested_first
        return max(0, first) + self.max_frames

    @property
    def limit_index(self) -> int:
        return self.cap_index if self.end_index is None else min(self.end_index, self.cap_index)

    @property
    def copied_all(self) -> bool:
        return self.gap or (self.first_index is not None and self.next_index >= self.limit_index)


_STOP = object()


class ClipRecorder(threading.Thread):
    """Writes a clip of every event's audio, exact to the sample, with a JSON sidecar.

    `annotate` runs on the scoring worker: it names the clip (so the end message can carry
    the name), queues a job and returns at once. This thread copies the audio out of the
    source's ring buffer as it arrives (a long event may outlast the ring), from the pre-roll
    before the first detecting window to the post-roll after the last one or the cap, then
    encodes it under a temporary name, renames it, and writes the sidecar. A disk that is full
    or read-only costs one warning per episode; detections are never held up.
    """

    def __init__(self, config: ClipsConfig, root: Path, rings: Mapping[str, RingBuffer]) -> None:
        super().__init__(name="clip-writer", daemon=True)
        self.config = config
        self.root = root
        self._rings = dict(rings)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._names: dict[str, str] = {}  # event id -> clip name; worker thread (and shutdown)
        self._jobs: dict[str, _Job] = {}  # writer thread only
        self._written = 0
        self._failed = 0
        self._deleted = 0
        self._failing = False  # set by the writer, read by annotate
        self.error: BaseException | None = None

    # -- the worker's side: never blocks -------------------------------------------------

    def annotate(self, events: Sequence[Event]) -> list[Event]:
        """Queue a clip for each event and return the events, an end naming its clip.

        While writing fails, end messages name no clip (it would not appear); the jobs are
        still tried, which is how the recorder notices that writing works again.
        """
        out: list[Event] = []
        for event in events:
            d = event.detection
            if d.source_id not in self._rings or d.window_start_index is None:
                out.append(event)  # no audio to cut it from
            elif event.kind == "start":
                name = clip_name(event, self.config.format)
                self._names[event.event_id] = name
                self._queue.put(event)
                out.append(event)
            else:
                name_of_end = self._names.pop(event.event_id, None)
                if name_of_end is not None:
                    self._queue.put(event)
                if name_of_end is None or self._failing:
                    out.append(event)
                else:
                    out.append(replace(event, clip=name_of_end))
        return out

    def stats(self) -> ClipStats:
        return ClipStats(
            written=self._written,
            failed=self._failed,
            pending=len(self._names),
            deleted=self._deleted,
            failing=self._failing,
        )

    def stop(self, timeout_seconds: float) -> bool:
        """Finish every open clip with the audio there is, within the timeout; True if done.
        A clip still being written after it is abandoned (its temporary file is deleted at
        the next start)."""
        if not self.is_alive():
            return True
        self._queue.put(_STOP)
        self.join(max(0.0, timeout_seconds))
        if self.is_alive():
            logger.warning(
                "clip writer still busy at shutdown; %d clip(s) abandoned", len(self._jobs)
            )
            return False
        return True

    # -- the writer thread -----------------------------------------------------------------

    def run(self) -> None:
        try:
            self._tidy(startup=True)
            stopping = False
            while not stopping:
                wait = POLL_SECONDS if self._jobs else IDLE_WAIT_SECONDS
                try:
                    item: object | None = self._queue.get(timeout=wait)
                except queue.Empty:
                    item = None
                while item is not None:
                    if item is _STOP:
                        stopping = True
                    elif isinstance(item, Event):
                        self._take(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                self._advance(stopping)
        except BaseException as err:
            self.error = err
            logger.exception("clip writer failed; no more clips are written")

    def _take(self, event: Event) -> None:
        d = event.detection
        if event.kind == "start":
            ring = self._rings[d.source_id]
            rate = ring.sample_rate_hz
            assert d.window_start_index is not None
            self._jobs[event.event_id] = _Job(
                name=self._names.get(event.event_id) or clip_name(event, self.config.format),
                start=event,
                ring=ring,
                requested_first=d.window_start_index - round(self.config.pre_roll_seconds * rate),
                pre_roll_seconds=self.config.pre_roll_seconds,
                max_frames=max(1, round(self.config.max_clip_seconds * rate)),
                post_frames=round(self.config.post_roll_seconds * rate),
            )
            self._pull(self._jobs[event.event_id])  # the pre-roll first, before it is gone
            return
        job = self._jobs.get(event.event_id)
        if job is None:
            return
        last_end = event.last_window_end_index
        if last_end is None:
            last_end = event.detection.window_end_index
        if last_end is None:
            last_end = job.ring.written_frames
        job.end = event
        job.end_index = last_end + job.post_frames
        missing = max(0, job.end_index - job.ring.written_frames) / job.ring.sample_rate_hz
        job.due_monotonic = time.monotonic() + missing + LATE_AUDIO_GRACE_SECONDS

    def _advance(self, stopping: bool) -> None:
        """Copy new audio into every open clip; write those that are complete (all of them
        when stopping: no more audio will come)."""
        now = time.monotonic()
        for event_id, job in list(self._jobs.items()):
            self._pull(job)
            done = job.end is not None and (job.copied_all or now >= job.due_monotonic)
            if done or stopping:
                del self._jobs[event_id]
                self._names.pop(event_id, None)
                self._write(job)

    def _pull(self, job: _Job) -> None:
        """Copy what the ring holds of the clip and has not been copied yet."""
        if job.copied_all:
            return
        ring = job.ring
        if job.first_index is None:
            first = max(0, job.requested_first)
            oldest = ring.oldest_frame
            if first < oldest:
                # The pre-roll is (partly) overwritten already: take what is safely there.
                guard = round(OVERWRITE_GUARD_SECONDS * ring.sample_rate_hz)
                first = min(oldest + guard, ring.written_frames)
            job.next_index = first
        upto = min(ring.written_frames, job.limit_index)
        if upto <= job.next_index:
            if job.first_index is None and upto == job.next_index:
                job.first_index = job.next_index
            return
        frames = ring.read(job.next_index, upto)
        if frames is None:
            if job.first_index is None:
                return  # lapped while copying the pre-roll: try again further in
            # Audio of the event was overwritten before the writer copied it (the writer
            # was starved for a whole ring): the clip ends where its audio stops.
            logger.warning(
                "clip %s: audio overwritten before it was saved; the clip ends at %d",
                job.name,
                job.next_index,
            )
            job.gap = True
            return
        if job.first_index is None:
            job.first_index = job.next_index
        job.chunks.append(frames)
        job.next_index = upto

    def _write(self, job: _Job) -> None:
        ring = job.ring
        frames = (
            np.concatenate(job.chunks)
            if job.chunks
            else np.zeros((0, ring.channels), dtype=np.float32)
        )
        if job.first_index is not None:
            # Audio goes on arriving until the end event (a cooldown later): keep only what
            # the clip wants, up to the post-roll or the cap.
            frames = frames[: max(0, job.limit_index - job.first_index)]
        if job.first_index is None or len(frames) == 0:
            self._failed += 1
            logger.warning("clip %s: none of its audio was left to save", job.name)
            return
        facts = ClipFacts(
            clip=job.name,
            start=job.start,
            end=job.end,
            first_index=job.first_index,
            frames=len(frames),
            sample_rate_hz=ring.sample_rate_hz,
            channels=ring.channels,
            format=self.config.format,
            pre_roll_seconds=job.pre_roll_seconds,
            post_roll_seconds=self.config.post_roll_seconds,
            capped=job.first_index + len(frames) >= job.cap_index
            and (job.end_index is None or job.end_index > job.cap_index),
            gap=job.gap,
        )
        path = self.root / job.name
        try:
            # Audio first, under a temporary name renamed when complete; the sidecar last,
            # so a sidecar always means a complete clip next to it.
            atomic_write(
                path, lambda handle: encode_audio(handle, frames, ring.sample_rate_hz, facts.format)
            )
            write_json_atomic(self.root / sidecar_name(job.name), sidecar(facts))
        except OSError as err:
            self._failed += 1
            if not self._failing:
                self._failing = True
                logger.warning(
                    "cannot write clips to %s (%s); clips are skipped until writing works "
                    "again, detections go on",
                    self.root,
                    err,
                )
            # No clip without its sidecar (when the directory itself is unusable, no clip).
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return
        self._written += 1
        if self._failing:
            self._failing = False
            logger.info("writing clips to %s works again", self.root)
        logger.debug("clip %s written (%d frames)", job.name, len(frames))
        self._tidy()

    def _tidy(self, startup: bool = False) -> None:
        """Retention by age and size (and, at start, a previous run's unfinished files)."""
        try:
            if startup:
                remove_partials(self.root)
            self._deleted += prune(
                self.root,
                round(self.config.max_megabytes * BYTES_PER_MEGABYTE),
                self.config.max_age_days * SECONDS_PER_DAY,
                time.time(),
            )
        except OSError as err:
            logger.debug("clip retention in %s failed: %s", self.root, err)

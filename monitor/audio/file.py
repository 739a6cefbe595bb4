"""An audio file replayed into the ring buffer like a live stream, paced or as fast as read."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from monitor.audio.decode import open_sound_file
from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, SourceStats, StreamFormat
from monitor.config import FileSourceConfig
from monitor.errors import SourceError

logger = logging.getLogger(__name__)


class FileSource(Source):
    """Replays a file in its own thread; `finished` turns true at its end (unless it loops)."""

    def __init__(self, cfg: FileSourceConfig) -> None:
        self.cfg = cfg
        self.source_id = cfg.id
        self._file: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finished = False
        self._error: BaseException | None = None
        self._blocks = 0
        self._frames = 0
        self._last_block: float | None = None

    def open(self) -> StreamFormat:
        try:
            self._file = open_sound_file(self.cfg.path)
        except SourceError as err:
            raise SourceError(f"audio file {err}") from err
        fmt = StreamFormat(
            sample_rate_hz=int(self._file.samplerate),
            channels=int(self._file.channels),
            description=str(self.cfg.path),
        )
        logger.info(
            "file source %s: %s, %d Hz, %d channel(s), %.1f s%s",
            self.source_id,
            self.cfg.path,
            fmt.sample_rate_hz,
            fmt.channels,
            self._file.frames / fmt.sample_rate_hz,
            ", looping" if self.cfg.loop else "",
        )
        return fmt

    def start(self, ring: RingBuffer) -> None:
        if self._file is None:
            raise SourceError(f"file source {self.source_id}: start() before open()")
        self._thread = threading.Thread(
            target=self._run, args=(ring,), name=f"file-{self.source_id}", daemon=True
        )
        self._thread.start()

    def _run(self, ring: RingBuffer) -> None:
        rate = int(self._file.samplerate)
        block_frames = max(1, round(rate * self.cfg.block_seconds))
        start_wall = time.time()
        start_mono = time.monotonic()
        try:
            while not self._stop.is_set():
                block = self._file.read(block_frames, dtype="float32", always_2d=True)
                if len(block) == 0:
                    if not self.cfg.loop:
                        break
                    self._file.seek(0)
                    continue
                end_index = ring.written_frames + len(block)
                if self.cfg.realtime:
                    delay = start_mono + end_index / rate - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    ring.write(block)
                else:
                    while not ring.wait_for_space(len(block), timeout=0.2):
                        if self._stop.is_set():
                            return
                    # Not paced: the stream's clock is the file's own timeline from the start.
                    ring.write(block, wall_time_end=start_wall + end_index / rate)
                self._blocks += 1
                self._frames += len(block)
                self._last_block = time.monotonic()
        except Exception as err:  # a decode error mid-file must reach the supervisor
            self._error = SourceError(f"audio file {self.cfg.path}: read failed ({err})")
            logger.error("%s", self._error)
        finally:
            self._finished = True
            ring.wake()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if self._file is not None and (self._thread is None or not self._thread.is_alive()):
            self._file.close()
            self._file = None

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def error(self) -> BaseException | None:
        return self._error

    def stats(self) -> SourceStats:
        return SourceStats(
            blocks=self._blocks,
            frames=self._frames,
            overflows=0,
            last_block_monotonic=self._last_block,
        )

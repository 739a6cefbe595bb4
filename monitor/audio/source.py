"""The small interface every audio source implements, whatever it reads from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from monitor.audio.ringbuffer import RingBuffer


@dataclass(frozen=True)
class StreamFormat:
    """What a source delivers, known once it is opened."""

    sample_rate_hz: int
    channels: int
    description: str  # e.g. the device name or the file path, for logs


@dataclass(frozen=True)
class SourceStats:
    """Counters a source keeps; read by the supervisor for health and status."""

    blocks: int  # callbacks / writes so far
    frames: int  # frames delivered so far
    overflows: int  # input overflows reported by the device (audio lost before us)
    last_block_monotonic: float | None  # time.monotonic() of the newest block


class Source(ABC):
    """An audio source: open() to learn the format, start() to fill a ring buffer, stop()."""

    source_id: str

    @abstractmethod
    def open(self) -> StreamFormat:
        """Open the device or file; raises SourceError when it cannot be used."""

    @abstractmethod
    def start(self, ring: RingBuffer) -> None:
        """Start delivering audio into `ring` (from a callback or a thread of its own)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop delivering audio and release the device or file; safe to call twice."""

    @property
    @abstractmethod
    def finished(self) -> bool:
        """True once a finite source (a file without loop) has delivered everything."""

    @property
    @abstractmethod
    def error(self) -> BaseException | None:
        """The error that stopped the source, if one did (e.g. a read error in a file thread)."""

    @abstractmethod
    def stats(self) -> SourceStats:
        """A snapshot of the source's counters."""

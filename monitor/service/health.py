"""Health of the running monitor: progress checks, counters text and the health payloads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from monitor.audio.source import SourceStats
from monitor.clips.recorder import ClipStats
from monitor.history.writer import WriterStats
from monitor.outputs.sink import DeliveryStats, HealthReport, SourceHealth
from monitor.pipeline.worker import WorkerStats

HEALTH_OK = "ok"
HEALTH_DEGRADED = "degraded"  # failed or stalled; being reopened with backoff
HEALTH_FAILED = "failed"  # given up on (or a file that could not be read); the others go on


@dataclass(frozen=True)
class SourceSnapshot:
    """One source at one tick: its state and the counters of every stage for it."""

    source_id: str
    state: str  # HEALTH_OK, HEALTH_DEGRADED or HEALTH_FAILED
    detail: str
    source: SourceStats
    worker: WorkerStats  # the worker's counters for this source's windows
    lost_frames: int
    restarts: int

    def counters(self) -> dict[str, int]:
        """The source's counters, in the order the health payload shows them."""
        return stage_counters(self.worker, self.lost_frames, self.source.overflows, self.restarts)


def stage_counters(
    worker: WorkerStats, lost_frames: int, input_overflows: int, source_restarts: int
) -> dict[str, int]:
    """The health payload's counters of one source, or of all of them summed, in order."""
    return {
        "windows_scored": worker.windows_scored,
        "windows_skipped_lagging": worker.windows_skipped_lagging,
        "windows_skipped_silent": worker.windows_skipped_silent,
        "windows_skipped_quiet": worker.windows_skipped_quiet,
        "windows_gated": worker.windows_gated,
        "windows_skipped_nonfinite": worker.windows_skipped_nonfinite,
        "windows_clipped": worker.windows_clipped,
        "windows_dc_offset": worker.windows_dc_offset,
        "lost_frames": lost_frames,
        "input_overflows": input_overflows,
        "source_restarts": source_restarts,
    }


@dataclass(frozen=True)
class Snapshot:
    """Everything the supervisor knows at one tick, for status lines and the health topics."""

    state: str  # HEALTH_OK when every source is; else HEALTH_DEGRADED
    detail: str
    worker: WorkerStats  # every source together
    sources: tuple[SourceSnapshot, ...]
    delivery: DeliveryStats | None  # None when no output talks to a broker
    clips: ClipStats | None = None  # None when clips are off
    history: WriterStats | None = None  # None when history is off

    @property
    def lost_frames(self) -> int:
        return sum(s.lost_frames for s in self.sources)

    @property
    def source_restarts(self) -> int:
        return sum(s.restarts for s in self.sources)

    @property
    def input_overflows(self) -> int:
        return sum(s.source.overflows for s in self.sources)

    def storage_counters(self) -> dict[str, int]:
        """Clips' and history's counters, for the sections that are on."""
        out: dict[str, int] = {}
        if self.clips is not None:
            c = self.clips
            out |= {
                "clips_written": c.written,
                "clips_failed": c.failed,
                "clips_deleted": c.deleted,
            }
        if self.history is not None:
            h = self.history
            out |= {
                "history_windows_written": h.windows_written,
                "history_windows_dropped": h.windows_dropped,
                "history_windows_deleted": h.windows_deleted,
            }
        return out

    def status_text(self) -> str:
        w = self.worker
        parts = [
            self.state if not self.detail else f"{self.state} ({self.detail})",
            f"windows={w.windows_scored}",
            f"events={w.events}",
            f"skipped_lag={w.windows_skipped_lagging}",
            f"skipped_silent={w.windows_skipped_silent}",
            f"skipped_quiet={w.windows_skipped_quiet}",
            f"skipped_nonfinite={w.windows_skipped_nonfinite}",
            f"clipped={w.windows_clipped}",
            f"dc_offset={w.windows_dc_offset}",
            f"lost_frames={self.lost_frames}",
            f"overflows={self.input_overflows}",
            f"restarts={self.source_restarts}",
            f"inference_ms={w.last_inference_ms:.0f}",
        ]
        if len(self.sources) > 1:
            parts.append("sources=" + ",".join(f"{s.source_id}:{s.state}" for s in self.sources))
        d = self.delivery
        if d is not None:
            parts.append(f"mqtt={'up' if d.connected else 'down'}")
            parts.append(f"outbox={d.pending} outbox_dropped={d.dropped}")
        if self.clips is not None:
            parts.append(f"clips={self.clips.written} clips_failed={self.clips.failed}")
        if self.history is not None:
            h = self.history
            parts.append(f"history={h.windows_written} history_dropped={h.windows_dropped}")
        return " ".join(parts)

    def report(self, now: datetime | None = None) -> HealthReport:
        """What the outputs publish as the monitor's health, with each source's own."""
        d = self.delivery
        totals = {
            **stage_counters(
                self.worker, self.lost_frames, self.input_overflows, self.source_restarts
            ),
            "outbox_pending": d.pending if d is not None else 0,
            "outbox_dropped": d.dropped if d is not None else 0,
            **self.storage_counters(),
        }
        return HealthReport(
            self.state,
            self.detail,
            now or datetime.now(timezone.utc),
            totals,
            tuple(SourceHealth(s.source_id, s.state, s.detail, s.counters()) for s in self.sources),
        )


def capture_stalled(stats: SourceStats, started_monotonic: float, now: float, limit: float) -> bool:
    """True when no block arrived for `limit` seconds (counting from the stream's start)."""
    last = stats.last_block_monotonic
    reference = started_monotonic if last is None or last < started_monotonic else last
    return now - reference > limit


def worker_stalled(stats: WorkerStats, now: float, limit: float) -> bool:
    """True when the worker has not finished a wait or a window for `limit` seconds."""
    return now - stats.last_progress_monotonic > limit

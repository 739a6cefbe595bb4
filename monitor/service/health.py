"""Health of the running monitor: progress checks, counters text and the health payload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from monitor.audio.source import SourceStats
from monitor.outputs.sink import DeliveryStats, HealthReport
from monitor.pipeline.worker import WorkerStats

HEALTH_OK = "ok"
HEALTH_DEGRADED = "degraded"


@dataclass(frozen=True)
class Snapshot:
    """Everything the supervisor knows at one tick, for status lines and the health topic."""

    state: str  # HEALTH_OK or HEALTH_DEGRADED
    detail: str
    source: SourceStats
    worker: WorkerStats
    lost_frames: int
    source_restarts: int
    delivery: DeliveryStats | None  # None when no output talks to a broker

    def status_text(self) -> str:
        w, s = self.worker, self.source
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
            f"overflows={s.overflows}",
            f"restarts={self.source_restarts}",
            f"inference_ms={w.last_inference_ms:.0f}",
        ]
        d = self.delivery
        if d is not None:
            parts.append(f"mqtt={'up' if d.connected else 'down'}")
            parts.append(f"outbox={d.pending} outbox_dropped={d.dropped}")
        return " ".join(parts)

    def report(self, source_id: str, now: datetime | None = None) -> HealthReport:
        """What the outputs publish as the monitor's health."""
        w, s, d = self.worker, self.source, self.delivery
        counters = {
            "windows_scored": w.windows_scored,
            "windows_skipped_lagging": w.windows_skipped_lagging,
            "windows_skipped_silent": w.windows_skipped_silent,
            "windows_skipped_quiet": w.windows_skipped_quiet,
            "windows_skipped_nonfinite": w.windows_skipped_nonfinite,
            "windows_clipped": w.windows_clipped,
            "windows_dc_offset": w.windows_dc_offset,
            "lost_frames": self.lost_frames,
            "input_overflows": s.overflows,
            "source_restarts": self.source_restarts,
            "outbox_pending": d.pending if d is not None else 0,
            "outbox_dropped": d.dropped if d is not None else 0,
        }
        return HealthReport(
            self.state, self.detail, source_id, now or datetime.now(timezone.utc), counters
        )


def capture_stalled(stats: SourceStats, started_monotonic: float, now: float, limit: float) -> bool:
    """True when no block arrived for `limit` seconds (counting from the stream's start)."""
    last = stats.last_block_monotonic
    reference = started_monotonic if last is None or last < started_monotonic else last
    return now - reference > limit


def worker_stalled(stats: WorkerStats, now: float, limit: float) -> bool:
    """True when the worker has not finished a wait or a window for `limit` seconds."""
    return now - stats.last_progress_monotonic > limit

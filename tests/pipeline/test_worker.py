"""The scoring worker: bad audio never reaches the model or a payload; events still end."""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.windowing import Windower
from monitor.bench.workload import quiet_home
from monitor.config import LabelSetConfig, ModelConfig
from monitor.config.window import ChangeGateConfig
from monitor.frames import Event, Position, Scores, Window, WindowEmbedding
from monitor.model.runner import ClapRunner, load_clap
from monitor.outputs.mqtt.payloads import Topics, event_messages
from monitor.pipeline.events import EventTracker
from monitor.pipeline.gate import ChangeGate
from monitor.pipeline.scoring import build_scorers
from monitor.pipeline.worker import Feed, ScoringTiming, ScoringWorker
from tests.support.audio import tone as support_tone

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
N = 48000


class CountingRunner:
    def __init__(self, runner: ClapRunner) -> None:
        self.runner = runner
        self.model_id = runner.model_id
        self.seen: list[np.ndarray] = []
        self.positions: list[Position] = []

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[Position] | None = None
    ) -> np.ndarray:
        self.seen += [np.array(w) for w in windows]
        self.positions += list(positions) if positions is not None else [None] * len(windows)
        return self.runner.embed_audio(windows, positions)


@pytest.fixture(scope="module")
def runner(tiny_clap_dir: Path) -> ClapRunner:
    return load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir), torch_threads=1))


def make_worker(runner: ClapRunner) -> tuple[ScoringWorker, CountingRunner, list[Event]]:
    sets = [LabelSetConfig(name="s", labels=[{"name": "a", "threshold": 0.0}, "b"])]
    events: list[Event] = []
    counting = CountingRunner(runner)
    windower = Windower(RingBuffer(N * 2, 1, N), "src", 1.0, 1.0)
    scorers = tuple(build_scorers(sets, runner.embed_text, runner.logit_scale))
    worker = ScoringWorker(
        [Feed(windower, scorers, lambda: False)],
        counting,
        EventTracker(cooldown_seconds=2.0, hold_seconds=0.0),
        events.extend,
    )
    return worker, counting, events


def window(samples: np.ndarray, second: int) -> Window:
    return Window(
        "src",
        samples.astype(np.float32),
        N,
        (second - 1) * N,
        second * N,
        T0 + timedelta(seconds=second - 1),
        T0 + timedelta(seconds=second),
        model_start_index=(second - 1) * N,
    )


# One second at the model rate, 440 Hz at 0.3 unless the call says otherwise.
tone = functools.partial(support_tone, 1.0, 440.0, rate_hz=N, amplitude=0.3)


def test_bad_audio_is_counted_and_never_reaches_the_model(runner: ClapRunner) -> None:
    worker, counting, events = make_worker(runner)
    nan = tone()
    nan[100] = np.nan
    inf = tone()
    inf[5] = np.inf
    events += worker.process(window(tone(), 1))  # starts the always-firing label's event
    events += worker.process(window(nan, 2))
    events += worker.process(window(inf, 3))
    events += worker.process(window(np.zeros(N, np.float32), 4))
    stats = worker.stats()
    assert stats.windows_skipped_nonfinite == 2
    assert stats.windows_skipped_silent == 1
    assert stats.windows_scored == 1
    assert len(counting.seen) == 1 and np.isfinite(counting.seen[0]).all()
    # Per label (for metrics): "a" fires at threshold 0 in the one scored window, "b" never.
    assert worker.detections_by_label("src") == {("s", "a"): 1}
    # Skipped windows still move time on: the event ended after its cooldown.
    assert [e.kind for e in events if e.detection.label == "a"] == ["start", "end"]
    for event in events:
        for msg in event_messages(event, Topics("p", "d"), 1):
            if msg.topic.endswith("detection"):
                body = json.loads(msg.payload)  # strict JSON: NaN/Infinity would not parse back
                assert all(math.isfinite(v) for v in body["scores"].values())


def test_clipping_and_dc_are_counted_and_still_scored(runner: ClapRunner) -> None:
    worker, counting, _ = make_worker(runner)
    clipped = np.clip(tone(amplitude=3.0), -1.0, 1.0)
    worker.process(window(clipped, 1))
    worker.process(window(tone(offset=0.4), 2))
    stats = worker.stats()
    assert stats.windows_clipped == 1
    assert stats.windows_dc_offset == 1
    assert stats.windows_scored == 2
    # The DC offset was removed before the model saw the window.
    assert abs(float(counting.seen[1].mean())) < 1e-3
    np.testing.assert_allclose(counting.seen[1], tone(), atol=1e-5)
    # Those are no longer the stream's samples: no position, so no frame is shared with
    # (or kept for) other windows. The clipped window's samples are the stream's own.
    assert counting.positions == [("src", 0), None]


def test_positions_skip_the_windows_that_never_reach_the_model(runner: ClapRunner) -> None:
    worker, counting, _ = make_worker(runner)
    worker.min_dbfs = -50.0
    windows = [
        window(tone(), 1),
        window(np.zeros(N), 2),  # digital silence: skipped
        window(tone(amplitude=0.001), 3),  # below the energy gate: skipped
        window(tone(offset=0.4), 4),  # DC removed: embedded without a position
        window(tone(), 5),
    ]
    worker.process_batch(windows)
    assert counting.positions == [("src", 0), None, ("src", 4 * N)]


class BatchRecorder(CountingRunner):
    def __init__(self, runner: ClapRunner) -> None:
        super().__init__(runner)
        self.batches: list[int] = []

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[Position] | None = None
    ) -> np.ndarray:
        self.batches.append(len(windows))
        return super().embed_audio(windows, positions)


def drain(runner: ClapRunner, max_batch: int) -> tuple[BatchRecorder, list[Event]]:
    """Run a worker thread over 6 s of waiting audio (a catching-up, lossless source)."""
    ring = RingBuffer(N * 10, 1, N)
    rng = np.random.default_rng(3)
    ring.write((0.2 * rng.standard_normal((N * 6, 1))).astype(np.float32), wall_time_end=1e9)
    recorder = BatchRecorder(runner)
    events: list[Event] = []
    sets = [LabelSetConfig(name="s", labels=[{"name": "a", "threshold": 0.0}, "b"])]
    scorers = tuple(build_scorers(sets, runner.embed_text, runner.logit_scale))
    worker = ScoringWorker(
        [Feed(Windower(ring, "src", 1.0, 1.0, catch_up=True), scorers, lambda: True)],
        recorder,
        EventTracker(cooldown_seconds=0.0, hold_seconds=0.0),
        events.extend,
        max_batch=max_batch,
    )
    worker.start()
    assert worker.drained.wait(30)
    worker.join(5)
    return recorder, events


def test_waiting_windows_share_one_forward_pass(runner: ClapRunner) -> None:
    batched, batched_events = drain(runner, max_batch=4)
    single, single_events = drain(runner, max_batch=1)
    assert batched.batches == [4, 2]
    assert single.batches == [1] * 6
    # Same windows, same scores, same events whether batched or not.
    assert len(batched.seen) == len(single.seen) == 6
    # Each window's place in the stream goes with it, batched or not.
    assert batched.positions == single.positions == [("src", k * N) for k in range(6)]
    for a, b in zip(batched_events, single_events, strict=True):
        assert (a.kind, a.detection.label) == (b.kind, b.detection.label)
        for label, score in a.detection.scores.items():
            assert score == pytest.approx(b.detection.scores[label], abs=1e-5)


def test_energy_gate_skips_quiet_windows(runner: ClapRunner) -> None:
    worker, counting, _ = make_worker(runner)
    worker.min_dbfs = -50.0
    quiet = tone(amplitude=0.001)  # about -63 dBFS
    loud = tone(amplitude=0.3)  # about -13 dBFS
    worker.process_batch([window(quiet, 1), window(loud, 2), window(quiet, 3)])
    stats = worker.stats()
    assert stats.windows_skipped_quiet == 2
    assert stats.windows_scored == 1
    assert len(counting.seen) == 1


def test_rms_dbfs() -> None:
    from monitor.pipeline.worker import rms_dbfs

    assert rms_dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert rms_dbfs(tone(amplitude=1.0)) == pytest.approx(-3.01, abs=0.01)
    assert rms_dbfs(np.zeros(10, np.float32)) == -math.inf


class Seen:
    def __init__(self) -> None:
        self.windows: list[Window] = []
        self.events: list[Event] = []
        self.timings: list[ScoringTiming] = []

    def on_scored(
        self, windows: Sequence[Window], events: Sequence[Event], timing: ScoringTiming
    ) -> None:
        self.windows += windows
        self.events += events
        self.timings.append(timing)


def test_events_leave_the_worker_by_one_path_and_the_observer_sees_each_window(
    runner: ClapRunner,
) -> None:
    ring = RingBuffer(N * 10, 1, N)
    ring.write(np.concatenate([tone(), np.zeros(N, np.float32), tone(), tone()]), 1e9)
    delivered: list[list[Event]] = []
    seen = Seen()
    sets = [LabelSetConfig(name="s", labels=[{"name": "a", "threshold": 0.0}, "b"])]
    scorers = tuple(build_scorers(sets, runner.embed_text, runner.logit_scale))
    worker = ScoringWorker(
        [Feed(Windower(ring, "src", 1.0, 1.0, catch_up=True), scorers, lambda: True)],
        runner,
        EventTracker(cooldown_seconds=3600.0, hold_seconds=0.0),
        lambda events: delivered.append(list(events)),
        max_batch=2,
        observer=seen,
    )
    worker.start()
    assert worker.drained.wait(30)
    worker.join(5)
    # Every window, the silent one included, in stream order, each seen once.
    assert [w.end_index for w in seen.windows] == [N, 2 * N, 3 * N, 4 * N]
    assert all(t.started_monotonic <= t.finished_monotonic for t in seen.timings)
    # Batches of two: the silent window never met the model, and its batch says so.
    assert [t.embedded for t in seen.timings] == [1, 2]
    assert all(t.inference_ms > 0 for t in seen.timings)
    assert [e.kind for batch in delivered for e in batch] == ["start"]
    assert [e for batch in delivered for e in batch] == seen.events
    assert worker.stats().windows_skipped_silent == 1
    # Closing at shutdown goes out the same way, and the counter sees it once.
    closed = worker.close_all(T0)
    assert [e.kind for e in closed] == ["end"] and delivered[-1] == closed
    assert worker.stats().events == 2
    assert worker.close_all(T0) == [] and len(delivered) == 2


class SlowRunner(BatchRecorder):
    """The real model, plus a fixed cost per window, as a full-size tower has."""

    def __init__(self, runner: ClapRunner, seconds_per_window: float) -> None:
        super().__init__(runner)
        self.seconds_per_window = seconds_per_window
        self.sources: list[str] = []

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[Position] | None = None
    ) -> np.ndarray:
        time.sleep(self.seconds_per_window * len(windows))
        self.sources += [p[0] if isinstance(p, tuple) else "?" for p in positions or []]
        return super().embed_audio(windows, positions)


def test_a_file_replayed_flat_out_never_starves_a_live_source(runner: ClapRunner) -> None:
    sets = [LabelSetConfig(name="s", labels=["a", "b"])]
    scorers = tuple(build_scorers(sets, runner.embed_text, runner.logit_scale))
    # A lossless file with a minute of audio waiting, and a live source paced in real time.
    file_ring = RingBuffer(N * 70, 1, N)
    rng = np.random.default_rng(5)
    file_ring.write((0.2 * rng.standard_normal((N * 60, 1))).astype(np.float32), 1e9)
    live_ring = RingBuffer(N * 5, 1, N)
    file_feed = Feed(Windower(file_ring, "file", 1.0, 0.5, catch_up=True), scorers, lambda: False)
    live_feed = Feed(Windower(live_ring, "live", 1.0, 0.5), scorers, lambda: False)
    # 150 ms a window: a batch of 4 file windows would take 0.6 s, longer than the 0.5 s hop.
    slow = SlowRunner(runner, 0.15)
    worker = ScoringWorker(
        [file_feed, live_feed], slow, EventTracker(1.0, 0.0), lambda _: None, max_batch=4
    )
    worker.start()
    live_seconds = 3.0
    block = tone(amplitude=0.3)[: N // 10]
    started = time.monotonic()
    for k in range(int(live_seconds * 10)):
        live_ring.write(block)
        time.sleep(max(0.0, started + (k + 1) / 10 - time.monotonic()))
    time.sleep(0.3)
    worker.stop()
    worker.join(5)
    live = worker.stats("live")
    # Every hop of the live source was scored: none skipped because the file hogged the model.
    assert live.windows_skipped_lagging == 0
    assert live.windows_scored == int((live_seconds - 1.0) / 0.5) + 1
    # The file went on in the time left over, and no batch held more than one window a source.
    assert worker.stats("file").windows_scored > 5
    assert max(slow.batches) <= 2
    assert (
        worker.stats().windows_scored == live.windows_scored + worker.stats("file").windows_scored
    )


def test_each_source_is_scored_only_against_its_own_label_sets(runner: ClapRunner) -> None:
    sets = [
        LabelSetConfig(name="alarms", labels=[{"name": "a", "threshold": 0.0}, "b"]),
        LabelSetConfig(name="pets", labels=[{"name": "dog", "threshold": 0.0}, "cat"]),
    ]
    alarms, pets = build_scorers(sets, runner.embed_text, runner.logit_scale)
    feeds = []
    for source_id, scorers in (("kitchen", (alarms, pets)), ("porch", (pets,))):
        ring = RingBuffer(N * 4, 1, N)
        ring.write(np.tile(tone(), 3).reshape(-1, 1), 1e9)
        feeds.append(
            Feed(Windower(ring, source_id, 1.0, 1.0, catch_up=True), scorers, lambda: True)
        )
    events: list[Event] = []
    worker = ScoringWorker(feeds, runner, EventTracker(3600.0, 0.0), events.extend, max_batch=4)
    worker.start()
    assert worker.drained.wait(30)
    worker.join(5)
    started = sorted((e.detection.source_id, e.detection.label_set) for e in events)
    assert started == [("kitchen", "alarms"), ("kitchen", "pets"), ("porch", "pets")]
    assert worker.stats("kitchen").windows_scored == worker.stats("porch").windows_scored == 3
    assert worker.stats().windows_scored == 6


def test_new_scorers_apply_from_the_next_batch_and_end_what_they_drop(
    runner: ClapRunner,
) -> None:
    worker, counting, events = make_worker(runner)
    events += worker.process(window(tone(), 1))  # "a" always fires: its event starts
    assert [(e.kind, e.detection.label) for e in events] == [("start", "a")]
    swapped = [LabelSetConfig(name="s", labels=["b", {"name": "c", "threshold": 0.0}])]
    worker.set_scorers(
        {"src": tuple(build_scorers(swapped, runner.embed_text, runner.logit_scale))}
    )
    assert worker.scorers("src")[0].labels == ("b", "c")
    events += worker.process(window(tone(), 2))
    # "a" is no longer scored: its event ends before the new labels' first window.
    assert [(e.kind, e.detection.label) for e in events[1:]] == [("end", "a"), ("start", "c")]
    assert events[1].ended_at == T0 + timedelta(seconds=2)
    # A source with every set disabled costs no inference, and its open events end.
    worker.set_scorers({"src": ()})
    seen = len(counting.seen)
    events += worker.process(window(tone(), 3))
    assert len(counting.seen) == seen
    assert [(e.kind, e.detection.label) for e in events[3:]] == [("end", "c")]
    with pytest.raises(ValueError, match="no scorers for source"):
        worker.set_scorers({"other": ()})


def test_each_embedded_window_is_handed_on_with_its_level(runner: ClapRunner) -> None:
    worker, _, _ = make_worker(runner)
    handed: list[WindowEmbedding] = []
    worker.on_embeddings = handed.extend
    worker.process_batch([window(tone(), 1), window(np.zeros(N), 2), window(tone(), 3)])
    # The silent window never reached the model, so it has no embedding to keep.
    assert [h.end_time for h in handed] == [T0 + timedelta(seconds=s) for s in (1, 3)]
    assert all(h.source_id == "src" and h.embedding.shape == (16,) for h in handed)
    np.testing.assert_allclose(np.linalg.norm(handed[0].embedding), 1.0, rtol=1e-5)
    # A 0.3 sine: 20 log10(0.3 / sqrt 2) = -13.5 dBFS.
    assert handed[0].level_dbfs == pytest.approx(-13.47, abs=0.05)
    assert worker.stats("src").level_dbfs == pytest.approx(-13.47, abs=0.05)
    worker.process(window(np.zeros(N), 4))
    assert worker.stats().level_dbfs == -math.inf


def test_windows_of_one_source_in_one_batch_keep_their_own_levels(runner: ClapRunner) -> None:
    worker, _, _ = make_worker(runner)
    handed: list[WindowEmbedding] = []
    worker.on_embeddings = handed.extend
    worker.process_batch([window(tone(), 1), window(tone(amplitude=0.03), 2)])
    # 20 log10(0.3 / sqrt 2) and 20 log10(0.03 / sqrt 2): each window's own RMS level.
    assert [h.level_dbfs for h in handed] == [
        pytest.approx(-13.47, abs=0.05),
        pytest.approx(-33.47, abs=0.05),
    ]


def test_the_change_gate_carries_the_last_scores_without_the_model(runner: ClapRunner) -> None:
    worker, counting, _ = make_worker(runner)
    worker.gate = ChangeGate(ChangeGateConfig(enabled=True))
    heard: list[Sequence[Scores]] = []
    worker.on_scores = heard.append
    kept: list[WindowEmbedding] = []
    worker.on_embeddings = kept.extend
    steady = quiet_home(N, 5.0, [])
    knock = quiet_home(N, 1.0, [(0.4, 0.1, -20.0)], seed=8)
    for second in range(1, 6):
        worker.process(window(steady[(second - 1) * N : second * N], second))
    worker.process(window(knock, 6))
    stats = worker.stats("src")
    assert (stats.windows_scored, stats.windows_gated) == (2, 4)
    assert len(counting.seen) == 2  # the model saw the first window and the knock only
    first = heard[0][0].scores
    assert all(scores[0].scores == first for scores in heard[1:5])
    assert heard[5][0].scores != first
    # History still gets every window: a carried window keeps the embedding it was scored by.
    assert len(kept) == 6 and np.array_equal(kept[1].embedding, kept[0].embedding)

"""Event logic: one start per continuing sound, end after the cooldown, hold, close at shutdown."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from monitor.frames import Detection
from monitor.pipeline.events import EventTracker

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LABELS = ("dog", "cat")


def hit(label: str, at: float, score: float = 0.9, source: str = "mic") -> Detection:
    return Detection(
        id=str(uuid.uuid4()),
        source_id=source,
        label_set="pets",
        label=label,
        score=score,
        threshold=0.5,
        scores={"dog": score, "cat": 1 - score},
        window_start=T0 + timedelta(seconds=at - 5),
        window_end=T0 + timedelta(seconds=at),
        model_id="m",
    )


def feed(
    tracker: EventTracker,
    seconds: float,
    labels_hit: list[str],
    score: float = 0.9,
    source: str = "mic",
):
    found = [hit(label, seconds, score, source) for label in labels_hit]
    return tracker.update(source, "pets", LABELS, found, seconds, T0 + timedelta(seconds=seconds))


def test_continuing_sound_gives_one_start_and_one_end() -> None:
    tracker = EventTracker(cooldown_seconds=3.0, hold_seconds=0.0)
    kinds = []
    for t in range(5, 15):
        kinds += [(e.kind, e.detection.label, t) for e in feed(tracker, t, ["dog"])]
    assert kinds == [("start", "dog", 5)]
    for t in range(15, 20):
        kinds += [(e.kind, e.detection.label, t) for e in feed(tracker, t, [])]
    # Last hit at 14: quiet for 3 s at 17.
    assert kinds == [("start", "dog", 5), ("end", "dog", 17)]


def test_end_reports_peak_count_and_span() -> None:
    tracker = EventTracker(cooldown_seconds=1.0, hold_seconds=0.0)
    (start,) = feed(tracker, 5, ["dog"], 0.6)
    feed(tracker, 6, ["dog"], 0.95)
    feed(tracker, 7, ["dog"], 0.7)
    (end,) = feed(tracker, 8, [])
    assert end.kind == "end" and end.event_id == start.event_id
    assert end.detection.score == 0.95
    assert end.detection_count == 3
    assert end.started_at == start.detection.window_start
    assert end.ended_at == T0 + timedelta(seconds=8)
    assert end.detection.id != start.detection.id


def test_labels_are_independent() -> None:
    tracker = EventTracker(cooldown_seconds=2.0, hold_seconds=0.0)
    events = feed(tracker, 5, ["dog", "cat"])
    assert sorted(e.detection.label for e in events) == ["cat", "dog"]
    assert len({e.event_id for e in events}) == 2
    events = feed(tracker, 6, ["cat"])
    assert events == []
    events = feed(tracker, 7, ["cat"])
    assert [(e.kind, e.detection.label) for e in events] == [("end", "dog")]


def test_hold_keeps_a_short_sound_on() -> None:
    tracker = EventTracker(cooldown_seconds=1.0, hold_seconds=10.0)
    feed(tracker, 5, ["dog"])
    ends = [t for t in range(6, 20) if feed(tracker, t, [])]
    assert ends == [15]


def test_zero_cooldown_ends_on_first_quiet_window() -> None:
    tracker = EventTracker(cooldown_seconds=0.0, hold_seconds=0.0)
    feed(tracker, 5, ["dog"])
    assert [e.kind for e in feed(tracker, 6, [])] == ["end"]


def test_close_all_ends_open_events() -> None:
    tracker = EventTracker(cooldown_seconds=60.0, hold_seconds=0.0)
    feed(tracker, 5, ["dog", "cat"])
    assert len(tracker.active) == 2
    events = tracker.close_all(T0 + timedelta(seconds=6))
    assert sorted((e.kind, e.detection.label) for e in events) == [("end", "cat"), ("end", "dog")]
    assert tracker.active == []


def test_two_sources_hearing_the_same_label_are_two_events() -> None:
    tracker = EventTracker(cooldown_seconds=2.0, hold_seconds=0.0)
    kitchen = feed(tracker, 5, ["dog"], source="kitchen")
    porch = feed(tracker, 5, ["dog"], source="porch")
    assert [e.kind for e in kitchen] == [e.kind for e in porch] == ["start"]
    assert kitchen[0].event_id != porch[0].event_id
    assert sorted(tracker.active) == [("kitchen", "pets", "dog"), ("porch", "pets", "dog")]
    # The kitchen goes quiet (its own stream time); the porch's dog goes on.
    assert [e.kind for e in feed(tracker, 8, [], source="kitchen")] == ["end"]
    assert feed(tracker, 8, ["dog"], source="porch") == []
    assert tracker.active == [("porch", "pets", "dog")]


def test_the_end_knows_where_the_last_detecting_window_ended() -> None:
    """A clip runs to the post-roll after the last detecting window, not after the peak's."""
    tracker = EventTracker(cooldown_seconds=1.0, hold_seconds=0.0)
    for at, score in ((5, 0.6), (6, 0.95), (7, 0.7)):
        d = replace(
            hit("dog", at, score), window_start_index=at * 100 - 500, window_end_index=at * 100
        )
        tracker.update("mic", "pets", LABELS, [d], at, T0 + timedelta(seconds=at))
    (end,) = feed(tracker, 8, [])
    assert end.detection.window_end_index == 600  # the peak's window
    assert end.last_window_end_index == 700
    assert end.clip is None

"""What listen shows: the top labels per set and source, bars, and lines cut to the width."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from monitor.listen.view import (
    BAR_WIDTH,
    EMPTY,
    FULL,
    SetView,
    SourceView,
    View,
    bar,
    render,
    render_plain,
    source_view,
)
from tests.support.scores import T0, window_scores

PETS = {"cat meowing": 0.1, "dog barking": 0.412, "bird song": 0.3, "silence": 0.05}


def test_source_view_keeps_the_top_k_of_each_set_best_first() -> None:
    scores = window_scores("garden", {"pets": PETS, "home": {"doorbell": 0.2, "alarm": 0.7}})
    shown = source_view(scores, 2)
    assert shown.source_id == "garden"
    assert shown.window_end == T0
    assert shown.sets == (
        SetView("pets", (("dog barking", 0.412), ("bird song", 0.3))),
        SetView("home", (("alarm", 0.7), ("doorbell", 0.2))),
    )


def test_source_view_measures_the_window_level() -> None:
    assert source_view(window_scores("m", {"s": PETS}, amplitude=0.1), 1).level_dbfs == (
        pytest.approx(-20.0, abs=1e-4)
    )
    assert source_view(window_scores("m", {"s": PETS}, amplitude=0.0), 1).level_dbfs == -math.inf


@pytest.mark.parametrize(
    ("score", "filled"),
    [(0.0, 0), (0.04, 0), (0.412, 4), (0.5, 5), (0.96, 10), (1.0, 10), (1.7, 10), (-0.3, 0)],
)
def test_a_bar_is_filled_in_proportion_to_the_score(score: float, filled: int) -> None:
    drawn = bar(score)
    assert len(drawn) == BAR_WIDTH
    assert drawn == FULL * filled + EMPTY * (BAR_WIDTH - filled)


def test_a_bar_of_a_score_that_is_not_a_number_is_empty() -> None:
    assert bar(math.nan) == EMPTY * BAR_WIDTH


def test_render_shows_sources_and_sets_in_order_with_aligned_scores() -> None:
    garden = source_view(window_scores("garden", {"pets": PETS}), 2)
    hall = source_view(
        window_scores("hall", {"home": {"doorbell": 0.25}, "pets": {"dog barking": 0.9}}), 2
    )
    lines = render(View("title", (garden, hall)), 200)
    assert lines[0] == "title"
    assert lines[1].startswith("garden  ") and lines[1].endswith("-20.0 dBFS")
    assert lines[2:5] == [
        "  pets",
        "    dog barking  0.412 ████░░░░░░",
        "    bird song    0.300 ███░░░░░░░",
    ]
    assert lines[5].startswith("hall  ")
    assert lines[6:] == [
        "  home",
        "    doorbell     0.250 ██░░░░░░░░",
        "  pets",
        "    dog barking  0.900 █████████░",
    ]


def test_a_source_without_a_window_yet_is_waiting() -> None:
    lines = render(View("title", (SourceView("mic"),)), 80)
    assert lines == ["title", "mic  waiting for the first window…"]


def test_every_line_is_cut_to_the_width() -> None:
    long_label = "a very long label describing the sound of a distant foghorn at dawn"
    shown = source_view(window_scores("garden", {"pets": {long_label: 0.5, "dog": 0.2}}), 2)
    wide = render(View("audio-monitor listen: some/model  (Ctrl-C to stop)", (shown,)), 200)
    assert max(len(line) for line in wide) < 60  # long labels are cut, not the bars
    assert any(line.rstrip().endswith(FULL * 5 + EMPTY * 5) for line in wide)
    for width in (40, 20, 5, 1):
        narrow = render(View("audio-monitor listen: some/model  (Ctrl-C to stop)", (shown,)), width)
        assert len(narrow) == len(wide)
        assert all(len(line) <= width for line in narrow)
        assert narrow[0].endswith("…")


def test_the_plain_line_has_the_time_level_and_top_labels_and_no_escape_codes() -> None:
    scores = window_scores(
        "garden", {"pets": PETS, "home": {"doorbell": 0.2}}, end=T0 + timedelta(seconds=3)
    )
    line = render_plain(source_view(scores, 2))
    assert line == (
        "2026-03-01T12:00:03Z garden -20.0 dBFS | pets: dog barking 0.412, bird song 0.300"
        " | home: doorbell 0.200"
    )
    silent = render_plain(source_view(window_scores("mic", {"s": PETS}, amplitude=0.0), 1))
    assert "silent" in silent
    assert "\x1b" not in line + silent

"""--since/--until: durations back from now, ISO-8601 times, one-line refusals."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from monitor.errors import EXIT_CONFIG, ConfigError
from monitor.search.timespec import parse_when

NOW = datetime(2024, 5, 2, 12, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("30m", 1800), ("7d", 604800), ("90s", 90), ("1.5h", 5400)],
)
def test_durations_count_back_from_now(text: str, seconds: float) -> None:
    assert parse_when(text, NOW, "--since") == NOW - seconds


def test_iso_times_with_and_without_a_zone() -> None:
    assert (
        parse_when("2024-05-01T18:00:00+00:00", NOW, "--since")
        == datetime(2024, 5, 1, 18, tzinfo=timezone.utc).timestamp()
    )
    local = datetime(2024, 5, 1, 18).astimezone().timestamp()
    assert parse_when("2024-05-01T18:00", NOW, "--since") == local


@pytest.mark.parametrize("text", ["yesterday", "24", "h", "-3h", ""])
def test_anything_else_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_when(text, NOW, "--since")
    assert caught.value.exit_code == EXIT_CONFIG
    assert str(caught.value).startswith("--since:") and "\n" not in str(caught.value)

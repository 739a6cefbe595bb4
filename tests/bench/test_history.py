"""bench --history-days: the real writer fills a file, both ways of searching it are timed."""

from __future__ import annotations

from pathlib import Path

from monitor.bench.history import run_history_bench
from monitor.bench.report import format_history
from monitor.search.parallel import default_jobs


def test_a_short_history_is_written_searched_and_reported_beside_its_targets(
    tmp_path: Path,
) -> None:
    report = run_history_bench(0.05, tmp_path, runs=2)  # 72 minutes: 4,320 windows
    assert report.windows == 4320
    assert report.search_jobs == default_jobs()
    assert len(report.search_seconds) == len(report.search_serial_seconds) == 2
    assert all(t > 0 for t in report.search_seconds + report.search_serial_seconds)
    assert 0 < report.file_megabytes < 10
    text = format_history(report)
    assert "4320 windows of 512-d float16" in text
    assert "(--jobs 1)" in text and "target <= 0.5 s" in text
    assert report.cpu_model in text

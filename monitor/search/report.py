"""A search report rendered as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

from monitor.search.results import Format, Match, SearchReport

CSV_COLUMNS = ("text", "source", "start", "end", "peak_score", "peak_time", "windows", "clips")


def render(report: SearchReport, fmt: Format) -> str:
    """The whole report in `fmt`, ending with a newline."""
    if fmt == "json":
        return json.dumps(as_json(report), indent=2) + "\n"
    if fmt == "csv":
        return _csv(report)
    return _table(report)


def as_json(report: SearchReport) -> dict[str, Any]:
    options = report.options
    return {
        "texts": list(options.texts),
        "scores": "softmax" if options.softmax else "absolute",
        "model": report.model_id,
        "windows_scored": report.windows_scored,
        "seconds": round(report.seconds, 4),
        "matches": [_match_json(m) for m in report.matches],
    }


def _match_json(match: Match) -> dict[str, Any]:
    return {
        "text": match.text,
        "source": match.source_id,
        "start": _iso(match.start),
        "end": _iso(match.end),
        "peak_score": round(match.peak_score, 4),
        "peak_time": _iso(match.peak_time),
        "windows": match.windows,
        "clips": list(match.clips),
    }


def _csv(report: SearchReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for match in report.matches:
        row = _match_json(match)
        writer.writerow([*(row[c] for c in CSV_COLUMNS[:-1]), " ".join(match.clips)])
    return buffer.getvalue()


def _table(report: SearchReport) -> str:
    header = ("text", "source", "start (UTC)", "end (UTC)", "peak", "clips")
    rows = [
        (
            m.text,
            m.source_id,
            _clock(m.start),
            _clock(m.end),
            f"{m.peak_score:.3f}",
            ", ".join(m.clips) or "-",
        )
        for m in report.matches
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    mode = "softmax over the texts" if report.options.softmax else "absolute (cosine) scores"
    lines.append(
        f"{len(report.matches)} match(es); {report.windows_scored} window(s) scored in "
        f"{report.seconds:.2f} s; {mode}"
    )
    return "\n".join(lines) + "\n"


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clock(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")

"""Scraping /metrics over real HTTP and reading the samples back by name and labels."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, host: str = "127.0.0.1", timeout_seconds: float = 10.0) -> str:
    """The body of GET http://host:port/metrics."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_seconds) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        body: str = r.read().decode("utf-8")
        return body


def samples(text: str) -> Samples:
    """Every sample of Prometheus text, keyed by its name and its labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def types(text: str) -> dict[str, str]:
    """Each family's name (without _total/_info) and its type."""
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value; KeyError naming what is there when it is missing."""
    key = (name, frozenset(labels.items()))
    if key not in found:
        near = sorted(str(dict(k[1])) for k in found if k[0] == name)
        raise KeyError(f"{name}{labels} not scraped; {name} has {near or 'no samples'}")
    return found[key]

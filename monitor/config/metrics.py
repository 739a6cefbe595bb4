"""`metrics:`: an optional Prometheus endpoint with the monitor's counters, off by default."""

from __future__ import annotations

from pydantic import Field

from monitor.config.base import StrictModel

DEFAULT_METRICS_PORT = 9464  # the port OpenTelemetry's Prometheus exporter made common


class MetricsConfig(StrictModel):
    """Serve Prometheus text at http://host:port/metrics while the monitor runs."""

    enabled: bool = Field(
        default=False,
        description="Serve the counters, levels and inference times at /metrics (Prometheus).",
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description=(
            "Address to listen on: 127.0.0.1 = this machine only; 0.0.0.0 (or ::) = every "
            "interface, for a Prometheus server elsewhere (the endpoint has no authentication)."
        ),
    )
    port: int = Field(
        default=DEFAULT_METRICS_PORT,
        ge=1,
        le=65535,
        description=(
            "TCP port of the endpoint. If it is taken, the monitor logs one warning and runs "
            "without metrics."
        ),
    )

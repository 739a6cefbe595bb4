"""`window:`: how audio is cut into windows for scoring."""

from __future__ import annotations

from pydantic import Field

from monitor.config.base import StrictModel

MAX_WINDOW_SECONDS = 10.0  # the checkpoint's extractor randomly crops anything longer


class WindowConfig(StrictModel):
    """How audio is cut into windows for scoring."""

    seconds: float = Field(
        default=5.0,
        gt=0,
        le=MAX_WINDOW_SECONDS,
        description="Window length; at most 10 s so scoring stays deterministic.",
    )
    hop_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="Time between the starts of consecutive windows."
    )
    min_dbfs: float | None = Field(
        default=None,
        ge=-150,
        le=0,
        description=(
            "Energy gate: windows quieter than this RMS level (dBFS) skip the model; "
            "None = score every window."
        ),
    )

"""`window:`: how audio is cut into windows for scoring."""

from __future__ import annotations

from pydantic import Field

from monitor.config.base import StrictModel

MAX_WINDOW_SECONDS = 10.0  # the checkpoint's extractor randomly crops anything longer


class ChangeGateConfig(StrictModel):
    """Skip the model for windows whose newest audio sounds like what was last scored."""

    enabled: bool = Field(
        default=False,
        description=(
            "Score a window only when its newest hop of audio differs from the last scored "
            "window's (or while a change is still inside the window); others carry the last "
            "scores forward, so events still start and end on time."
        ),
    )
    min_change_db: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description=(
            "A change: some frequency band's mean power over the newest hop differs by at "
            "least this many dB from the last scored hop's."
        ),
    )
    max_skip_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Score at least this often anyway, so slow drifts are heard too.",
    )


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
    change_gate: ChangeGateConfig = Field(
        default_factory=ChangeGateConfig,
        description="Opt-in: skip the model while nothing changes (a quiet house), carry scores.",
    )

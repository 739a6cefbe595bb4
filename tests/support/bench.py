"""What the bench's JSON documents hold, shared by the tests that read them."""

# A `bench --sources` run, in the order as_json writes it.
SOURCES_RUN_KEYS = (
    "name",
    "backend",
    "precision",
    "sources",
    "ok",
    "error",
    "audio_seconds",
    "wall_seconds",
    "windows",
    "windows_by_source",
    "windows_per_second",
    "cpu_seconds",
    "cpu_seconds_per_audio_hour_per_source",
    "latency_ms",
    "windows_dropped",
    "lost_frames",
    "events",
    "rss_after_mib",
    "peak_rss_mib",
)

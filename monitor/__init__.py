"""audio-monitor: zero-shot CLAP sound monitoring that publishes detections over MQTT."""

__version__ = "0.1.0"

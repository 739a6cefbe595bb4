"""MQTT output: paho publisher, on-disk outbox and topic/payload layout."""

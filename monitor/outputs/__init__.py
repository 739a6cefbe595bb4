"""Where events go: the sink interface, MQTT and JSON lines."""

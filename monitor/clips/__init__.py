"""Detection clips: each event's audio cut exactly from its ring buffer, with a JSON sidecar."""

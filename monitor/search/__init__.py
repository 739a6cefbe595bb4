"""`audio-monitor search`: free-text search over the audio embeddings kept by history."""

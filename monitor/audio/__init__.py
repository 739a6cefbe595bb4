"""Audio in: sources, ring buffer, windows at the model's rate, file decoding."""

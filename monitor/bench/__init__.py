"""audio-monitor bench: the monitor's path timed against the transformers reference."""

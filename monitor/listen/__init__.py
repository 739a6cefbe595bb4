"""audio-monitor listen: the top labels per source, live in the terminal."""

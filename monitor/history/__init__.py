"""History: every scored window's audio embedding kept in SQLite for free-text search."""

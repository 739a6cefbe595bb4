"""Commands over files: classify, eval and their metrics."""

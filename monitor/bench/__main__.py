"""`python -m monitor.bench --child SPEC.json`: one measured path in a process of its own."""

import sys

from monitor.bench.memory import child_main

if sys.argv[1:2] == ["--child"]:
    sys.exit(child_main(sys.argv[2:]))
sys.exit("usage: python -m monitor.bench --child SPEC.json (internal; use `audio-monitor bench`)")

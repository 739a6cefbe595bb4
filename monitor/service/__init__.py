"""The long-running monitor: daemon, supervision and health, systemd notify."""

"""The systemd notify protocol (READY, WATCHDOG, STATUS, STOPPING) over $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify datagrams; does nothing when not started by systemd with Type=notify."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        path = env.get("NOTIFY_SOCKET", "")
        # '@' names a socket in the abstract namespace (a leading NUL byte).
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self._socket: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        self.watchdog_seconds: float | None = int(usec) / 1e6 if watchdog_for_us else None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; False (logged once) if it cannot be sent."""
        if not self._address:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as err:
            if not self._warned:
                logger.warning("cannot notify systemd at %s: %s", self._address, err)
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

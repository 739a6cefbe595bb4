"""A loopback TCP relay to a real broker that answers late: a slow link, on purpose."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

LOOPBACK = "127.0.0.1"


class SlowLink:
    """Accepts at once, reaches the upstream port only after `delay_seconds`, then relays.

    The client's TCP connect succeeds and its CONNECT is sent, but the broker's CONNACK
    comes `delay_seconds` later: a connection is reliably "under way" for that long.
    """

    def __init__(self, upstream_port: int, delay_seconds: float) -> None:
        self.host = LOOPBACK
        self._upstream_port = upstream_port
        self._delay_seconds = delay_seconds
        self._server = socket.create_server((LOOPBACK, 0))
        self.port: int = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_loop, name="slow-link", daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._keep(client)
        time.sleep(self._delay_seconds)
        try:
            upstream = socket.create_connection((LOOPBACK, self._upstream_port))
        except OSError:
            client.close()
            return
        self._keep(upstream)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            closed = self._closed
        if closed:
            sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        self._server.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def slow_link(upstream_port: int, delay_seconds: float) -> Iterator[SlowLink]:
    """A SlowLink, closed on exit."""
    link = SlowLink(upstream_port, delay_seconds)
    try:
        yield link
    finally:
        link.close()

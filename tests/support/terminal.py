"""A child process whose stdout is a real pseudo-terminal, and what it wrote there."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import tempfile
import termios
import threading
from collections.abc import Mapping, Sequence

from tests.support.waiting import wait_until


class PseudoTerminal:
    """Run `argv` with stdin and stdout on a pseudo-terminal of `columns` x `rows`.

    stderr goes to a file (read with `stderr()`), so log lines never mix with the screen.
    A thread reads the terminal until the child closes it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        columns: int = 100,
        rows: int = 30,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self._master = master
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._output = bytearray()
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                list(argv), stdin=slave, stdout=slave, stderr=self._stderr, env=dict(env)
            )
        finally:
            os.close(slave)  # the child holds it now: reads end with EIO once it exits
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except OSError:  # EIO: every holder of the terminal's other end has closed it
                return
            if not chunk:
                return
            with self._lock:
                self._output += chunk

    def output(self) -> str:
        """Everything written to the terminal so far."""
        with self._lock:
            return self._output.decode("utf-8", errors="replace")

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout_seconds: float = 120.0) -> None:
        """Until `text` has been written `count` times (or the child has exited)."""

        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"exited {self.proc.returncode} before {text!r} was written {count} "
                    f"time(s); output {self.output()!r}; stderr {self.stderr()}"
                )
            return self.output().count(text) >= count

        wait_until(seen, f"{text!r} written {count} time(s)", timeout_seconds)

    def close(self) -> None:
        """Kill the child if it is still running and release the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        os.close(self._master)
        self._stderr.close()

"""An RTSP server as an IP camera serves one: a live tone at rtsp://HOST:PORT/live.

Run with the system Python (/usr/bin/python3): the GObject bindings are Debian's, not the
virtualenv's. Usage: rtsp_server.py PORT [FREQUENCY_HZ]. Prints "ready" once it listens;
exits 1 with a message when it cannot.
"""

from __future__ import annotations

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
# What a camera's microphone sends: 16 kHz mono L16; the client resamples to its own rate.
RATE_HZ = 16000


def main(port: str, frequency_hz: str = "1000") -> int:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    # is-live: a source that never ends and runs at the wall clock, as a camera does.
    factory.set_launch(
        f"( audiotestsrc is-live=true wave=sine freq={frequency_hz} volume=0.5"
        f" ! audioconvert ! audioresample ! audio/x-raw,rate={RATE_HZ},channels=1"
        " ! rtpL16pay name=pay0 pt=96 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {HOST}:{port}", flush=True)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

"""Supervision: stalled, failing and hanging sources; slow scoring; systemd notify and watchdog."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.audio.ringbuffer import RingBuffer
from monitor.audio.source import Source, SourceStats, StreamFormat
from monitor.config import Config, ModelConfig
from monitor.errors import EXIT_UNAVAILABLE, SourceError
from monitor.model.runner import ClapRunner, load_clap
from monitor.service.daemon import Daemon
from monitor.service.notify import SystemdNotifier
from tests.support.audio import write_clip
from tests.support.broker import Broker, Subscriber
from tests.support.daemons import Running
from tests.support.processes import monitor_command
from tests.support.slow_link import slow_link
from tests.support.waiting import wait_until

RATE_HZ = 16000
BASE = "sup/dev"


class ScriptedSource(Source):
    """A test source made to misbehave: stall, fail to open or start, hang on stop.

    It writes a noise signal from a thread, `speed` times faster than real time (a live,
    lossy source: it never waits for the reader).
    """

    def __init__(
        self,
        *,
        stall_after_seconds: float | None = None,
        open_failures_after_first: int = 0,
        fail_start: bool = False,
        hang_on_stop_seconds: float = 0.0,
        speed: float = 1.0,
        source_id: str = "scripted",
    ) -> None:
        self.source_id = source_id
        self.stall_after_seconds = stall_after_seconds
        self.open_failures_after_first = open_failures_after_first
        self.fail_start = fail_start
        self.hang_on_stop_seconds = hang_on_stop_seconds
        self.speed = speed
        self.opens = 0
        self.starts = 0
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._blocks = 0
        self._frames = 0
        self._last: float | None = None

    def open(self) -> StreamFormat:
        self.opens += 1
        if self.opens > 1 and self.open_failures_after_first > 0:
            self.open_failures_after_first -= 1
            raise SourceError("scripted device vanished")
        return StreamFormat(RATE_HZ, 1, "scripted device")

    def start(self, ring: RingBuffer) -> None:
        self.starts += 1
        if self.fail_start:
            raise SourceError("scripted device refuses to start")
        self._halt.clear()
        stall = self.stall_after_seconds if self.starts == 1 else None
        self._thread = threading.Thread(target=self._run, args=(ring, stall), daemon=True)
        self._thread.start()

    def _run(self, ring: RingBuffer, stall_after: float | None) -> None:
        rng = np.random.default_rng(self.starts)
        block = RATE_HZ // 20
        began = time.monotonic()
        while not self._halt.is_set():
            if stall_after is not None and time.monotonic() - began > stall_after:
                self._halt.wait()  # a wedged driver: no more callbacks, no error
                return
            ring.write((0.1 * rng.standard_normal((block, 1))).astype(np.float32))
            self._blocks += 1
            self._frames += block
            self._last = time.monotonic()
            self._halt.wait(block / RATE_HZ / self.speed)

    def stop(self) -> None:
        self._halt.set()
        if self.hang_on_stop_seconds:
            time.sleep(self.hang_on_stop_seconds)  # a close that never returns in time

    @property
    def finished(self) -> bool:
        return False

    @property
    def error(self) -> BaseException | None:
        return None

    def stats(self) -> SourceStats:
        return SourceStats(self._blocks, self._frames, 0, self._last)


class SlowRunner:
    """The real tiny-model runner, made slower than real time, or hung on demand."""

    def __init__(self, runner: ClapRunner, delay_seconds: float = 0.0) -> None:
        self.runner = runner
        self.model_id = runner.model_id
        self.logit_scale = runner.logit_scale
        self.delay_seconds = delay_seconds
        self.gate = threading.Event()
        self.gate.set()

    def embed_text(self, prompts: Sequence[str]) -> np.ndarray:
        return self.runner.embed_text(prompts)

    def embed_audio(
        self, windows: Sequence[np.ndarray], positions: Sequence[int | None] | None = None
    ) -> np.ndarray:
        self.gate.wait()
        time.sleep(self.delay_seconds)
        return self.runner.embed_audio(windows, positions)


@pytest.fixture(scope="module")
def tiny_runner(tiny_clap_dir: Path) -> ClapRunner:
    return load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir), torch_threads=1))


def make_config(model_dir: Path, broker: Broker | None, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "model": {"precision": "fp32", "name": str(model_dir)},
        "source": {"type": "microphone", "id": "scripted", "buffer_seconds": 3.0},
        "window": {"seconds": 1.0, "hop_seconds": 0.5},
        "label_sets": [{"name": "s", "labels": ["a", "b"], "threshold": 1.0}],
        "health": {
            "capture_stall_seconds": 0.5,
            "max_source_restarts": 2,
            "restart_backoff_seconds": 0.1,
        },
        "mqtt": {
            "enabled": broker is not None,
            "host": broker.host if broker else "localhost",
            "port": broker.port if broker else 1883,
            "topic_prefix": "sup",
            "device_id": "dev",
            "reconnect_min_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
            "outbox": {"enabled": False},
        },
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value}
    return Config.model_validate(data)


def health_states(sub: Subscriber) -> list[str]:
    return [json.loads(p)["state"] for p in sub.payloads(f"{BASE}/health")]


def test_stalled_capture_is_degraded_reopened_and_recovers(
    tiny_clap_dir: Path,
    tiny_runner: ClapRunner,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    daemons: list[Running],
) -> None:
    source = ScriptedSource(stall_after_seconds=1.5)
    sub = mqtt_subscriber(mosquitto, "sup/#")
    daemon = Daemon(
        make_config(tiny_clap_dir, mosquitto),
        source_factory=lambda _cfg: source,
        model_loader=lambda _cfg: tiny_runner,
    )
    run = Running(daemon)
    daemons.append(run)
    sub.wait_for(
        lambda _: health_states(sub)[-1:] == ["ok"] and "degraded" in health_states(sub),
        timeout_seconds=30,
        what="degraded then ok",
    )
    assert health_states(sub) == ["ok", "degraded", "ok"]
    degraded = json.loads(sub.payloads(f"{BASE}/health")[1])
    assert "no audio for 0.5 s" in degraded["detail"]
    assert source.opens == 2 and source.starts == 2
    assert daemon.source_restarts == 1
    scored_before = daemon.pipeline.worker.stats().windows_scored if daemon.pipeline else 0
    wait_until(
        lambda: (
            daemon.pipeline is not None
            and daemon.pipeline.worker.stats().windows_scored > scored_before
        ),
        "scoring after recovery",
        10,
    )
    assert run.stop() < 5.0
    assert run.code == 0 and run.error is None


def test_source_that_cannot_be_reopened_exits_75(
    tiny_clap_dir: Path,
    tiny_runner: ClapRunner,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    daemons: list[Running],
) -> None:
    source = ScriptedSource(stall_after_seconds=1.0, open_failures_after_first=99)
    sub = mqtt_subscriber(mosquitto, "sup/#")
    run = Running(
        Daemon(
            make_config(tiny_clap_dir, mosquitto),
            source_factory=lambda _cfg: source,
            model_loader=lambda _cfg: tiny_runner,
        )
    )
    daemons.append(run)
    run.thread.join(30)
    assert isinstance(run.error, SourceError)
    assert run.error.exit_code == EXIT_UNAVAILABLE
    assert "reopening failed 2 time(s)" in str(run.error)
    assert source.opens == 3  # the first open and two failed reopens
    sub.wait_for(
        lambda ms: any(m.topic == f"{BASE}/status" and m.payload == "offline" for m in ms),
        what="offline",
    )
    assert health_states(sub)[-1] == "degraded"


def two_source_config(model_dir: Path, broker: Broker) -> Config:
    data = make_config(model_dir, broker).model_dump(mode="json", exclude={"source"})
    data["sources"] = [
        {"type": "microphone", "id": "kitchen", "buffer_seconds": 3.0},
        {"type": "microphone", "id": "porch", "buffer_seconds": 3.0},
    ]
    return Config.model_validate(data)


def source_health(sub: Subscriber, source_id: str) -> list[str]:
    return [json.loads(p)["state"] for p in sub.payloads(f"{BASE}/{source_id}/health")]


def test_a_source_given_up_on_leaves_the_others_running(
    tiny_clap_dir: Path,
    tiny_runner: ClapRunner,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    daemons: list[Running],
) -> None:
    sources = {
        "kitchen": ScriptedSource(source_id="kitchen"),
        "porch": ScriptedSource(
            source_id="porch", stall_after_seconds=1.0, open_failures_after_first=99
        ),
    }
    sub = mqtt_subscriber(mosquitto, "sup/#")
    daemon = Daemon(
        two_source_config(tiny_clap_dir, mosquitto),
        source_factory=lambda cfg: sources[cfg.id],
        model_loader=lambda _cfg: tiny_runner,
    )
    run = Running(daemon)
    daemons.append(run)
    sub.wait_for(
        lambda _: source_health(sub, "porch")[-1:] == ["failed"], timeout_seconds=30, what="failed"
    )
    # The porch was degraded, reopened with backoff, then given up on; the monitor runs on.
    assert source_health(sub, "porch")[0] == "ok" and "degraded" in source_health(sub, "porch")
    assert set(source_health(sub, "kitchen")) == {"ok"}
    monitor = json.loads(sub.payloads(f"{BASE}/health")[-1])
    assert monitor["state"] == "degraded"
    assert monitor["sources"] == {"kitchen": "ok", "porch": "failed"}
    assert "reopening failed 2 time(s)" in monitor["detail"]
    assert run.thread.is_alive() and run.error is None
    assert daemon.pipeline is not None
    scored = daemon.pipeline.worker.stats("kitchen").windows_scored
    wait_until(
        lambda: (
            daemon.pipeline is not None
            and daemon.pipeline.worker.stats("kitchen").windows_scored > scored + 2
        ),
        "the kitchen scored on",
        10,
    )
    assert run.stop() < 5.0
    assert run.code == 0


def test_source_that_fails_to_start_exits_75_and_goes_offline(
    tiny_clap_dir: Path,
    tiny_runner: ClapRunner,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
) -> None:
    sub = mqtt_subscriber(mosquitto, "sup/#")
    # The source fails at once, so the service stops while its first MQTT connection is
    # still under way; a slow link makes that certain, as a busy machine sometimes does.
    with slow_link(mosquitto.port, delay_seconds=0.5) as link:
        daemon = Daemon(
            make_config(tiny_clap_dir, mosquitto, mqtt={"port": link.port}),
            source_factory=lambda _cfg: ScriptedSource(fail_start=True),
            model_loader=lambda _cfg: tiny_runner,
        )
        with pytest.raises(SourceError, match="refuses to start"):
            daemon.run()
    assert mosquitto.read_retained(f"{BASE}/status") == "offline"
    sub.wait_for(
        lambda ms: [m.payload for m in ms if m.topic == f"{BASE}/status"][-1:] == ["offline"],
        what="offline",
    )


def test_source_that_hangs_on_stop_cannot_hang_shutdown(
    tiny_clap_dir: Path, tiny_runner: ClapRunner, daemons: list[Running]
) -> None:
    source = ScriptedSource(hang_on_stop_seconds=30.0)
    run = Running(
        Daemon(
            make_config(tiny_clap_dir, None),
            source_factory=lambda _cfg: source,
            model_loader=lambda _cfg: tiny_runner,
        )
    )
    daemons.append(run)
    wait_until(lambda: source.stats().blocks > 5, "audio", 10)
    assert run.stop() < 5.0
    assert run.code == 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slow_scoring_scenario(model_dir: str) -> dict[str, Any]:
    """Audio 20x faster than real time into a 3 s ring, each window 0.1 s to score.

    Run in a fresh interpreter (as the daemon is): the RSS of a long pytest process moves
    with whatever earlier tests left in its allocator arenas.
    """
    runner = load_clap(ModelConfig(precision="fp32", name=model_dir, torch_threads=1))
    source = ScriptedSource(speed=20.0)
    slow = SlowRunner(runner, delay_seconds=0.1)
    daemon = Daemon(
        make_config(Path(model_dir), None, health={"capture_stall_seconds": 30.0}),
        source_factory=lambda _cfg: source,
        model_loader=lambda _cfg: slow,
    )
    run = Running(daemon)
    wait_until(
        lambda: daemon.pipeline is not None and daemon.pipeline.worker.stats().windows_scored >= 10,
        "first windows",
        30,
    )
    rss = []
    for _ in range(24):
        time.sleep(0.5)
        rss.append(_rss_bytes())
    run.stop()
    assert daemon.pipeline is not None
    stats = daemon.pipeline.worker.stats()
    windower = daemon.pipeline.lanes[0].windower
    return {
        "rss": rss,
        "lost_frames": daemon.pipeline.lanes[0].ring.lost_frames,
        "scored": stats.windows_scored,
        "skipped": stats.windows_skipped_lagging,
        "positions": (windower._last_end - windower.window_frames) // windower.hop_frames + 1,
        "frames": source.stats().frames,
        "code": run.code,
    }


def test_slow_scoring_drops_oldest_audio_and_memory_stays_flat(tiny_clap_dir: Path) -> None:
    code = (
        "import json, sys; "
        "from tests.service.test_supervision import slow_scoring_scenario as run; "
        "print(json.dumps(run(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tiny_clap_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    # Audio was dropped at the ring buffer, and the counters agree with each other: every
    # hop position up to the newest window was either scored or counted as skipped.
    assert result["lost_frames"] > 0
    assert result["skipped"] > result["scored"]
    assert result["scored"] + result["skipped"] == result["positions"]
    # ~30 s of audio went through a 3 s ring buffer: memory did not follow. The first 4 s of
    # samples are warm-up; a leak of one skipped window (~200 kB at 48 kHz, ~30 skipped per
    # second) would add ~25 MB between the medians of the next two 4 s stretches.
    assert result["frames"] > 20 * RATE_HZ
    rss = result["rss"]
    middle, last = np.median(rss[8:16]), np.median(rss[16:])
    assert last - middle < 16 * 1024 * 1024, [r // 2**20 for r in rss]


class NotifySocket:
    """A bound datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[tuple[float, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self) -> list[str]:
        return [line for _, msg in self.drain() for line in msg.split("\n")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.close()


def test_watchdog_pings_only_while_the_worker_progresses(
    tiny_clap_dir: Path,
    tiny_runner: ClapRunner,
    notify_socket: NotifySocket,
    daemons: list[Running],
) -> None:
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"}
    )
    slow = SlowRunner(tiny_runner)
    source = ScriptedSource()
    daemon = Daemon(
        make_config(tiny_clap_dir, None, health={"worker_stall_seconds": 1.0}),
        source_factory=lambda _cfg: source,
        model_loader=lambda _cfg: slow,
        notifier=notifier,
    )
    run = Running(daemon)
    daemons.append(run)
    wait_until(lambda: "READY=1" in notify_socket.fields(), "READY=1", 20)
    wait_until(lambda: notify_socket.fields().count("WATCHDOG=1") >= 3, "watchdog pings", 10)
    slow.gate.clear()  # the next inference hangs
    time.sleep(2.0)  # past worker_stall_seconds
    before = notify_socket.fields().count("WATCHDOG=1")
    time.sleep(1.5)
    assert notify_socket.fields().count("WATCHDOG=1") == before  # no pings while hung
    slow.gate.set()
    wait_until(lambda: notify_socket.fields().count("WATCHDOG=1") > before, "pings resume", 10)
    run.stop()
    fields = notify_socket.fields()
    assert "STOPPING=1" in fields
    assert any(f.startswith("STATUS=ok windows=") for f in fields)


def test_notify_protocol_from_the_real_process(
    tmp_path: Path, tiny_clap_dir: Path, notify_socket: NotifySocket
) -> None:
    clip = write_clip(tmp_path / "clip.wav", seconds=2.0, rate_hz=16000, channels=1)
    config = {
        "model": {"precision": "fp32", "name": str(tiny_clap_dir)},
        "source": {"type": "file", "path": str(clip), "loop": True},
        "window": {"seconds": 1.0, "hop_seconds": 0.5},
        "label_sets": [{"name": "s", "labels": ["a", "b"]}],
        "mqtt": {"enabled": False},
        "output": {"json_lines": True},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify_socket.path),
        "WATCHDOG_USEC": "500000",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [*monitor_command(), "run", "--config", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: notify_socket.fields().count("WATCHDOG=1") >= 3, "watchdog", 60)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    fields = notify_socket.fields()
    ready = fields.index("READY=1")
    assert fields.index("STATUS=loading model") < ready < fields.index("WATCHDOG=1")
    assert fields[-2:] == ["STOPPING=1", "STATUS=stopping"]
    assert sys.platform.startswith("linux")


@pytest.mark.slow
def test_real_capture_device_lost_is_noticed_and_exits_75(
    tmp_path: Path,
    tiny_clap_dir: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    pulse_null_sink: Any,
) -> None:
    config = make_config(tiny_clap_dir, mosquitto).model_dump(mode="json")
    config["source"] = {"type": "microphone", "id": "room", "device": "pulse"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    sub = mqtt_subscriber(mosquitto, "sup/#")
    proc = subprocess.Popen(
        [*monitor_command(), "run", "--config", str(path)],
        env={**pulse_null_sink.env, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sub.wait_for(lambda _: health_states(sub) == ["ok"], 60, "health ok")
        pulse_null_sink.stop_server()  # the microphone is gone, as if unplugged
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_UNAVAILABLE, stderr
    assert health_states(sub)[-1] == "degraded"
    assert "degraded" in stderr and "reopening failed 2 time(s)" in stderr.splitlines()[-1]
    sub.wait_for(
        lambda ms: [m.payload for m in ms if m.topic == f"{BASE}/status"][-1:] == ["offline"],
        what="offline",
    )

"""End to end: the daemon on a file with the tiny checkpoint; the END message names a real clip."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from monitor.config import Config
from monitor.service.daemon import Daemon
from monitor.service.notify import SystemdNotifier
from tests.support.audio import write_clip
from tests.support.broker import Broker, Subscriber
from tests.support.daemons import Running
from tests.support.waiting import wait_until

BASE = "clips/house"


def test_the_end_message_names_a_clip_that_exists_with_its_sidecar(
    tmp_path: Path,
    tiny_clap_dir: Path,
    mosquitto: Broker,
    mqtt_subscriber: Callable[..., Subscriber],
    daemons: list[Running],
) -> None:
    audio = write_clip(tmp_path / "yard.wav", 6.0, 16000, 2)
    clips = tmp_path / "clips"
    config = Config.model_validate(
        {
            "model": {"precision": "fp32", "name": str(tiny_clap_dir), "torch_threads": 1},
            "sources": [{"type": "file", "id": "yard", "path": str(audio), "realtime": False}],
            "window": {"seconds": 1.0, "hop_seconds": 0.5},
            # Threshold 0 always fires: one event from the first window to the end of the file.
            "label_sets": [
                {
                    "name": "pets",
                    "threshold": 1.0,
                    "labels": [{"name": "dog", "threshold": 0.0}, "x"],
                }
            ],
            "mqtt": {
                "host": mosquitto.host,
                "port": mosquitto.port,
                "topic_prefix": "clips",
                "device_id": "house",
                "outbox": {"directory": str(tmp_path / "outbox")},
            },
            "clips": {
                "enabled": True,
                "directory": str(clips),
                "pre_roll_seconds": 0.5,
                "post_roll_seconds": 0.5,
            },
        }
    )
    sub = mqtt_subscriber(mosquitto, "clips/#")
    run = Running(Daemon(config, notifier=SystemdNotifier(environ={})))
    daemons.append(run)
    run.thread.join(60)  # a file replayed as fast as it is scored: the run ends by itself
    assert not run.thread.is_alive() and run.code == 0 and run.error is None

    def ends() -> list[dict[str, object]]:
        bodies = map(json.loads, sub.payloads(f"{BASE}/yard/pets/detection"))
        return [body for body in bodies if body["event"] == "end"]

    wait_until(lambda: len(ends()) == 1, "the event's end message")
    (end,) = ends()
    clip = end["clip"]
    assert isinstance(clip, str) and clip.startswith("yard/") and clip.endswith(".flac")
    data, rate_hz = sf.read(clips / clip, dtype="float32", always_2d=True)
    side = json.loads((clips / clip).with_suffix(".json").read_text(encoding="utf-8"))
    assert rate_hz == 16000 and data.shape[1] == 2  # the source's own rate and channels
    assert side["clip"] == clip and side["source"] == "yard"
    assert side["event_id"] == end["event_id"] and side["label"] == "dog"
    # The first window starts at frame 0: no pre-roll exists, and the sidecar says so.
    assert side["pre_roll_truncated"] is True and side["first_sample_index"] == 0
    original, _ = sf.read(audio, dtype="float32", always_2d=True)
    assert len(data) == side["end_sample_index"] <= len(original)
    np.testing.assert_allclose(data, original[: len(data)], atol=2.0**-15)
    assert side["start_time"] < side["end_time"]

"""The controller thread: commands and reloads embedded aside, swapped in whole, kept on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import Config, load_config
from monitor.control.controller import LabelController, ScorersOf, restore
from monitor.control.journal import ChangeJournal
from monitor.control.state import LabelState
from monitor.frames import ControlResult
from tests.support.embeddings import HashedEmbedder
from tests.support.labels import house_config_data
from tests.support.waiting import wait_until


class Harness:
    """A running controller over a config file, recording what it applies and answers."""

    def __init__(self, tmp_path: Path, embedder: HashedEmbedder | None = None) -> None:
        self.config_path = tmp_path / "config.yaml"
        self.write(house_config_data())
        self.journal = ChangeJournal(tmp_path / "state" / "house.json")
        self.embedder = embedder or HashedEmbedder()
        self.applied: list[tuple[LabelState, ScorersOf]] = []
        self.results: list[ControlResult] = []
        self.controller = self._start(load_config(self.config_path))

    def write(self, data: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(data))

    def _start(self, config: Config) -> LabelController:
        state, changes = restore(config, self.journal)
        controller = LabelController(
            state,
            changes,
            config.source_configs,
            embed_text=self.embedder,
            logit_scale=100.0,
            apply=lambda st, sc: self.applied.append((st, sc)),
            on_result=self.results.append,
            journal=self.journal,
            max_changes=config.control.max_changes,
            load_config=lambda: load_config(self.config_path),
        )
        controller.start()
        return controller

    def restart(self) -> None:
        self.controller.stop()
        self.controller.join(5)
        self.controller = self._start(load_config(self.config_path))

    def send(self, command: dict[str, Any] | bytes) -> ControlResult:
        count = len(self.results)
        payload = command if isinstance(command, bytes) else json.dumps(command).encode()
        self.controller.submit(payload)
        wait_until(lambda: len(self.results) > count, "the answer")
        return self.results[-1]

    def reload(self) -> ControlResult:
        count = len(self.results)
        self.controller.request_reload()
        wait_until(lambda: len(self.results) > count, "the reload's answer")
        return self.results[-1]

    def scored(self, source: str) -> dict[str, tuple[str, ...]]:
        _, scorers = self.applied[-1]
        return {s.name: s.labels for s in scorers[source]}


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path)
    yield made
    made.controller.stop()


KETTLE = {
    "command": "add_label",
    "id": "k1",
    "label_set": "home",
    "name": "kettle whistling",
    "prompt": "a kettle whistling",
}


def test_an_added_label_is_embedded_swapped_in_answered_and_kept(harness: Harness) -> None:
    result = harness.send(KETTLE)
    assert result.ok and result.command == "add_label" and result.request_id == "k1"
    assert result.detail == "added 'kettle whistling' to home"
    assert harness.scored("kitchen")["home"] == ("doorbell", "kettle whistling")
    assert set(harness.scored("porch")) == {"pets"}  # the porch is not routed to home
    assert any("a kettle whistling" in call for call in harness.embedder.calls)
    views = {v.name: dict(v.thresholds) for v in result.label_sets}
    assert views["home"] == {"doorbell": 0.5, "kettle whistling": 0.5}
    # Kept: a restart starts with the kettle, without any command.
    harness.restart()
    assert [label.name for label in harness.controller.state.label_sets[2].labels] == [
        "doorbell",
        "kettle whistling",
    ]


def test_each_bad_command_is_answered_and_changes_nothing(harness: Harness) -> None:
    bad: list[dict[str, Any] | bytes] = [
        {"command": "add_label", "label_set": "garage", "name": "x"},
        {"command": "set_threshold", "label_set": "pets", "threshold": 7},
        b"{malformed",
        b"x" * 20000,
        {"command": "add_label", "label_set": "pets", "name": "bird"},  # fills pets (max 3)
        {"command": "add_label", "label_set": "pets", "name": "parrot"},
    ]
    answers = [harness.send(command) for command in bad]
    assert [a.ok for a in answers] == [False, False, False, False, True, False]
    assert "no label set named 'garage'" in answers[0].detail
    assert "threshold: Input should be less than or equal to 1" in answers[1].detail
    assert answers[2].detail.startswith("malformed JSON")
    assert answers[3].detail.startswith("payload too large")
    assert "max_labels_per_set" in answers[5].detail
    assert all("\n" not in a.detail for a in answers)
    assert len(harness.applied) == 1  # only the good one was swapped in
    assert [c.command for c in harness.journal.load()] == ["add_label"]


def test_a_failing_text_encoder_leaves_the_running_labels(tmp_path: Path) -> None:
    harness = Harness(tmp_path, HashedEmbedder(fail_on="boom"))
    try:
        result = harness.send({**KETTLE, "prompt": "boom"})
        assert not result.ok and "embedding the prompts failed" in result.detail
        assert harness.applied == [] and harness.journal.load() == []
        assert harness.send(KETTLE).ok
    finally:
        harness.controller.stop()


def test_profiles_sets_and_reset(harness: Harness) -> None:
    night = harness.send({"command": "profile", "name": "night"})
    assert night.ok and night.profile == "night"
    assert set(harness.scored("kitchen")) == {"safety"} and harness.scored("porch") == {}
    assert {v.name: v.enabled for v in night.label_sets} == {
        "safety": True,
        "pets": False,
        "home": False,
    }
    harness.send({"command": "enable_set", "label_set": "pets"})
    assert set(harness.scored("porch")) == {"pets"}
    reset = harness.send({"command": "reset"})
    assert reset.ok and reset.profile is None
    assert set(harness.scored("kitchen")) == {"safety", "pets", "home"}
    assert harness.journal.load() == []


def test_too_many_kept_changes_are_refused_until_a_reset(harness: Harness) -> None:
    for _ in range(5):  # control.max_changes: 5
        assert harness.send({"command": "disable_set", "label_set": "home"}).ok
    refused = harness.send({"command": "enable_set", "label_set": "home"})
    assert not refused.ok and "5 live changes kept (control.max_changes)" in refused.detail
    assert harness.send({"command": "show"}).ok
    assert harness.send({"command": "reset"}).ok
    assert harness.send({"command": "enable_set", "label_set": "home"}).ok


def test_a_reload_applies_the_files_labels_over_which_live_changes_stay(
    harness: Harness,
) -> None:
    harness.send(KETTLE)
    data = house_config_data()
    data["label_sets"][1]["labels"].append("bird singing")
    data["mqtt"] = {"device_id": "house", "port": 1884}  # needs a restart: only logged
    harness.write(data)
    result = harness.reload()
    assert result.ok and result.command == "reload"
    assert harness.scored("porch")["pets"] == ("dog barking", "cat meowing", "bird singing")
    assert harness.scored("kitchen")["home"] == ("doorbell", "kettle whistling")


def test_a_bad_file_is_refused_and_the_running_labels_stay(harness: Harness) -> None:
    harness.send(KETTLE)
    before = harness.controller.state
    harness.config_path.write_text("label_sets:\n  - name: pets\n    labels: []\n")
    result = harness.reload()
    assert not result.ok and result.command == "reload"
    assert str(harness.config_path) in result.detail and "\n" not in result.detail
    assert harness.controller.state is before and len(harness.applied) == 1

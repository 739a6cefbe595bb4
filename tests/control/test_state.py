"""The label state: each command gives a new, validated state, or an error and no change."""

from __future__ import annotations

import pytest

from monitor.control.commands import CommandError, parse_command
from monitor.control.state import LabelState, replay
from tests.support.labels import house_config


def apply(state: LabelState, payload: str) -> tuple[LabelState, str]:
    return state.apply(parse_command(payload.encode()))


def labels(state: LabelState, set_name: str) -> list[str]:
    return [label.name for s in state.label_sets if s.name == set_name for label in s.labels]


def test_add_remove_and_threshold_change_only_what_they_name() -> None:
    start = LabelState.of(house_config())
    added, detail = apply(
        start,
        '{"command": "add_label", "label_set": "home", "name": "kettle whistling", '
        '"prompt": "a kettle whistling on a stove", "threshold": 0.3, "device_class": "problem"}',
    )
    assert detail == "added 'kettle whistling' to home"
    assert labels(added, "home") == ["doorbell", "kettle whistling"]
    kettle = added.label_sets[2].labels[1]
    assert (kettle.prompt, kettle.threshold, kettle.device_class) == (
        ["a kettle whistling on a stove"],
        0.3,
        "problem",
    )
    assert labels(start, "home") == ["doorbell"]  # the old state is untouched
    assert added.label_sets[:2] == start.label_sets[:2]

    tuned, _ = apply(
        added,
        '{"command": "set_threshold", "label_set": "pets", "name": "Dog Barking", '
        '"threshold": 0.7}',
    )
    pets = tuned.label_sets[1]
    assert [pets.threshold_for(label) for label in pets.labels] == [0.7, 0.4]
    whole, _ = apply(tuned, '{"command": "set_threshold", "label_set": "pets", "threshold": 0.2}')
    assert [whole.label_sets[1].threshold_for(label) for label in pets.labels] == [0.7, 0.2]

    removed, detail = apply(
        whole, '{"command": "remove_label", "label_set": "safety", "name": "glass breaking"}'
    )
    assert (
        labels(removed, "safety") == ["smoke alarm"]
        and detail == "removed 'glass breaking' from safety"
    )


def test_sets_and_profiles_choose_what_each_source_is_scored_against() -> None:
    config = house_config()
    kitchen, porch = config.source_configs
    state = LabelState.of(config)
    assert [s.name for s in state.scored_sets_of(kitchen)] == ["safety", "pets", "home"]
    assert [s.name for s in state.scored_sets_of(porch)] == ["pets"]
    night, detail = apply(state, '{"command": "profile", "name": "night"}')
    assert detail == "profile night: safety" and night.profile == "night"
    assert [s.name for s in night.scored_sets_of(kitchen)] == ["safety"]
    assert night.scored_sets_of(porch) == []
    # A disabled set keeps its entities: it is still routed, only not scored.
    assert [s.name for s in night.routed_sets_of(porch)] == ["pets"]
    pets_again, _ = apply(night, '{"command": "enable_set", "label_set": "pets"}')
    assert [s.name for s in pets_again.scored_sets_of(porch)] == ["pets"]
    off, _ = apply(pets_again, '{"command": "disable_set", "label_set": "safety"}')
    assert [s.name for s in off.scored_sets_of(kitchen)] == ["pets"]
    back, detail = apply(off, '{"command": "reset"}')
    assert back == LabelState.of(config) and detail == "back to the config file"


def test_a_start_up_profile_is_the_config_files_own_state() -> None:
    state = LabelState.of(house_config(profile="night"))
    assert [s.name for s in state.scored_sets] == ["safety"] and state.profile == "night"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            '{"command": "add_label", "label_set": "garage", "name": "x"}',
            "label_set: no label set named 'garage' (have 'safety', 'pets', 'home')",
        ),
        (
            '{"command": "add_label", "label_set": "pets", "name": "DOG barking!"}',
            "pets: duplicate label 'DOG barking!' (same topic name as 'dog barking')",
        ),
        (
            '{"command": "add_label", "label_set": "pets", "name": "!!!"}',
            "label '!!!' needs at least one letter or digit",
        ),
        (
            '{"command": "add_label", "label_set": "pets", "name": "x", "prompt": " "}',
            "a prompt must not be blank",
        ),
        (
            '{"command": "remove_label", "label_set": "home", "name": "doorbell"}',
            "home: List should have at least 1 item",
        ),
        (
            '{"command": "remove_label", "label_set": "pets", "name": "parrot"}',
            "name: pets has no label 'parrot'",
        ),
        (
            '{"command": "set_threshold", "label_set": "pets", "name": "parrot", "threshold": 0.1}',
            "name: pets has no label 'parrot'",
        ),
        (
            '{"command": "profile", "name": "holiday"}',
            "name: no profile named 'holiday' (have 'day', 'night')",
        ),
        ('{"command": "enable_set", "label_set": "nope"}', "no label set named 'nope'"),
    ],
)
def test_a_command_that_cannot_apply_changes_nothing(payload: str, message: str) -> None:
    state = LabelState.of(house_config())
    before = state.label_sets
    with pytest.raises(CommandError) as caught:
        apply(state, payload)
    assert message in str(caught.value)
    assert state.label_sets == before


def test_a_full_set_refuses_another_label() -> None:
    state, _ = apply(
        LabelState.of(house_config()),
        '{"command": "add_label", "label_set": "pets", "name": "bird"}',
    )
    with pytest.raises(
        CommandError, match=r"pets has 3 labels, the most control\.max_labels_per_set allows"
    ):
        apply(state, '{"command": "add_label", "label_set": "pets", "name": "parrot"}')


def test_replay_skips_the_changes_a_new_config_file_no_longer_allows() -> None:
    commands = [
        parse_command(b'{"command": "add_label", "label_set": "home", "name": "kettle"}'),
        parse_command(b'{"command": "add_label", "label_set": "pets", "name": "parrot"}'),
    ]
    edited = house_config(
        label_sets=[
            {"name": "safety", "labels": ["smoke alarm", "x"]},
            {"name": "pets", "labels": ["dog barking", "cat meowing"]},
        ],
        profiles={},
        sources=[{"type": "microphone", "id": "kitchen"}],
    )
    state, applied, skipped = replay(LabelState.of(edited), commands)
    assert applied == commands[1:]
    assert skipped == ["add_label: label_set: no label set named 'home' (have 'safety', 'pets')"]
    assert [label.name for label in state.label_sets[1].labels][-1] == "parrot"

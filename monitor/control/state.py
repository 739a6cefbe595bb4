"""What is listened for now: the config file's label sets with the live changes applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from pydantic import ValidationError

from monitor.config import Config, LabelConfig, LabelSetConfig, SourceConfig, slugify
from monitor.control.commands import (
    AddLabel,
    Command,
    CommandError,
    DisableSet,
    EnableSet,
    RemoveLabel,
    Reset,
    SetThreshold,
    Show,
    UseProfile,
)
from monitor.frames import ControlResult, LabelSetView


@dataclass(frozen=True)
class LabelState:
    """The label sets of `config` as changed live, and which of them are scored.

    Immutable: a command gives a new state, so the running one is never half changed.
    """

    config: Config  # the config file's content (reloaded on SIGHUP)
    label_sets: tuple[LabelSetConfig, ...]  # config order
    enabled: frozenset[str]
    profile: str | None
    max_labels_per_set: int

    @classmethod
    def of(cls, config: Config) -> LabelState:
        """The config file's own state: its label sets, those of its start-up profile."""
        names = [s.name for s in config.label_sets]
        if config.profile is not None:
            names = list(config.profiles[config.profile].label_sets)
        return cls(
            config,
            tuple(config.label_sets),
            frozenset(names),
            config.profile,
            config.control.max_labels_per_set,
        )

    def routed_sets_of(self, source: SourceConfig) -> list[LabelSetConfig]:
        """The sets `source` is configured for, enabled or not (their entities stay)."""
        return source.routed(self.label_sets)

    def scored_sets_of(self, source: SourceConfig) -> list[LabelSetConfig]:
        """The sets `source`'s windows are scored against now."""
        return [s for s in self.routed_sets_of(source) if s.name in self.enabled]

    @property
    def scored_sets(self) -> list[LabelSetConfig]:
        return [s for s in self.label_sets if s.name in self.enabled]

    def apply(self, command: Command) -> tuple[LabelState, str]:
        """The state after `command` and one line saying what changed; CommandError if it
        cannot be applied (this state is then unchanged: it is immutable)."""
        if isinstance(command, Show):
            return self, "no change"
        if isinstance(command, Reset):
            return LabelState.of(self.config), "back to the config file"
        if isinstance(command, UseProfile):
            profiles = self.config.profiles
            if command.name not in profiles:
                have = ", ".join(map(repr, profiles)) or "none defined"
                raise CommandError(f"name: no profile named {command.name!r} (have {have})")
            chosen = frozenset(profiles[command.name].label_sets)
            state = replace(self, enabled=chosen, profile=command.name)
            return state, f"profile {command.name}: {', '.join(sorted(chosen))}"
        current = self._set(command.label_set)
        if isinstance(command, EnableSet):
            return replace(self, enabled=self.enabled | {current.name}), f"enabled {current.name}"
        if isinstance(command, DisableSet):
            if current.name not in self.enabled:
                return self, f"{current.name} was already disabled"
            return replace(self, enabled=self.enabled - {current.name}), f"disabled {current.name}"
        if isinstance(command, AddLabel):
            return self._add(current, command)
        if isinstance(command, RemoveLabel):
            label = _label(current, command.name)
            kept = [item for item in current.labels if item is not label]
            changed = self._replace(current, labels=[item.model_dump() for item in kept])
            return changed, f"removed {label.name!r} from {current.name}"
        assert isinstance(command, SetThreshold)
        if command.name is None:
            changed = self._replace(current, threshold=command.threshold)
            return changed, f"{current.name} threshold {command.threshold:g}"
        label = _label(current, command.name)
        labels = [
            {**item.model_dump(), "threshold": command.threshold}
            if item is label
            else item.model_dump()
            for item in current.labels
        ]
        changed = self._replace(current, labels=labels)
        return changed, f"{current.name}/{label.name} threshold {command.threshold:g}"

    def _add(self, current: LabelSetConfig, command: AddLabel) -> tuple[LabelState, str]:
        if len(current.labels) >= self.max_labels_per_set:
            raise CommandError(
                f"label_set: {current.name} has {len(current.labels)} labels, the most "
                f"control.max_labels_per_set allows"
            )
        new: dict[str, object] = {"name": command.name, "device_class": command.device_class}
        if command.prompt is not None:
            new["prompt"] = command.prompt
        if command.threshold is not None:
            new["threshold"] = command.threshold
        changed = self._replace(current, labels=[*(x.model_dump() for x in current.labels), new])
        return changed, f"added {command.name!r} to {current.name}"

    def _set(self, name: str) -> LabelSetConfig:
        for label_set in self.label_sets:
            if label_set.name == name:
                return label_set
        have = ", ".join(repr(s.name) for s in self.label_sets)
        raise CommandError(f"label_set: no label set named {name!r} (have {have})")

    def _replace(self, current: LabelSetConfig, **changes: object) -> LabelState:
        """The state with one set rebuilt and validated as the config file's sets are."""
        try:
            rebuilt = LabelSetConfig.model_validate({**current.model_dump(), **changes})
        except ValidationError as err:
            first = err.errors()[0]
            raise CommandError(
                f"{current.name}: {str(first['msg']).removeprefix('Value error, ')}"
            ) from None
        sets = tuple(rebuilt if s is current else s for s in self.label_sets)
        return replace(self, label_sets=sets)

    def views(self) -> tuple[LabelSetView, ...]:
        return tuple(
            LabelSetView(
                s.name,
                s.name in self.enabled,
                tuple((label.name, s.threshold_for(label)) for label in s.labels),
            )
            for s in self.label_sets
        )

    def result(
        self, command: str, ok: bool, detail: str, request_id: str | None, now: datetime
    ) -> ControlResult:
        return ControlResult(command, ok, detail, request_id, now, self.profile, self.views())


def _label(label_set: LabelSetConfig, name: str) -> LabelConfig:
    slug = slugify(name)
    for label in label_set.labels:
        if label.slug == slug:
            return label
    raise CommandError(f"name: {label_set.name} has no label {name!r}")


def replay(
    state: LabelState, commands: Sequence[Command]
) -> tuple[LabelState, list[Command], list[str]]:
    """`commands` applied in order: the state, the commands that applied, and one line for
    each that no longer does (the config file changed under it) and was skipped."""
    applied: list[Command] = []
    skipped = []
    for command in commands:
        try:
            state, _ = state.apply(command)
        except CommandError as err:
            skipped.append(f"{command.command}: {err}")
        else:
            applied.append(command)
    return state, applied, skipped

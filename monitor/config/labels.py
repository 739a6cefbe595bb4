"""`label_sets:`: free-text labels, their prompts, thresholds and background labels."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from monitor.config.base import StrictModel, check_slug, slugify

DEFAULT_PROMPT_TEMPLATE = "This is a sound of {}."


# Home Assistant's binary_sensor device classes that can mean "a sound was heard".
BinarySensorClass = Literal[
    "sound",
    "safety",
    "smoke",
    "gas",
    "carbon_monoxide",
    "moisture",
    "problem",
    "vibration",
    "occupancy",
    "presence",
    "motion",
    "door",
    "window",
    "opening",
    "tamper",
    "running",
]


class LabelConfig(StrictModel):
    """One free-text label of a label set."""

    name: str = Field(min_length=1, description="The label as published, e.g. 'glass breaking'.")
    prompt: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Own text prompt, or several (a prompt ensemble, averaged); None = the set's "
            "prompt_template(s) filled with the name."
        ),
    )
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Own detection threshold; None = the set's."
    )
    device_class: BinarySensorClass = Field(
        default="sound",
        description="Home Assistant device class of this label's binary_sensor (discovery).",
    )

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("prompt")
    @classmethod
    def _prompts_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not p.strip() for p in value):
            raise ValueError("a prompt must not be blank")
        return value

    @field_validator("name")
    @classmethod
    def _name_has_slug(cls, value: str) -> str:
        if not slugify(value):
            raise ValueError(f"label {value!r} needs at least one letter or digit")
        return value


ScoringMode = Literal["softmax", "absolute"]


class LabelSetConfig(StrictModel):
    """Labels scored together against the same window."""

    name: str = Field(description="Set name, used in MQTT topics.")
    mode: ScoringMode = Field(
        default="softmax",
        description=(
            "softmax: a label's score is its share of the softmax over the set (labels and "
            "background); absolute: it depends only on the label's own similarity (its margin "
            "over the best background prompt when the set has background prompts)."
        ),
    )
    prompt_template: list[str] = Field(
        default=[DEFAULT_PROMPT_TEMPLATE],
        min_length=1,
        description=(
            "Prompt for each label, '{}' replaced by the label name; a list of templates is "
            "a prompt ensemble (their text embeddings are averaged)."
        ),
    )
    threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Default detection threshold of the set's labels."
    )
    labels: list[LabelConfig] = Field(min_length=1, description="The labels to detect.")
    background: list[str] = Field(
        default=[],
        description=(
            "Background labels (e.g. 'silence', 'people talking'): scored with the same "
            "templates, part of the softmax, never detected."
        ),
    )

    _check_name = field_validator("name")(lambda v: check_slug(v, "label set name"))

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_from_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("prompt_template", mode="before")
    @classmethod
    def _template_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("prompt_template")
    @classmethod
    def _template_has_one_slot(cls, value: list[str]) -> list[str]:
        for template in value:
            if template.count("{}") != 1:
                raise ValueError(f"prompt_template {template!r} must contain '{{}}' exactly once")
        return value

    @model_validator(mode="after")
    def _background_apart(self) -> LabelSetConfig:
        slugs = {label.slug for label in self.labels}
        for name in self.background:
            if not slugify(name):
                raise ValueError(f"background {name!r} needs at least one letter or digit")
            if slugify(name) in slugs:
                raise ValueError(f"background {name!r} is also a label")
        if self.mode == "softmax" and len(self.labels) + len(self.background) < 2:
            raise ValueError(
                "a softmax set needs at least two labels or background labels "
                "(the softmax over one label is always 1)"
            )
        return self

    @field_validator("labels", mode="after")
    @classmethod
    def _labels_unique(cls, labels: list[LabelConfig]) -> list[LabelConfig]:
        seen: dict[str, str] = {}
        for label in labels:
            if label.slug in seen:
                raise ValueError(
                    f"duplicate label {label.name!r} (same topic name as {seen[label.slug]!r})"
                )
            seen[label.slug] = label.name
        return labels

    def prompts_for(self, label: LabelConfig) -> list[str]:
        """The prompt(s) of a label: its own, else the set's template(s) filled in."""
        if label.prompt is not None:
            return list(label.prompt)
        return self.background_prompts(label.name)

    def background_prompts(self, name: str) -> list[str]:
        """The set's template(s) filled with `name`."""
        return [template.format(name) for template in self.prompt_template]

    def threshold_for(self, label: LabelConfig) -> float:
        return label.threshold if label.threshold is not None else self.threshold

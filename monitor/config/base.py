"""The strict base of every config section, and the name rules the sections share."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_SLUG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class StrictModel(BaseModel):
    """A frozen section that rejects unknown keys, so a typo fails instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def slugify(text: str) -> str:
    """Turn a free-text label into a topic-safe name: lower case, runs of other chars -> '_'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def looks_like_path(name: str) -> bool:
    """Whether a model or dataset name can only mean a local directory.

    A hub id is "name" or "owner/name"; anything else is meant as a path.
    """
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def check_slug(value: str, what: str) -> str:
    """`value` unchanged when it can be an MQTT topic level; ValueError naming `what` if not."""
    if not _SLUG_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and contain only "
            "letters, digits, '_' and '-' (it becomes part of MQTT topics)"
        )
    return value

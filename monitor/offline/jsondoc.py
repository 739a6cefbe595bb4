"""Dataclass results as the offline commands' JSON documents."""

from __future__ import annotations

import json
import keyword
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

DictFactory = Callable[[list[tuple[str, Any]]], dict[str, Any]]


def _json_key(name: str, renames: Mapping[str, str]) -> str:
    if name in renames:
        return renames[name]
    # PEP 8 spells a field named after a keyword with a trailing '_'; JSON keeps the keyword.
    if name.endswith("_") and keyword.iskeyword(name[:-1]):
        return name[:-1]
    return name


def _dict_factory(renames: Mapping[str, str]) -> DictFactory:
    def build(fields: list[tuple[str, Any]]) -> dict[str, Any]:
        return {
            _json_key(name, renames): str(value) if isinstance(value, PurePath) else value
            for name, value in fields
        }

    return build


def as_json(result: DataclassInstance, renames: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`dataclasses.asdict` of a result, JSON-ready: paths as strings, fields renamed.

    Nested dataclasses, lists, tuples and dicts are converted too (tuples serialise as
    lists); `renames` maps a field name to its key in every nested dataclass.
    """
    return asdict(result, dict_factory=_dict_factory(renames or {}))


def json_text(document: Any) -> str:
    """The document as indented UTF-8 JSON text, ending with a newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"

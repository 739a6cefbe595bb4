"""Reading a config file: YAML safety limits, one-line errors, parse_config/load_config."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from monitor.config.root import Config
from monitor.config.source import SOURCE_TYPES
from monitor.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024
# A real config has a handful of anchors at most; a YAML "billion laughs" needs many.
MAX_YAML_ALIASES = 100


def _in_sources(loc: tuple[int | str, ...], i: int) -> bool:
    return i > 1 and isinstance(loc[i - 1], int) and loc[i - 2] == "sources"


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif i > 0 and item in SOURCE_TYPES and (loc[i - 1] == "source" or _in_sources(loc, i)):
            continue  # the discriminated union's tag, not a key the user wrote
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def _format_validation_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    where = _format_location(tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        what = "unknown key"
    elif first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        where += ".type"
        what = "expected one of " + ", ".join(map(repr, SOURCE_TYPES))
        if first["type"] == "union_tag_invalid":
            what += f" (got {first['ctx']['tag']!r})"
    elif first["type"] == "missing":
        what = "required key is missing"
    else:
        what = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] != "value_error":
            shown = repr(first.get("input"))
            what += f" (got {shown[:60]})"
    more = len(err.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    if not first["loc"] and first["type"] == "value_error":
        # A check across sections: its message names the keys itself.
        return f"{path}: {what}{suffix}"
    return f"{path}: {where}: {what}{suffix}"


def _count_aliases(text: str) -> int:
    return sum(isinstance(tok, yaml.AliasToken) for tok in yaml.scan(text, Loader=yaml.SafeLoader))


def parse_config(text: str, path: Path, *, require_source: bool = True) -> Config:
    """Validate YAML text into a Config; `path` only names the source in errors.

    `require_source=False` is for the offline commands, which read label sets and the model
    from a config but bring their own audio.
    """
    try:
        if _count_aliases(text) > MAX_YAML_ALIASES:
            raise ConfigError(f"{path}: too many YAML aliases (more than {MAX_YAML_ALIASES})")
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error at {where}: {problem}") from err
    except RecursionError as err:
        raise ConfigError(f"{path}: YAML nested too deeply") from err
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {kind}")
    try:
        config = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(path, err)) from err
    except RecursionError as err:
        raise ConfigError(f"{path}: configuration nested too deeply") from err
    if require_source and not config.source_configs:
        raise ConfigError(f"{path}: sources: required key is missing (or a single source:)")
    return config


def load_config(path: str | Path, *, require_source: bool = True) -> Config:
    """Read and validate a config file; raises ConfigError with a one-line message."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, expected a YAML file")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: file is {size} bytes, more than {MAX_CONFIG_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: no such file") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from err
    return parse_config(text, path, require_source=require_source)

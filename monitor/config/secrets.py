"""Secrets the config points at: password files (systemd credentials) and URLs shown redacted."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from monitor.errors import ConfigError

REDACTED = "***"
# user:password@ in any URL-looking text (ffmpeg's own messages repeat the URL it was given).
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***, user name kept (it helps and is not secret)."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        has_password = False
    if not has_password and "@" not in url:
        return url
    return redact_text(url)


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with the password of every URL in it, and each of `secrets`, replaced by ***."""

    def _userinfo(match: re.Match[str]) -> str:
        user = match.group("userinfo").split(":", 1)[0]
        return f"{match.group('scheme')}{user}:{REDACTED}@"

    text = _USERINFO_RE.sub(_userinfo, text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def resolve_password_path(path: Path, environ: Mapping[str, str] | None = None) -> Path:
    """`path`, or $CREDENTIALS_DIRECTORY/`path` for a relative name under systemd credentials."""
    env = os.environ if environ is None else environ
    path = path.expanduser()
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials and not path.is_absolute():
        return Path(credentials) / path
    return path


def read_password(
    path: Path, environ: Mapping[str, str] | None = None, *, what: str = "mqtt.password_file"
) -> str:
    """The password stored in `path` (see resolve_password_path), without its trailing newline;
    ConfigError naming `what` when it cannot be read or is empty."""
    path = resolve_password_path(path, environ)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what}: cannot read {path}: not UTF-8 text") from err
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(f"{what}: cannot read {path}: {reason}") from err
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise ConfigError(f"{what}: {path} is empty")
    return password

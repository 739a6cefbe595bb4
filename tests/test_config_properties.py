"""Property-based: config parsing raises nothing but ConfigError, whatever the input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import Config, parse_config
from monitor.errors import ConfigError

# Hundreds of generated configs per test: seconds each.
pytestmark = pytest.mark.slow

KEYS = [
    "model", "name", "source", "type", "microphone", "file", "path", "device", "window",
    "seconds", "hop_seconds", "label_sets", "labels", "threshold", "prompt", "prompt_template",
    "background", "mode", "softmax", "absolute", "events", "cooldown_seconds", "mqtt", "port",
    "tls", "outbox", "health", "output", "json_lines", "log_level", "id", "buffer_seconds",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
    | st.text(max_size=20)
    | st.sampled_from(KEYS)
)
yaml_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)

PATH = Path("fuzz.yaml")


def parse(text: str) -> None:
    try:
        result = parse_config(text, PATH)
    except ConfigError as err:
        message = str(err)
        assert message.startswith(str(PATH))
        assert "\n" not in message
    else:
        assert isinstance(result, Config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_arbitrary_text_gives_config_or_config_error(text: str) -> None:
    parse(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_values)
def test_yaml_shaped_input_gives_config_or_config_error(value: Any) -> None:
    parse(yaml.safe_dump(value))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "source": st.fixed_dictionaries(
                {"type": st.sampled_from(["file", "microphone", "x"])},
                optional={"path": scalars, "device": scalars, "buffer_seconds": scalars},
            ),
            "label_sets": st.lists(
                st.fixed_dictionaries(
                    {"name": scalars, "labels": st.lists(scalars, max_size=4)},
                    optional={"threshold": scalars, "mode": scalars, "background": yaml_values},
                ),
                max_size=3,
            ),
        },
        optional={"window": st.dictionaries(st.sampled_from(["seconds", "hop_seconds"]), scalars)},
    )
)
def test_nearly_valid_configs_give_config_or_config_error(value: dict[str, Any]) -> None:
    parse(yaml.safe_dump(value))

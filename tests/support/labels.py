"""A small two-room configuration with label sets and profiles, for the label control tests."""

from __future__ import annotations

from typing import Any

from monitor.config import Config


def house_config_data(**overrides: Any) -> dict[str, Any]:
    """Two microphones (the porch hears pets only), three label sets, day and night profiles."""
    data: dict[str, Any] = {
        "sources": [
            {"type": "microphone", "id": "kitchen"},
            {"type": "microphone", "id": "porch", "label_sets": ["pets"]},
        ],
        "label_sets": [
            {"name": "safety", "mode": "absolute", "labels": ["smoke alarm", "glass breaking"]},
            {"name": "pets", "threshold": 0.4, "labels": ["dog barking", "cat meowing"]},
            {"name": "home", "mode": "absolute", "labels": ["doorbell"]},
        ],
        "profiles": {
            "day": {"label_sets": ["safety", "pets", "home"]},
            "night": {"label_sets": ["safety"]},
        },
        "control": {"enabled": True, "max_labels_per_set": 3, "max_changes": 5},
        "mqtt": {"device_id": "house"},
    }
    data.update(overrides)
    return data


def house_config(**overrides: Any) -> Config:
    return Config.model_validate(house_config_data(**overrides))

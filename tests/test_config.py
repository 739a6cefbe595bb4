"""Config validation: good files load, each kind of broken file fails in one line naming the key."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from monitor.config import Config, LabelSetConfig, load_config, parse_config
from monitor.errors import EXIT_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "configs" / "example.yaml"

GOOD = """
source: {type: file, path: clip.wav}
label_sets:
  - name: safety
    labels: [glass breaking, {name: smoke alarm, prompt: "beeping smoke alarm", threshold: 0.3}]
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert [s.type for s in config.source_configs] == ["microphone"]
    assert config.per_source_topics
    assert [s.name for s in config.label_sets] == ["safety", "household"]


def _field_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            for inner in [arg, *typing.get_args(arg)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    names |= _field_names(inner)
    return names


def test_example_config_documents_every_option() -> None:
    text = EXAMPLE.read_text()
    from monitor.config import (
        FileSourceConfig,
        LabelConfig,
        MicrophoneSourceConfig,
        StreamSourceConfig,
    )

    names = (
        _field_names(Config)
        | _field_names(MicrophoneSourceConfig)
        | _field_names(FileSourceConfig)
        | _field_names(StreamSourceConfig)
        | _field_names(LabelSetConfig)
        | _field_names(LabelConfig)
    )
    missing = sorted(n for n in names if f"{n}:" not in text)
    assert missing == []


def test_every_field_has_a_description() -> None:
    import monitor.config as mc

    # Every module of the package, so private bases (e.g. a source's common fields) count too.
    modules = [
        importlib.import_module(f"{mc.__name__}.{info.name}")
        for info in pkgutil.iter_modules(mc.__path__)
    ]
    models = {
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == module.__name__
    }
    assert {"Config", "ModelConfig", "MqttConfig", "_SourceCommon"} <= {m.__name__ for m in models}
    undocumented = [
        f"{m.__name__}.{name}"
        for m in models
        for name, field in m.model_fields.items()
        if not field.description
    ]
    assert undocumented == []


def test_one_source_and_a_list_of_sources() -> None:
    one = parse_config(GOOD, Path("c.yaml"))
    assert [s.id for s in one.source_configs] == ["file"]
    assert not one.per_source_topics  # today's topics for today's configs
    many = parse_config(
        "label_sets: [{name: safety, labels: [x, y]}, {name: pets, labels: [dog, cat]}]\n"
        + "sources:\n"
        + "  - {type: file, id: kitchen, path: k.wav}\n"
        + "  - {type: stream, id: porch, url: 'rtsp://cam.lan/live', label_sets: [pets]}\n",
        Path("c.yaml"),
    )
    assert [s.id for s in many.source_configs] == ["kitchen", "porch"]
    assert many.per_source_topics
    kitchen, porch = many.source_configs
    assert [s.name for s in many.label_sets_of(kitchen)] == ["safety", "pets"]
    assert [s.name for s in many.label_sets_of(porch)] == ["pets"]


def test_a_password_in_a_stream_url_never_reaches_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(SETS + "sources: [{type: stream, url: 'gopher://admin:hunter2@cam/live'}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "hunter2" not in str(info.value)
    assert "gopher://admin:***@cam/live" in str(info.value)


def test_a_stream_takes_its_user_name_in_one_place() -> None:
    with pytest.raises(ConfigError, match="already holds a user name"):
        parse_config(
            SETS
            + "sources: [{type: stream, url: 'rtsp://u@cam/live', username: v, "
            + "password_file: pw}]\n",
            Path("c.yaml"),
        )


def test_defaults_and_label_shorthand() -> None:
    config = parse_config(GOOD, Path("c.yaml"))
    safety = config.label_sets[0]
    assert [label.name for label in safety.labels] == ["glass breaking", "smoke alarm"]
    assert safety.prompts_for(safety.labels[0]) == ["This is a sound of glass breaking."]
    assert safety.prompts_for(safety.labels[1]) == ["beeping smoke alarm"]
    assert safety.threshold_for(safety.labels[0]) == 0.5
    assert safety.threshold_for(safety.labels[1]) == 0.3
    assert config.mqtt.qos == 1
    assert config.window.seconds <= 10


SETS = "label_sets: [{name: safety, labels: [x, y]}]\n"

BROKEN = {
    "syntax error": ("source: {type: file, path: x.wav\nlabel_sets: []\n", "line 2"),
    "unknown key": (GOOD + "colour: blue\n", "colour: unknown key"),
    "unknown nested key": (
        GOOD.replace("path: clip.wav", "path: clip.wav, speed: 2"),
        "source.speed: unknown key",
    ),
    "threshold 1.5": (
        GOOD.replace("threshold: 0.3", "threshold: 1.5"),
        "label_sets[0].labels[1].threshold",
    ),
    "empty label set": (
        "source: {type: file, path: x.wav}\nlabel_sets: [{name: a, labels: []}]\n",
        "label_sets[0].labels",
    ),
    "duplicate label": (
        "source: {type: file, path: x.wav}\nlabel_sets: [{name: a, labels: [dog, Dog]}]\n",
        "label_sets[0].labels: duplicate label 'Dog'",
    ),
    "window 12 s": (GOOD + "window: {seconds: 12}\n", "window.seconds"),
    "wrong type": (GOOD + "mqtt: {port: eighty}\n", "mqtt.port"),
    "bad source type": (GOOD.replace("type: file", "type: radio"), "source.type"),
    "template without slot": (
        GOOD.replace("- name: safety", "- name: safety\n    prompt_template: a sound"),
        "label_sets[0].prompt_template",
    ),
    "duplicate source ids": (
        SETS + "sources: [{type: file, id: a, path: x.wav}, {type: file, id: a, path: y.wav}]\n",
        "sources: duplicate source id(s): a",
    ),
    "unknown label set of a source": (
        SETS + "sources: [{type: file, path: x.wav, label_sets: [safety, pets]}]\n",
        "sources[0] (file).label_sets: no label set named 'pets'",
    ),
    "unsupported url scheme": (
        SETS + "sources: [{type: stream, url: 'gopher://cam/live'}]\n",
        "sources[0].url: url 'gopher://cam/live': scheme 'gopher'; expected one of rtsp",
    ),
    "url without host": (
        SETS + "sources: [{type: stream, url: 'rtsp:///live'}]\n",
        "sources[0].url: url 'rtsp:///live': no host name",
    ),
    "url with a bad port": (
        SETS + "sources: [{type: stream, url: 'rtsp://cam:http/live'}]\n",
        "the port is not a number",
    ),
    "stream type missing url": (SETS + "sources: [{type: stream}]\n", "sources[0].url"),
    "bad type in sources": (SETS + "sources: [{type: radio}]\n", "sources[0].type"),
    "source and sources": (
        GOOD + "sources: [{type: file, path: y.wav}]\n",
        "either source: (one) or sources: (a list)",
    ),
    "flat topics for two sources": (
        SETS
        + "sources: [{type: file, id: a, path: x.wav}, {type: file, id: b, path: y.wav}]\n"
        + "mqtt: {topic_layout: flat}\n",
        "mqtt.topic_layout: flat topics cannot tell several sources apart",
    ),
    "empty sources": (SETS + "sources: []\n", "sources"),
    "missing source": ("label_sets: [{name: a, labels: [x, y]}]\n", "sources: required key"),
    "not a mapping": ("- just\n- a list\n", "top level"),
    "empty file": ("", "top level"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_fails_in_one_line(case: str, tmp_path: Path) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


@pytest.mark.slow
@pytest.mark.parametrize("case", ["threshold 1.5", "duplicate label", "window 12 s"])
def test_check_config_cli_exit_78(case: str, tmp_path: Path) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    result = cli("check-config", str(path))
    assert result.returncode == EXIT_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_check_config_cli_missing_file(tmp_path: Path) -> None:
    result = cli("check-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip() == f"audio-monitor: error: {tmp_path / 'nope.yaml'}: no such file"


@pytest.mark.slow
def test_check_config_cli_accepts_example() -> None:
    result = cli("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.slow
def test_run_refuses_bad_config_before_opening_anything(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    # A valid shape pointing at a broker port nothing listens on, but one bad value: the run
    # must stop at validation, exit 78, and never try the model, device or broker.
    path.write_text(GOOD + "mqtt: {port: 1}\nwindow: {seconds: 0}\n")
    result = cli("run", "--config", str(path))
    assert result.returncode == EXIT_CONFIG
    assert "window.seconds" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_directory_and_oversized_files_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="bytes"):
        load_config(big)


def test_alias_bomb_rejected_fast(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 15)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_config(bomb)


def test_password_file_needs_username() -> None:
    with pytest.raises(ConfigError, match=r"mqtt: password_file needs a username"):
        parse_config(GOOD + "mqtt: {password_file: /run/secret}\n", Path("c.yaml"))


def test_buffer_must_hold_a_window() -> None:
    text = GOOD.replace("path: clip.wav", "path: clip.wav, buffer_seconds: 4") + (
        "window: {seconds: 5}\n"
    )
    with pytest.raises(ConfigError, match="buffer_seconds"):
        parse_config(text, Path("c.yaml"))


@pytest.mark.parametrize(
    ("source", "live", "lossless"),
    [
        ({"type": "microphone"}, True, False),
        ({"type": "file", "path": "a.wav"}, False, False),
        ({"type": "file", "path": "a.wav", "realtime": False}, False, True),
    ],
)
def test_source_config_answers_live_and_lossless(
    source: dict[str, object], live: bool, lossless: bool
) -> None:
    cfg = Config.model_validate(
        {"source": source, "label_sets": [{"name": "s", "labels": ["x", "y"]}]}
    )
    assert cfg.source is not None
    assert (cfg.source.live, cfg.source.lossless) == (live, lossless)

"""`audio-monitor listen`: the config it runs (never publishing), the terminal view, and the
command itself on a pseudo-terminal and on a pipe with the tiny checkpoint."""

from __future__ import annotations

import io
import itertools
import os
import re
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import build_parser
from monitor.config import Config, load_config
from monitor.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from monitor.listen import command
from monitor.listen.command import TerminalView, listen_config
from tests.support.audio import write_clip
from tests.support.processes import REPO_ROOT, monitor_command
from tests.support.scores import T0, window_scores
from tests.support.terminal import PseudoTerminal
from tests.support.waiting import wait_until

CURSOR_UP = re.compile(r"\x1b\[(\d+)A")


def write_config(tmp_path: Path, **extra: Any) -> Path:
    config: dict[str, Any] = {
        "model": {"precision": "fp32", "name": "some/checkpoint"},
        "sources": [
            {
                "type": "file",
                "id": "garden",
                "path": str(tmp_path / "a.wav"),
                "label_sets": ["pets"],
            },
            {"type": "microphone", "id": "hall"},
        ],
        "label_sets": [
            {"name": "pets", "labels": ["dog barking", "cat meowing"]},
            {"name": "home", "labels": ["doorbell", "smoke alarm"]},
        ],
        "mqtt": {"enabled": True, "host": "broker.lan"},
        "homeassistant": {"enabled": True},
        "output": {"json_lines": True},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def config_for(argv: Sequence[str]) -> Config:
    args = build_parser().parse_args(["listen", *argv])
    config = load_config(args.config, require_source=False) if args.config else None
    return listen_config(args, config)


# ---------------------------------------------------------------------------------------------
# The config listen runs


def test_listen_never_publishes_whatever_the_config_says(tmp_path: Path) -> None:
    config = config_for(["--config", str(write_config(tmp_path))])
    assert config.mqtt.enabled is False
    assert config.homeassistant.enabled is False
    assert config.output.json_lines is False
    assert config.scores.enabled is True  # what the view is drawn from
    assert [s.id for s in config.source_configs] == ["garden", "hall"]
    assert [s.name for s in config.label_sets] == ["pets", "home"]
    assert config.model.name == "some/checkpoint"


def test_without_a_config_it_listens_to_the_default_microphone_with_the_default_model() -> None:
    config = config_for(["--labels", "dog barking", "siren"])
    (source,) = config.source_configs
    assert source.type == "microphone" and source.device is None
    assert config.model.name == "laion/clap-htsat-unfused"
    assert config.mqtt.enabled is False and config.output.json_lines is False
    assert config_for(["--labels", "x", "--model", "/opt/tiny"]).model.name == "/opt/tiny"


def test_labels_replace_the_label_sets_by_one_absolute_set(tmp_path: Path) -> None:
    config = config_for(
        ["--config", str(write_config(tmp_path)), "--labels", "dog barking", "siren"]
    )
    (label_set,) = config.label_sets
    assert label_set.mode == "absolute"
    assert [label.name for label in label_set.labels] == ["dog barking", "siren"]
    # The config's set names are gone, so every source is scored against the one set.
    assert all(s.label_sets is None for s in config.source_configs)
    assert all(config.label_sets_of(s) == [label_set] for s in config.source_configs)


def test_a_config_without_sources_gets_the_default_microphone(tmp_path: Path) -> None:
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump({"label_sets": [{"name": "s", "labels": ["a", "b"]}]}))
    (source,) = config_for(["--config", str(path)]).source_configs
    assert source.type == "microphone"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to listen for"),
        (["--labels", "a", "--top", "0"], "--top: must be at least 1"),
        (["--labels", "a", "a"], "--labels"),
    ],
)
def test_bad_flags_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_for(argv)


def test_templates_are_only_for_ad_hoc_labels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only for --labels"):
        config_for(["--config", str(write_config(tmp_path)), "--template", "a {}"])


# ---------------------------------------------------------------------------------------------
# The view as an output


class FakeTty(io.StringIO):
    """A text stream that says it is a terminal (the ANSI path without a pseudo-terminal)."""

    def isatty(self) -> bool:
        return True


def view(out: io.StringIO, *, tty: bool, interval_seconds: float = 0.0) -> TerminalView:
    return TerminalView(
        "title",
        ["garden", "hall"],
        2,
        out,
        tty=tty,
        interval_seconds=interval_seconds,
        terminal_size=lambda: (60, 40),
    )


def test_on_a_terminal_each_redraw_goes_back_over_the_previous_one() -> None:
    out = FakeTty()
    shown = view(out, tty=True)
    shown.start()
    try:
        assert "garden  waiting for the first window…" in out.getvalue()
        shown.publish_scores(window_scores("garden", {"pets": {"dog": 0.6, "cat": 0.2}}))
        wait_until(lambda: "dog" in out.getvalue(), "the first scores drawn")
        shown.publish_scores(
            window_scores("hall", {"home": {"bell": 0.3}}, end=T0 + timedelta(seconds=1))
        )
        wait_until(lambda: "bell" in out.getvalue(), "the second source drawn")
    finally:
        shown.stop(2.0)
    screens = out.getvalue().split("\r")[1:]
    assert len(screens) >= 4  # the start, two updates and the last one at stop
    for before, after in itertools.pairwise(screens):
        # Each screen starts by going up over every line the previous one drew.
        up = CURSOR_UP.match(after)
        assert up is not None and int(up.group(1)) == before.count("\n")
        assert after[up.end() :].startswith("\x1b[J")
    assert out.getvalue().endswith("\n")  # the cursor is left on a fresh line


def test_redraws_are_throttled_and_the_latest_scores_win() -> None:
    out = FakeTty()
    shown = view(out, tty=True, interval_seconds=0.5)
    shown.start()
    try:
        for step in range(20):
            shown.publish_scores(window_scores("garden", {"pets": {"dog": step / 100}}))
    finally:
        shown.stop(2.0)
    assert out.getvalue().count("title") <= 4  # start, at most two redraws, stop
    assert "dog  0.190" in out.getvalue().split("\r")[-1]


def test_the_worker_only_hands_scores_over_and_the_ranking_is_done_when_drawing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ranked: list[str] = []
    real = command.source_view

    def counting(scores: Any, top_k: int) -> Any:
        ranked.append(threading.current_thread().name)
        return real(scores, top_k)

    monkeypatch.setattr(command, "source_view", counting)
    out = io.StringIO()
    shown = view(out, tty=False, interval_seconds=0.5)
    shown.start()
    try:
        for step in range(50):  # the worker's side: 50 windows between two draws
            shown.publish_scores(window_scores("garden", {"pets": {"dog": step / 100}}))
        assert not ranked or set(ranked) == {"listen-view"}
    finally:
        shown.stop(2.0)
    assert len(ranked) <= 3  # once per draw (at most two in the half second, one at stop)
    assert out.getvalue().splitlines()[-1].endswith("pets: dog 0.490")


def test_without_a_terminal_each_update_is_one_plain_line() -> None:
    out = io.StringIO()
    shown = view(out, tty=False)
    shown.start()
    try:
        shown.publish_scores(window_scores("garden", {"pets": {"dog": 0.6, "cat": 0.2}}))
        wait_until(lambda: out.getvalue().count("\n") == 1, "one line")
        shown.publish_scores(window_scores("hall", {"home": {"bell": 0.3}}))
        wait_until(lambda: out.getvalue().count("\n") == 2, "two lines")
    finally:
        shown.stop(2.0)
    assert out.getvalue().splitlines() == [
        "2026-03-01T12:00:00Z garden -20.0 dBFS | pets: dog 0.600, cat 0.200",
        "2026-03-01T12:00:00Z hall -20.0 dBFS | home: bell 0.300",
    ]


def test_the_view_is_shown_before_the_model_loads_and_not_at_all_when_never_shown() -> None:
    out = FakeTty()
    shown = view(out, tty=True)
    shown.show()  # what listen does before the daemon loads the model
    assert out.getvalue().count("waiting for the first window…") == 2
    never = FakeTty()
    view(never, tty=True).stop(1.0)  # a build that failed before the outputs started
    assert never.getvalue() == ""


class ClosedPipe(io.StringIO):
    """stdout whose reader has gone (`listen | head -3` once head has its lines)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stdout_stops_drawing_and_says_so_once() -> None:
    closed: list[bool] = []
    shown = view(ClosedPipe(), tty=False)
    shown.on_closed = lambda: closed.append(True)
    shown.start()
    try:
        shown.publish_scores(window_scores("garden", {"pets": {"dog": 0.6}}))
        wait_until(lambda: closed == [True], "on_closed")
        shown.publish_scores(window_scores("garden", {"pets": {"dog": 0.7}}))
    finally:
        shown.stop(2.0)
    assert closed == [True]


# ---------------------------------------------------------------------------------------------
# The command, on the tiny checkpoint


def file_config(tmp_path: Path, model_dir: Path) -> Path:
    clip = write_clip(tmp_path / "garden.wav", seconds=3.0, rate_hz=16000, channels=1)
    return write_config(
        tmp_path,
        model={"precision": "fp32", "name": str(model_dir), "torch_threads": 1},
        sources=[{"type": "file", "id": "garden", "path": str(clip), "loop": True}],
        window={"seconds": 1.0, "hop_seconds": 0.25},
    )


def listen_argv(config: Path) -> list[str]:
    return [
        *monitor_command(),
        "listen",
        "--config",
        str(config),
        "--labels",
        "dog barking",
        "siren",
        "--top",
        "2",
    ]


def child_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}


def test_listen_draws_in_place_on_a_terminal_and_stops_on_ctrl_c(
    tmp_path: Path, tiny_clap_dir: Path
) -> None:
    terminal = PseudoTerminal(listen_argv(file_config(tmp_path, tiny_clap_dir)), env=child_env())
    try:
        terminal.wait_for("siren", count=3)
        terminal.proc.send_signal(signal.SIGINT)
        assert terminal.proc.wait(10) == EXIT_OK, terminal.stderr()
        output, errors = terminal.output(), terminal.stderr()
    finally:
        terminal.close()
    assert "garden" in output
    assert re.search(r"dog barking +0\.\d{3} [█░]{10}", output), output
    assert re.search(r"siren +0\.\d{3} [█░]{10}", output), output
    assert len(CURSOR_UP.findall(output)) >= 3  # redrawn in place, not scrolled
    assert output.count("\x1b[J") >= 3
    assert output.endswith("\n")  # the shell prompt comes on a fresh line
    assert "Traceback" not in errors


def test_listen_prints_plain_lines_to_a_pipe(tmp_path: Path, tiny_clap_dir: Path) -> None:
    with tempfile.TemporaryFile() as stdout:
        proc = subprocess.Popen(
            listen_argv(file_config(tmp_path, tiny_clap_dir)),
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        try:

            def lines() -> list[str]:
                stdout.seek(0)
                return stdout.read().decode().splitlines()

            wait_until(lambda: len(lines()) >= 3 or proc.poll() is not None, "three lines", 120)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == EXIT_OK, stderr
        printed = lines()
    assert len(printed) >= 3, stderr
    assert all("\x1b" not in line for line in printed)
    assert all(
        re.fullmatch(
            r"\S+Z garden -?\d+\.\d dBFS \| labels: (dog barking|siren) 0\.\d{3}, "
            r"(dog barking|siren) 0\.\d{3}",
            line,
        )
        for line in printed
    ), printed


@pytest.mark.slow
def test_a_bad_config_exits_78_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*monitor_command(), "listen", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip().splitlines() == [
        f"audio-monitor: error: {tmp_path / 'missing.yaml'}: no such file"
    ]

"""The command line itself: entry points, `devices` on a real PortAudio device list."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor import __version__

# Every test here starts the command line in a fresh interpreter.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_python_dash_m_and_console_script_agree() -> None:
    script = Path(sys.executable).with_name("audio-monitor")
    commands = [[sys.executable, "-m", "monitor"]]
    if script.exists():
        commands.append([str(script)])
    for command in commands:
        result = subprocess.run(
            [*command, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0
        assert result.stdout.strip() == f"audio-monitor {__version__}"


def test_no_subcommand_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "usage: audio-monitor" in result.stderr


def test_devices_lists_the_virtual_microphone(pulse_null_sink: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "devices"],
        capture_output=True,
        text=True,
        timeout=60,
        env=pulse_null_sink.env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    pulse = [row for row in rows if " pulse " in f" {row} "]
    assert pulse, result.stdout
    assert "Hz" in result.stdout or any(ch.isdigit() for ch in pulse[0])


def test_check_config_does_not_import_the_heavy_libraries(tmp_path: Path) -> None:
    code = (
        "import sys; from monitor.cli import main; rc = main(['check-config', "
        f"{str(REPO / 'configs' / 'example.yaml')!r}]); "
        "heavy = [m for m in ('torch', 'transformers', 'sounddevice', 'paho', 'scipy') "
        "if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_a_native_crash_after_a_command_prints_every_threads_python_stack(
    tmp_path: Path,
) -> None:
    # The shape of an exit-time abort in a native library: the command has returned, a
    # thread is still around, and the process dies of SIGABRT.
    config = tmp_path / "config.yaml"
    config.write_text((REPO / "configs" / "example.yaml").read_text())
    script = (
        "import os, sys, threading, time\n"
        "from monitor.cli import main\n"
        "assert main(['check-config', sys.argv[1]]) == 0\n"
        "threading.Thread(target=time.sleep, args=(60,), name='lingering', daemon=True).start()\n"
        "os.abort()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == -6
    assert "Fatal Python error: Aborted" in result.stderr
    assert "Current thread" in result.stderr and "Thread 0x" in result.stderr
    assert "in <module>" in result.stderr

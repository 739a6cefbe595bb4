"""`audio-monitor classify` on real files with the tiny checkpoint, in-process and as a CLI."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from monitor.cli import main
from monitor.config import load_config
from monitor.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE
from monitor.model.runner import ClapRunner
from monitor.offline.classify import (
    CSV_COLUMNS,
    SILENCE_MESSAGE,
    ClassifyOptions,
    FileResult,
    WindowResult,
    aggregate_scores,
    classify_files,
    csv_rows,
    format_table,
    top_labels,
)
from monitor.offline.common import adhoc_label_set
from monitor.pipeline.scoring import build_scorers
from tests.support.audio import write_clip
from tests.support.processes import REPO_ROOT, monitor_command

RATE_HZ = 48000
TWO_LABELS = ["dog barking", "glass breaking"]
FIVE_LABELS = ["dog barking", "cat meowing", "smoke alarm", "baby crying", "knock on the door"]


def _signal(seconds: float, rate_hz: int = RATE_HZ, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A tone sweep plus noise, different in every channel: (frames, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    columns = []
    for channel in range(channels):
        base_hz = 200.0 * (channel + 1) + 50.0 * seed
        sweep = 0.3 * np.sin(2 * np.pi * (base_hz * t + 40.0 * t**2))
        columns.append(sweep + 0.05 * rng.standard_normal(len(t)))
    return np.stack(columns, axis=1).astype(np.float32)


def _write(
    path: Path, seconds: float, rate_hz: int = RATE_HZ, channels: int = 1, **kw: Any
) -> Path:
    signal = functools.partial(_signal, seed=kw.pop("seed", 0))
    return write_clip(path, seconds, rate_hz, channels, signal=signal, **kw)


def classify(argv: Sequence[str | Path]) -> tuple[int, str, str]:
    """Run `audio-monitor classify ARGV` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["classify", *(str(a) for a in argv)])
    return code, out.getvalue(), err.getvalue()


def classify_json(argv: Sequence[str | Path], expected_code: int = EXIT_OK) -> dict[str, Any]:
    code, out, err = classify([*argv, "--format", "json"])
    assert code == expected_code, err
    document: dict[str, Any] = json.loads(out)
    return document


def classify_subprocess(argv: Sequence[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [*monitor_command(), "classify", *(str(a) for a in argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def spans(file: dict[str, Any]) -> list[tuple[float, float]]:
    return [(w["start_seconds"], w["end_seconds"]) for w in file["windows"]]


def window_matrix(file: dict[str, Any], label_set: str, labels: Sequence[str]) -> np.ndarray:
    return np.array(
        [[w["label_sets"][label_set][label] for label in labels] for w in file["windows"]]
    )


def write_config(tmp_path: Path, model_dir: Path) -> Path:
    config = {
        "model": {"precision": "fp32", "name": str(model_dir)},
        "label_sets": [
            {
                "name": "pets",
                "labels": ["dog barking", "cat meowing"],
                "background": ["silence", "speech"],
            },
            {
                "name": "home",
                "mode": "absolute",
                "labels": ["doorbell", "smoke alarm", "water running"],
            },
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ---------------------------------------------------------------------------------------------
# Formats, rates and channel counts

# name: (file name, soundfile format, subtype, rate, channels, seconds, lossy)
FORMATS: dict[str, tuple[str, str, str, int, int, float, bool]] = {
    "wav_u8": ("u8.wav", "WAV", "PCM_U8", 8000, 1, 2.0, False),
    "wav_16": ("pcm16.wav", "WAV", "PCM_16", 22050, 2, 3.0, False),
    "wav_24": ("pcm24.wav", "WAV", "PCM_24", 44100, 1, 2.5, False),
    "wav_32": ("pcm32.wav", "WAV", "PCM_32", 48000, 3, 1.5, False),
    "wav_float": ("float.wav", "WAV", "FLOAT", 44100, 2, 4.0, False),
    "wav_double": ("double.wav", "WAV", "DOUBLE", 8000, 2, 2.0, False),
    "flac": ("sub/long.flac", "FLAC", "PCM_24", 22050, 1, 12.0, False),  # two windows
    "ogg_vorbis": ("sub/deeper/vorbis.ogg", "OGG", "VORBIS", 44100, 2, 3.0, True),
    "mp3": ("layer3.mp3", "MP3", "MPEG_LAYER_III", 48000, 1, 3.0, True),
}
MP3_AVAILABLE = "MP3" in sf.available_formats()


@pytest.fixture(scope="module")
def format_results(
    tiny_clap_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Every format written into one directory tree, classified in one run (json)."""
    root = tmp_path_factory.mktemp("formats")
    paths = {}
    for name, (file_name, fmt, subtype, rate_hz, channels, seconds, _) in FORMATS.items():
        if fmt == "MP3" and not MP3_AVAILABLE:
            continue
        path = root / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, seconds, rate_hz, channels, format=fmt, subtype=subtype)
        # Read back: the file really is what the case claims to be.
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            fmt,
            subtype,
            rate_hz,
            channels,
        )
        paths[str(path)] = name
    document = classify_json([root, "--model", tiny_clap_dir, "--labels", *FIVE_LABELS])
    files = document["files"]
    # A directory is searched recursively, in sorted order.
    assert [f["path"] for f in files] == sorted(paths)
    return {paths[f["path"]]: f for f in files}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_rate_and_channel_count_is_classified(
    format_results: dict[str, dict[str, Any]], name: str
) -> None:
    _, fmt, _, rate_hz, channels, seconds, lossy = FORMATS[name]
    if fmt == "MP3" and not MP3_AVAILABLE:
        pytest.skip("the installed libsndfile cannot write or read MP3")
    file = format_results[name]
    assert file["status"] == "ok", file["error"]
    assert file["error"] is None
    assert file["source_rate_hz"] == rate_hz
    assert file["channels"] == channels
    if lossy:  # encoder delay and padding add a few ms
        assert file["duration_seconds"] == pytest.approx(seconds, abs=0.1)
    else:
        assert file["duration_seconds"] == pytest.approx(seconds, abs=1e-9)
    duration = file["duration_seconds"]
    expected_spans = (
        [(0.0, duration)] if duration <= 10 else [(0.0, 10.0), (duration - 10, duration)]
    )
    np.testing.assert_allclose(spans(file), expected_spans, atol=1e-9)
    scores = window_matrix(file, "labels", FIVE_LABELS)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)  # softmax over the set
    assert [label for label, _ in file["top"]["labels"]] == [
        label for label, _ in top_labels(file["clip"]["labels"], 3)
    ]


def test_same_audio_in_lossless_formats_scores_the_same(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    signal = _signal(3.0, seed=5)
    for name, fmt, subtype in [
        ("a.wav", "WAV", "FLOAT"),
        ("b.wav", "WAV", "DOUBLE"),
        ("c.wav", "WAV", "PCM_24"),
        ("d.flac", "FLAC", "PCM_24"),
    ]:
        sf.write(tmp_path / name, signal, RATE_HZ, format=fmt, subtype=subtype)
    files = classify_json([tmp_path, "--model", tiny_clap_dir, "--labels", *FIVE_LABELS])["files"]
    reference = window_matrix(files[0], "labels", FIVE_LABELS)
    for file in files[1:]:
        np.testing.assert_allclose(window_matrix(file, "labels", FIVE_LABELS), reference, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The scores equal the transformers pipeline's


@pytest.fixture(scope="module")
def zero_shot_pipeline(tiny_clap_dir: Path) -> Any:
    from transformers import pipeline

    return pipeline("zero-shot-audio-classification", model=str(tiny_clap_dir))


@pytest.mark.parametrize("labels", [TWO_LABELS, FIVE_LABELS], ids=["two", "five"])
def test_scores_equal_the_transformers_pipeline(
    tiny_clap_dir: Path, zero_shot_pipeline: Any, tmp_path: Path, labels: list[str]
) -> None:
    clips = {
        "noise_1s.wav": 0.1 * np.random.default_rng(1).standard_normal(RATE_HZ),
        "sweep_7.5s.wav": _signal(7.5, seed=2)[:, 0],
        "sweep_10s.wav": _signal(10.0, seed=3)[:, 0],  # exactly one full window
    }
    for name, samples in clips.items():
        sf.write(tmp_path / name, samples.astype(np.float32), RATE_HZ, subtype="FLOAT")
    paths = [tmp_path / name for name in clips]
    files = classify_json([*paths, "--model", tiny_clap_dir, "--labels", *labels])["files"]

    assert [f["path"] for f in files] == [str(p) for p in paths]
    for path, file in zip(paths, files, strict=True):
        assert file["status"] == "ok"
        assert len(file["windows"]) == 1
        samples, _ = sf.read(str(path), dtype="float32")
        results = zero_shot_pipeline(samples, candidate_labels=labels)
        theirs = np.array([{r["label"]: r["score"] for r in results}[label] for label in labels])
        ours = np.array([file["clip"]["labels"][label] for label in labels])
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
        np.testing.assert_allclose(window_matrix(file, "labels", labels)[0], theirs, atol=1e-5)
        assert float(ours.max() - ours.min()) > 0.01  # near-uniform scores would prove nothing
        assert file["top"]["labels"][0][0] == max(
            labels, key=lambda label: file["clip"]["labels"][label]
        )


# ---------------------------------------------------------------------------------------------
# Long clips: windows and clip-level aggregates


def test_long_clip_windows_and_aggregates(tiny_clap_dir: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "long.wav", 25.0, subtype="FLOAT", seed=4)
    base = [path, "--model", tiny_clap_dir, "--labels", *FIVE_LABELS]

    by_max = classify_json(base)["files"][0]
    assert spans(by_max) == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]  # tail aligned to the end
    windows = window_matrix(by_max, "labels", FIVE_LABELS)
    clip = np.array([by_max["clip"]["labels"][label] for label in FIVE_LABELS])
    np.testing.assert_allclose(clip, windows.max(axis=0), atol=1e-7)
    assert not np.allclose(windows[0], windows[1], atol=1e-6)  # windows see different audio

    document = classify_json([*base, "--aggregate", "mean"])
    assert document["aggregate"] == "mean"
    by_mean = document["files"][0]
    # Deterministic: the same windows give the same scores in a second run.
    np.testing.assert_array_equal(window_matrix(by_mean, "labels", FIVE_LABELS), windows)
    clip = np.array([by_mean["clip"]["labels"][label] for label in FIVE_LABELS])
    np.testing.assert_allclose(clip, windows.mean(axis=0), atol=1e-6)

    overlapping = classify_json([*base, "--hop-seconds", "5"])["files"][0]
    assert spans(overlapping) == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]
    hop5 = window_matrix(overlapping, "labels", FIVE_LABELS)
    np.testing.assert_allclose(hop5[[0, 2, 3]], windows, atol=1e-5)

    short_windows = classify_json([*base, "--window-seconds", "4", "--hop-seconds", "3"])
    assert spans(short_windows["files"][0])[:2] == [(0.0, 4.0), (3.0, 7.0)]
    assert spans(short_windows["files"][0])[-1] == (21.0, 25.0)


# ---------------------------------------------------------------------------------------------
# Label sets from a config: one embedding per window, scored against every set


def test_config_label_sets_are_all_scored(tiny_clap_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_clap_dir)
    clip = _write(tmp_path / "clip.wav", 14.0)
    document = classify_json([clip, "--config", config])
    assert document["model"] == str(tiny_clap_dir)
    assert document["label_sets"]["pets"] == {
        "mode": "softmax",
        "labels": ["dog barking", "cat meowing"],
        "background": ["silence", "speech"],
    }
    assert document["label_sets"]["home"]["mode"] == "absolute"
    file = document["files"][0]
    assert len(file["windows"]) == 2
    for scores in [w["label_sets"] for w in file["windows"]] + [file["clip"]]:
        # Background labels take part in the softmax but are never reported.
        assert list(scores) == ["pets", "home"]
        assert list(scores["pets"]) == ["dog barking", "cat meowing"]
        assert 0 < sum(scores["pets"].values()) < 1 - 1e-6
        assert list(scores["home"]) == ["doorbell", "smoke alarm", "water running"]
        assert all(0 <= s <= 1 for s in scores["home"].values())
    assert set(file["top"]) == {"pets", "home"}

    only_home = classify_json([clip, "--config", config, "--label-set", "home"])
    assert list(only_home["label_sets"]) == ["home"]
    assert list(only_home["files"][0]["clip"]) == ["home"]
    assert only_home["files"][0]["clip"]["home"] == pytest.approx(file["clip"]["home"], abs=1e-6)

    # --labels wins over the config's sets; the model still comes from the config.
    adhoc = classify_json([clip, "--config", config, "--labels", *TWO_LABELS])
    assert list(adhoc["label_sets"]) == ["labels"]
    assert adhoc["model"] == str(tiny_clap_dir)


def test_one_embedding_per_window_batched_across_files(
    runner: ClapRunner, tiny_clap_dir: Path, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path, tiny_clap_dir), require_source=False)
    scorers = build_scorers(config.label_sets, runner.embed_text, runner.logit_scale)
    paths = [
        _write(tmp_path / "a.wav", 25.0, seed=1),  # 3 windows
        _write(tmp_path / "b.wav", 3.0, seed=2),  # 1 window
        tmp_path / "silent.wav",  # skipped, no window
        _write(tmp_path / "c.wav", 12.0, seed=3),  # 2 windows
    ]
    sf.write(paths[2], np.zeros(RATE_HZ, np.float32), RATE_HZ)
    batches: list[int] = []

    def counting_embed(windows: Sequence[np.ndarray]) -> np.ndarray:
        batches.append(len(windows))
        return runner.embed_audio(windows)

    results = list(classify_files(paths, scorers, counting_embed, ClassifyOptions(batch_size=4)))
    assert batches == [4, 2]  # six windows, two label sets: each window embedded once
    assert [r.path for r in results] == paths
    assert [r.status for r in results] == ["ok", "ok", "skipped", "ok"]
    assert [len(r.windows) for r in results] == [3, 1, 0, 2]
    for result in results:
        for window in result.windows:
            assert list(window.scores) == ["pets", "home"]

    batches.clear()
    one_by_one = list(classify_files(paths, scorers, counting_embed, ClassifyOptions(batch_size=1)))
    assert batches == [1] * 6
    for batched, single in zip(results, one_by_one, strict=True):
        for name, scores in batched.clip.items():
            assert scores == pytest.approx(single.clip[name], abs=1e-5)


def test_results_stream_before_later_files_are_read(runner: ClapRunner, tmp_path: Path) -> None:
    label_sets = [adhoc_label_set("labels", TWO_LABELS)]
    scorers = build_scorers(label_sets, runner.embed_text, runner.logit_scale)
    first = _write(tmp_path / "first.wav", 2.0)
    later = tmp_path / "later.wav"
    results = classify_files(
        [first, later], scorers, runner.embed_audio, ClassifyOptions(batch_size=1)
    )
    assert next(results).status == "ok"
    # The second file is only opened now: nothing holds every decoded clip up front.
    _write(later, 2.0)
    second = next(results)
    assert (second.path, second.status) == (later, "ok")
    assert next(results, None) is None


# ---------------------------------------------------------------------------------------------
# Files that cannot be classified


def test_unreadable_files_give_error_rows_and_exit_1(tiny_clap_dir: Path, tmp_path: Path) -> None:
    good_a = _write(tmp_path / "good_a.wav", 3.0, 44100, 2)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(2000))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    no_frames = tmp_path / "no_frames.wav"
    sf.write(no_frames, np.zeros((0, 1), np.float32), RATE_HZ)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(RATE_HZ, np.nan, np.float32), RATE_HZ, subtype="FLOAT")
    missing = tmp_path / "missing.wav"
    good_b = _write(tmp_path / "good_b.flac", 12.0, 22050, 1)
    inputs = [good_a, corrupt, empty, no_frames, nan, missing, good_b]

    proc = classify_subprocess(
        [
            *(p.name for p in inputs),
            "--model",
            tiny_clap_dir,
            "--labels",
            *FIVE_LABELS,
            "--top-k",
            "2",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == EXIT_FAILURE, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "5 file(s) could not be classified" in proc.stderr
    headers = [line for line in proc.stdout.splitlines() if not line.startswith(" ")]
    assert [line.split(":")[0] for line in headers] == [p.name for p in inputs]  # input order
    assert headers[0] == "good_a.wav: ok, 3.00 s"
    assert headers[1].startswith("corrupt.wav: error: cannot decode (")
    assert headers[2].startswith("empty.wav: error: cannot decode (")
    assert headers[3] == "no_frames.wav: error: contains no audio (0 samples)"
    assert headers[4] == "nan.wav: error: 48000 of 48000 samples are NaN or infinite"
    assert headers[5] == "missing.wav: error: no such file"
    assert headers[6] == "good_b.flac: ok, 12.00 s, 2 windows (clip score = max)"
    print(proc.stdout)  # shown with -s: the README's example


def test_digital_silence_is_skipped_not_failed(tiny_clap_dir: Path, tmp_path: Path) -> None:
    good = _write(tmp_path / "good.wav", 2.0)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((RATE_HZ * 3, 2), np.float32), RATE_HZ, subtype="PCM_16")
    document = classify_json([good, silent, "--model", tiny_clap_dir, "--labels", *TWO_LABELS])
    ok, skipped = document["files"]
    assert ok["status"] == "ok"
    assert skipped["status"] == "skipped"
    assert skipped["error"] == SILENCE_MESSAGE
    assert skipped["duration_seconds"] == 3.0
    assert skipped["channels"] == 2
    assert (skipped["windows"], skipped["clip"], skipped["top"]) == ([], {}, {})


# ---------------------------------------------------------------------------------------------
# csv and table output


def test_csv_output(tiny_clap_dir: Path, tmp_path: Path) -> None:
    long = _write(tmp_path / "long.wav", 25.0)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(RATE_HZ, np.float32), RATE_HZ)
    bad = tmp_path / "bad.ogg"
    bad.write_text("not audio")
    code, out, _ = classify(
        [
            long,
            silent,
            bad,
            "--model",
            tiny_clap_dir,
            "--labels",
            *FIVE_LABELS,
            "--format",
            "csv",
            "--top-k",
            "2",
        ]
    )
    assert code == EXIT_FAILURE
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    records = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    ok = [r for r in records if r["path"] == str(long)]
    assert [r["window"] for r in ok] == ["0", "0", "1", "1", "2", "2", "clip", "clip"]
    assert [r["rank"] for r in ok] == ["1", "2"] * 4  # --top-k 2
    assert {r["label_set"] for r in ok} == {"labels"}
    assert [(r["start_seconds"], r["end_seconds"]) for r in ok[::2]] == [
        ("0.0", "10.0"),
        ("10.0", "20.0"),
        ("15.0", "25.0"),
        ("0.0", "25.0"),
    ]
    for first, second in zip(ok[::2], ok[1::2], strict=True):
        assert float(first["score"]) >= float(second["score"])
    clip_scores = [float(r["score"]) for r in ok if r["window"] == "clip"]
    window_best = max(float(r["score"]) for r in ok if r["rank"] == "1" and r["window"] != "clip")
    assert clip_scores[0] == window_best  # max aggregate of the best label
    assert [(r["path"], r["status"], r["error"]) for r in records[len(ok) :]] == [
        (str(silent), "skipped", SILENCE_MESSAGE),
        (str(bad), "error", records[-1]["error"]),
    ]
    assert records[-1]["error"].startswith("cannot decode")


@pytest.mark.parametrize("top_k", [1, 4])
def test_table_output(tiny_clap_dir: Path, tmp_path: Path, top_k: int) -> None:
    config = write_config(tmp_path, tiny_clap_dir)
    long = _write(tmp_path / "long.wav", 25.0)
    short = _write(tmp_path / "short.wav", 2.0)
    code, out, _ = classify([long, short, "--config", config, "--top-k", str(top_k)])
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == f"{long}: ok, 25.00 s, 3 windows (clip score = max)"
    pets, home = lines[1], lines[2]
    assert pets.startswith("  pets: ") and home.startswith("  home: ")
    assert pets.count(", ") == min(top_k, 2) - 1  # the set has two labels
    assert home.count(", ") == min(top_k, 3) - 1
    window_lines = lines[3:6]
    assert [line.split()[0] for line in window_lines] == [
        "0.00-10.00",
        "10.00-20.00",
        "15.00-25.00",
    ]
    assert all("pets: " in line and "home: " in line for line in window_lines)
    assert "silence" not in out and "speech" not in out  # background labels never reported
    assert lines[6] == f"{short}: ok, 2.00 s"  # one window: no window lines
    assert len(lines) == 9


# ---------------------------------------------------------------------------------------------
# Bad flags and configs


def test_unknown_label_set_exits_78_with_one_line(tiny_clap_dir: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_clap_dir)
    clip = _write(tmp_path / "clip.wav", 1.0)
    proc = classify_subprocess([clip, "--config", config, "--label-set", "nope"], cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"audio-monitor: error: --label-set: no label set 'nope' in {config}; available: pets, home"
    ]


def test_a_gpu_asked_for_where_there_is_none_exits_75_with_one_line(
    tiny_clap_dir: Path, tmp_path: Path
) -> None:
    from monitor.model.device import cuda_problem

    if cuda_problem("torch") is None:
        pytest.skip("this machine's torch can use a GPU")
    config = write_config(tmp_path, tiny_clap_dir)
    document = yaml.safe_load(config.read_text())
    document["model"].update(device="cuda", backend="torch")
    config.write_text(yaml.safe_dump(document))
    code, out, err = classify([_write(tmp_path / "clip.wav", 1.0), "--config", config])
    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert err.count("\n") == 1
    assert "model.device cuda: torch cannot use an NVIDIA GPU here: torch 2." in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "give --labels L1 L2 ... or --config FILE"),
        (["--labels", "a", "b", "--label-set", "pets"], "cannot be combined with --labels"),
        (["--labels", "only"], "--labels: a softmax set needs at least two labels"),
        (["--labels", "a", "b", "--window-seconds", "12"], "--window-seconds: must be more than 0"),
        (["--labels", "a", "b", "--hop-seconds", "0"], "--hop-seconds: must be more than 0"),
        (["--labels", "a", "b", "--batch-size", "0"], "--batch-size: must be at least 1"),
        (["--labels", "a", "b", "--top-k", "0"], "--top-k: must be at least 1"),
        (["CONFIG", "--template", "a {}"], "--template: only for --labels"),
        (["CONFIG", "--mode", "absolute"], "--mode: only for --labels"),
    ],
    ids=["nothing", "both", "one-label", "window", "hop", "batch", "top-k", "template", "mode"],
)
def test_bad_flags_exit_78(
    tiny_clap_dir: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    clip = _write(tmp_path / "clip.wav", 1.0)
    if flags[:1] == ["CONFIG"]:
        flags = ["--config", str(write_config(tmp_path, tiny_clap_dir)), *flags[1:]]
    code, out, err = classify([clip, "--model", tiny_clap_dir, *flags])
    assert code == EXIT_CONFIG
    assert out == ""
    assert len(err.splitlines()) == 1
    assert message in err


def test_directory_without_audio_exits_78(tiny_clap_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no audio here")
    code, _, err = classify([tmp_path, "--model", tiny_clap_dir, "--labels", *TWO_LABELS])
    assert code == EXIT_CONFIG
    assert f"no audio files in {tmp_path}" in err


# ---------------------------------------------------------------------------------------------
# The pure parts


def test_top_labels_best_first_ties_in_label_order() -> None:
    scores = {"a": 0.2, "b": 0.5, "c": 0.2, "d": 0.1}
    assert top_labels(scores, 3) == [("b", 0.5), ("a", 0.2), ("c", 0.2)]
    assert top_labels(scores, 10) == [("b", 0.5), ("a", 0.2), ("c", 0.2), ("d", 0.1)]


def test_aggregate_scores() -> None:
    scores = np.array([[0.1, 0.9], [0.5, 0.3], [0.3, 0.0]], np.float32)
    np.testing.assert_allclose(aggregate_scores(scores, "max"), [0.5, 0.9])
    np.testing.assert_allclose(aggregate_scores(scores, "mean"), [0.3, 0.4])


def test_rows_of_files_without_scores() -> None:
    error = FileResult(Path("x/a.wav"), "error", "cannot decode (bad header)")
    skipped = FileResult(Path("b.wav"), "skipped", SILENCE_MESSAGE, 2.5, 16000, 1)
    assert format_table(error, 3) == "x/a.wav: error: cannot decode (bad header)\n"
    assert format_table(skipped, 3) == "b.wav: skipped, 2.50 s: digital silence\n"
    assert csv_rows(error, 3) == [
        ["x/a.wav", "error", "", "", "", "", "", "", "", "cannot decode (bad header)"]
    ]


def test_table_of_a_single_window_file() -> None:
    scores = {"s": {"x": 0.25, "y": 0.75}, "longer": {"p": 0.6}}
    result = FileResult(
        Path("c.wav"), "ok", None, 4.0, 48000, 1, (WindowResult(0, 0.0, 4.0, scores),), scores
    )
    assert format_table(result, 1) == "c.wav: ok, 4.00 s\n  s:      y 0.750\n  longer: p 0.600\n"


def test_batch_size_reaches_the_runner() -> None:
    import argparse

    from monitor.offline.common import model_from_args

    args = argparse.Namespace(model=None, batch_size=16)
    assert model_from_args(args, None).max_batch == 16
    assert model_from_args(argparse.Namespace(model="x", batch_size=None), None).max_batch == 4


def test_offline_scores_are_fp32_when_the_config_says_auto() -> None:
    import argparse

    from monitor.config import Config
    from monitor.offline.common import model_from_args

    config = Config.model_validate({"label_sets": [{"name": "s", "labels": ["a", "b"]}]})
    args = argparse.Namespace(model=None, batch_size=None)
    assert (config.model.precision, config.model.backend) == ("auto", "auto")
    offline = model_from_args(args, config)
    assert (offline.precision, offline.backend) == ("fp32", "torch")
    live = model_from_args(args, config, reproducible=False)
    assert (live.precision, live.backend) == ("auto", "auto")
    explicit = Config.model_validate(
        {"model": {"precision": "int8"}, "label_sets": [{"name": "s", "labels": ["a", "b"]}]}
    )
    assert model_from_args(args, explicit).precision == "int8"

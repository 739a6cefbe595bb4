"""`audio-monitor eval` end to end on the tiny checkpoint: generated ESC-50 sets and real clips."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml

from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ
from monitor.cli import main
from monitor.config import LabelSetConfig
from monitor.errors import EXIT_CONFIG, EXIT_OK, EXIT_UNAVAILABLE, SourceError
from monitor.offline.dataset import clip_from_hub_audio
from monitor.offline.jsondoc import as_json, json_text
from monitor.offline.report import markdown, summary_table, thresholds_yaml
from monitor.offline.results import (
    TIE_RULE,
    ClipOutcome,
    ConfusionMatrix,
    DatasetSummary,
    EvalReport,
    FailedClip,
    ModelSummary,
    ModeReport,
    SuggestedThreshold,
    Timing,
)

REPO = Path(__file__).resolve().parents[2]
RATE_HZ = 44_100
CLIP_SECONDS = 1.5
# Targets deliberately out of alphabetical order and with gaps: labels follow the target.
CLASSES = {0: "low_tone", 5: "white_noise", 12: "high_tone"}
LABELS = ["low tone", "white noise", "high tone"]
CORRUPT = "1-99999-A-5.wav"
MODE_FIELDS = {
    "top1",
    "top5",
    "top5_k",
    "mAP",
    "per_class_accuracy",
    "support",
    "confusion_matrix",
    "average_precision",
    "thresholds",
}
REPORT_FIELDS = {
    "dataset",
    "failed_clips",
    "model",
    "templates",
    "background",
    "background_used_by",
    "aggregate",
    "window_seconds",
    "hop_seconds",
    "windows",
    "target_precision",
    "tie_rule",
    "modes",
    "clips",
    "timing",
}


def _sound(category: str, index: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(CLIP_SECONDS * RATE_HZ)) / RATE_HZ
    if category == "white_noise":
        return (0.2 * rng.standard_normal(t.size)).astype(np.float32)
    base = 300.0 if category == "low_tone" else 3000.0
    return (0.4 * np.sin(2 * np.pi * base * (1 + 0.05 * index) * t)).astype(np.float32)


def write_esc50(root: Path, *, corrupt: bool = True) -> list[str]:
    """3 classes x 4 clips (2 per fold) in the ESC-50 layout; returns the CSV's filenames."""
    rng = np.random.default_rng(3)
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = []
    for target, category in CLASSES.items():
        for index in range(4):
            fold = 1 + index % 2
            name = f"{fold}-{1000 + 10 * target + index}-A-{target}.wav"
            sf.write(root / "audio" / name, _sound(category, index, rng), RATE_HZ)
            rows.append([name, fold, target, category, "False", 1000 + target, "A"])
    if corrupt:
        (root / "audio" / CORRUPT).write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(64))
        rows.append([CORRUPT, 1, 5, "white_noise", "False", 99999, "A"])
    rows.reverse()  # the CSV order must not matter: clips are sorted by filename
    with (root / "meta" / "esc50.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def esc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("esc") / "tiny-esc"
    write_esc50(root)
    return root


def run(
    dataset: Path | str, model: Path, out: Path, *extra: str, capsys: Any = None
) -> tuple[int, str, str]:
    code = main(
        ["eval", "--dataset", str(dataset), "--model", str(model), "--out", str(out), *extra]
    )
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def load_report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def check_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    return width, height


@pytest.fixture(scope="module")
def full_run(esc_dir: Path, tiny_clap_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "report"
    code, _, _ = run(esc_dir, tiny_clap_dir, out)
    assert code == EXIT_OK
    return out


def test_report_has_every_field(full_run: Path, tiny_clap_dir: Path, esc_dir: Path) -> None:
    report = load_report(full_run)
    assert set(report) == REPORT_FIELDS
    ds = report["dataset"]
    assert ds["source"] == str(esc_dir)
    assert ds["name"] == "tiny_esc"
    assert ds["classes"] == LABELS
    assert ds["targets"] == [0, 5, 12]
    assert (ds["clips_selected"], ds["clips_evaluated"], ds["clips_failed"]) == (13, 12, 1)
    assert report["model"] == {"name": str(tiny_clap_dir), "revision": None}
    assert report["templates"] == ["This is a sound of {}."]
    assert report["background"] == []
    assert report["aggregate"] == "max"
    assert report["windows"] == 12  # 1.5 s clips, 10 s windows: one each
    assert set(report["modes"]) == {"softmax", "absolute"}
    for mode in report["modes"].values():
        assert set(mode) == MODE_FIELDS
        assert mode["top5_k"] == 3
        assert mode["top5"] == 1.0  # three classes: the truth is always among the best five
        assert 0.0 <= mode["top1"] <= 1.0
        assert set(mode["thresholds"]) == set(LABELS)
        assert all(set(LABELS) == set(mode[key]) for key in ("average_precision", "support"))
    assert {"started_at", "total_seconds"} <= set(report["timing"])
    filenames = [clip["filename"] for clip in report["clips"]]
    assert filenames == sorted(filenames)


def test_per_class_accuracy_agrees_with_the_confusion_matrix(full_run: Path) -> None:
    report = load_report(full_run)
    for mode_name, mode in report["modes"].items():
        counts = np.array(mode["confusion_matrix"]["counts"])
        assert mode["confusion_matrix"]["labels"] == LABELS
        assert counts.shape == (3, 3)
        assert counts.sum() == 12
        assert counts.sum(axis=1).tolist() == [4, 4, 4]  # the corrupt clip is not counted
        for i, label in enumerate(LABELS):
            assert mode["per_class_accuracy"][label] == pytest.approx(counts[i, i] / 4)
            assert mode["support"][label] == 4
        assert mode["top1"] == pytest.approx(np.trace(counts) / 12)
        predicted = [clip["predicted"][mode_name] for clip in report["clips"]]
        for i, label in enumerate(LABELS):
            assert predicted.count(label) == counts[:, i].sum()
        defined = [ap for ap in mode["average_precision"].values() if ap is not None]
        assert mode["mAP"] == pytest.approx(np.mean(defined))


def test_a_corrupt_clip_is_listed_and_skipped(full_run: Path) -> None:
    report = load_report(full_run)
    assert [f["filename"] for f in report["failed_clips"]] == [CORRUPT]
    assert "cannot decode" in report["failed_clips"][0]["reason"]
    assert CORRUPT not in [clip["filename"] for clip in report["clips"]]
    markdown = (full_run / "report.md").read_text()
    assert CORRUPT in markdown
    assert "12 evaluated, 1 could not be read" in markdown


def test_markdown_and_png(full_run: Path) -> None:
    markdown = (full_run / "report.md").read_text()
    assert "| | softmax | absolute |" in markdown
    for label in LABELS:
        assert f"| {label} |" in markdown
    assert "confusion_matrix.png" in markdown
    width, height = check_png(full_run / "confusion_matrix.png")
    assert width >= 400
    assert height >= 400


@pytest.mark.parametrize("mode", ["softmax", "absolute"])
def test_thresholds_yaml_is_a_valid_label_set(full_run: Path, mode: str) -> None:
    report = load_report(full_run)
    data = yaml.safe_load((full_run / f"thresholds-{mode}.yaml").read_text())
    assert list(data) == ["label_sets"]
    assert len(data["label_sets"]) == 1
    label_set = LabelSetConfig.model_validate(data["label_sets"][0])
    assert label_set.name == "tiny_esc"
    assert label_set.mode == mode
    assert label_set.prompt_template == ["This is a sound of {}."]
    assert [label.name for label in label_set.labels] == LABELS
    for label in label_set.labels:
        suggested = report["modes"][mode]["thresholds"][label.name]
        if suggested is None:
            assert label.threshold == 1.0
        else:
            assert label.threshold == suggested["config_threshold"]
            assert label.threshold <= suggested["threshold"]
            assert suggested["precision"] >= 0.9


def test_runs_are_deterministic(
    full_run: Path, esc_dir: Path, tiny_clap_dir: Path, tmp_path: Path
) -> None:
    code, _, _ = run(esc_dir, tiny_clap_dir, tmp_path, "--batch-size", "8")
    assert code == EXIT_OK
    first, second = load_report(full_run), load_report(tmp_path)
    assert first.pop("timing") != {}
    second.pop("timing")
    assert first == second
    for name in ("report.md", "thresholds-softmax.yaml", "thresholds-absolute.yaml"):
        assert (full_run / name).read_text() == (tmp_path / name).read_text()


def test_folds_overlapping_windows_and_mean(
    esc_dir: Path, tiny_clap_dir: Path, tmp_path: Path
) -> None:
    code, _, _ = run(
        esc_dir,
        tiny_clap_dir,
        tmp_path,
        "--folds",
        "2",
        "--window-seconds",
        "1",
        "--hop-seconds",
        "0.5",
        "--aggregate",
        "mean",
        "--batch-size",
        "5",
    )
    assert code == EXIT_OK
    report = load_report(tmp_path)
    assert report["dataset"]["folds"] == [2]
    assert report["dataset"]["clips_evaluated"] == 6  # the corrupt clip is in fold 1
    assert report["failed_clips"] == []
    assert {clip["fold"] for clip in report["clips"]} == {2}
    # 1.5 s clips cut into 1 s windows every 0.5 s: two windows each.
    assert report["windows"] == 12
    assert report["aggregate"] == "mean"
    for mode in report["modes"].values():
        assert np.array(mode["confusion_matrix"]["counts"]).sum(axis=1).tolist() == [2, 2, 2]


def test_config_templates_and_background_reach_both_modes(
    esc_dir: Path, tiny_clap_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"precision": "fp32", "name": str(tiny_clap_dir)},
                "label_sets": [
                    {
                        "name": "home",
                        "mode": "absolute",
                        "prompt_template": ["A recording of {}.", "The sound of {}."],
                        "labels": ["doorbell"],
                        "background": ["silence"],
                    }
                ],
            }
        )
    )
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--dataset",
            str(esc_dir),
            "--config",
            str(config),
            "--background",
            "traffic",
            "silence",
            "--out",
            str(out),
            "--folds",
            "1",
        ]
    )
    assert code == EXIT_OK, capsys.readouterr().err
    report = load_report(out)
    assert report["model"]["name"] == str(tiny_clap_dir)
    assert report["templates"] == ["A recording of {}.", "The sound of {}."]
    assert report["background"] == ["silence", "traffic"]
    assert report["background_used_by"] == ["softmax", "absolute"]
    assert "used by both modes" in (out / "report.md").read_text()
    for mode in ("softmax", "absolute"):
        snippet = yaml.safe_load((out / f"thresholds-{mode}.yaml").read_text())
        label_set = LabelSetConfig.model_validate(snippet["label_sets"][0])
        assert label_set.background == ["silence", "traffic"]
        assert label_set.prompt_template == report["templates"]


@pytest.mark.slow
def test_command_line_with_limit(esc_dir: Path, tiny_clap_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "eval",
            "--dataset",
            str(esc_dir),
            "--model",
            str(tiny_clap_dir),
            "--out",
            str(out),
            "--limit",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["mode", "top-1", "top-3", "mAP"]  # 3 classes
    assert lines[1].split()[0] == "softmax"
    assert lines[2].split()[0] == "absolute"
    assert "5 clips evaluated, 0 could not be read" in result.stdout
    for name in ("report.json", "report.md", "confusion_matrix.png", "thresholds-softmax.yaml"):
        assert f"wrote {out / name}" in lines
    report = load_report(out)
    all_files = sorted(p.name for p in (esc_dir / "audio").iterdir())
    assert [clip["filename"] for clip in report["clips"]] == all_files[:5]
    assert report["dataset"]["limit"] == 5
    assert report["dataset"]["clips_selected"] == 5


def _esc10_dir() -> Path | None:
    for candidate in (
        REPO.parent / "shared" / "data" / "esc50-esc10",
        Path("/work/shared/data/esc50-esc10"),
    ):
        if (candidate / "meta" / "esc50.csv").is_file():
            return candidate
    return None


def test_real_esc50_layout(tiny_clap_dir: Path, tmp_path: Path) -> None:
    root = _esc10_dir()
    if root is None:
        pytest.skip("the ESC-10 clips (../shared/data/esc50-esc10) are not on this machine")
    with (root / "meta" / "esc50.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_target = {int(r["target"]): r["category"].replace("_", " ") for r in rows}
    fold4 = sorted(r["filename"] for r in rows if r["fold"] == "4")
    code, _, _ = run(root, tiny_clap_dir, tmp_path, "--folds", "4", "--limit", "20")
    assert code == EXIT_OK
    report = load_report(tmp_path)
    assert report["dataset"]["classes"] == [by_target[t] for t in sorted(by_target)]
    assert len(report["dataset"]["classes"]) == 10
    assert report["dataset"]["clips_evaluated"] == min(20, len(fold4))
    assert report["failed_clips"] == []
    assert [c["filename"] for c in report["clips"]] == fold4[:20]
    assert (tmp_path / "report.md").is_file()
    check_png(tmp_path / "confusion_matrix.png")


def test_hub_id_without_datasets_says_how_to_install(
    tiny_clap_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    if importlib.util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed here")
    out = tmp_path / "out"
    code, stdout, stderr = run("ashraq/esc50", tiny_clap_dir, out, capsys=capsys)
    assert code == EXIT_CONFIG
    assert stdout == ""
    assert stderr.count("\n") == 1
    assert "ashraq/esc50" in stderr
    assert "pip install 'audio-monitor[datasets]'" in stderr
    assert not out.exists()  # nothing happens before the dataset can be read


def test_directory_without_meta_csv(tiny_clap_dir: Path, tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "audio").mkdir()
    code, _, stderr = run(tmp_path, tiny_clap_dir, tmp_path / "out", capsys=capsys)
    assert code == EXIT_CONFIG
    assert stderr.count("\n") == 1
    assert "meta/esc50.csv" in stderr
    assert str(tmp_path) in stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--folds", "7"], "--folds 7: no clips in these folds (the dataset has folds 1, 2)"),
        (["--target-precision", "0"], "--target-precision"),
        (["--window-seconds", "12"], "--window-seconds"),
        (["--background", "high_tone"], "--background: background 'high_tone' is also a class"),
        (["--template", "no slot"], "--template"),
    ],
)
def test_bad_flags_are_one_line_config_errors(
    esc_dir: Path, tiny_clap_dir: Path, tmp_path: Path, capsys: Any, extra: list[str], expected: str
) -> None:
    code, _, stderr = run(esc_dir, tiny_clap_dir, tmp_path / "out", *extra, capsys=capsys)
    assert code == EXIT_CONFIG
    assert stderr.count("\n") == 1
    assert expected in stderr


def test_nothing_readable_is_an_error(tiny_clap_dir: Path, tmp_path: Path, capsys: Any) -> None:
    root = tmp_path / "broken"
    write_esc50(root)
    for wav in (root / "audio").iterdir():
        wav.write_bytes(b"not audio")
    code, _, stderr = run(root, tiny_clap_dir, tmp_path / "out", capsys=capsys)
    assert code == EXIT_UNAVAILABLE
    assert "none of the 13 clips could be read" in stderr


def _wav_bytes(samples: np.ndarray, rate_hz: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate_hz, format="WAV")
    return buffer.getvalue()


def test_hub_rows_decode_from_bytes_or_arrays() -> None:
    tone = (0.3 * np.sin(np.arange(RATE_HZ) * 2 * np.pi * 440 / RATE_HZ)).astype(np.float32)
    from_bytes = clip_from_hub_audio(
        "1-100-A-0.wav", {"bytes": _wav_bytes(tone, RATE_HZ), "path": "1-100-A-0.wav"}
    )
    from_array = clip_from_hub_audio("1-100-A-0.wav", {"array": tone, "sampling_rate": RATE_HZ})
    for clip in (from_bytes, from_array):
        assert clip.path == Path("1-100-A-0.wav")
        assert clip.source_rate_hz == RATE_HZ
        assert len(clip.samples) == MODEL_SAMPLE_RATE_HZ  # one second at 48 kHz
    np.testing.assert_allclose(from_bytes.samples, from_array.samples, atol=1e-4)
    stereo = clip_from_hub_audio(
        "s.wav", {"array": np.stack([tone, tone]), "sampling_rate": RATE_HZ}
    )
    assert stereo.channels == 2
    with pytest.raises(SourceError, match=r"^bad\.wav: cannot decode"):
        clip_from_hub_audio("bad.wav", {"bytes": b"garbage", "path": None})
    with pytest.raises(SourceError, match="holds no audio"):
        clip_from_hub_audio("empty.wav", {"bytes": None, "path": None})


def _hand_made_report() -> EvalReport:
    labels = ("door | bell", "dog")
    point = SuggestedThreshold(0.61234, 0.6123, 1.0, 0.5, 1, 0, 2)
    mode = ModeReport(
        top1=0.5,
        top5=1.0,
        top5_k=2,
        mAP=None,
        per_class_accuracy={"door | bell": 0.5, "dog": None},
        support={"door | bell": 2, "dog": 0},
        confusion_matrix=ConfusionMatrix(labels, ((1, 1), (0, 0))),
        average_precision={"door | bell": None, "dog": None},
        thresholds={"door | bell": point, "dog": None},
    )
    return EvalReport(
        dataset=DatasetSummary("d", "directory", "d", (1,), None, labels, (3, 7), 3, 2, 1),
        failed_clips=(FailedClip("x.wav", "cannot decode"),),
        model=ModelSummary("m", None),
        templates=("This is a sound of {}.",),
        background=(),
        background_used_by=(),
        aggregate="max",
        window_seconds=10.0,
        hop_seconds=10.0,
        windows=2,
        target_precision=0.9,
        tie_rule=TIE_RULE,
        modes={"absolute": mode},
        clips=(ClipOutcome("a.wav", 1, "door | bell", {"absolute": "dog"}),),
        timing=Timing("2026-01-01T00:00:00+00:00", 0.1, 0.2, 0.3),
    )


def test_report_renders_from_the_dataclasses_alone() -> None:
    report = _hand_made_report()
    document = json.loads(json_text(as_json(report)))
    assert set(document) == REPORT_FIELDS
    assert set(document["modes"]["absolute"]) == MODE_FIELDS
    assert document["clips"] == [
        {"filename": "a.wav", "fold": 1, "class": "door | bell", "predicted": {"absolute": "dog"}}
    ]
    assert document["dataset"]["folds"] == [1]
    assert document["modes"]["absolute"]["confusion_matrix"]["counts"] == [[1, 1], [0, 0]]
    assert document["modes"]["absolute"]["thresholds"]["dog"] is None
    assert list(document["modes"]["absolute"]["thresholds"]["door | bell"]) == [
        "threshold",
        "config_threshold",
        "precision",
        "recall",
        "true_positives",
        "false_positives",
        "positives",
    ]
    text = markdown(report)
    assert "| door \\| bell | 0.6123 | 1.000 | 0.500 |" in text
    assert "| dog | - | - | - |" in text
    assert "- `x.wav`: cannot decode" in text
    snippet = thresholds_yaml(report, "absolute")
    assert "threshold: 1.0  # precision 0.9 no clip of this class" in snippet
    label_set = LabelSetConfig.model_validate(yaml.safe_load(snippet)["label_sets"][0])
    assert [(label.name, label.threshold) for label in label_set.labels] == [
        ("door | bell", 0.6123),
        ("dog", 1.0),
    ]
    assert summary_table(report).splitlines()[1].split() == ["absolute", "0.500", "1.000", "-"]

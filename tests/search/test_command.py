"""`audio-monitor search` end to end: real history files, the tiny checkpoint's text path."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from monitor import cli
from monitor.errors import EXIT_CONFIG, EXIT_UNAVAILABLE
from monitor.history.store import HistoryStore
from monitor.model.runner import ClapRunner
from monitor.pipeline.scoring import cosine_score
from monitor.search.scan import score_chunks, text_scorer
from tests.support.history import T0, unit_rows, windows_of, write_history
from tests.support.tiny_clap import PROJECTION_DIM

TEXT = "glass breaking"


def make_config(tmp_path: Path, model_dir: Path | str, history: Path) -> Path:
    path = tmp_path / "config.yaml"
    cache = json.dumps(str(tmp_path / "cache"))
    path.write_text(
        f"model: {{name: {json.dumps(str(model_dir))}, cache_dir: {cache}}}\n"
        f"history: {{enabled: true, path: {json.dumps(str(history))}}}\n"
        "label_sets: [{name: x, labels: [a, b]}]\n"
    )
    return path


def search(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["search", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "history.sqlite3"
    kitchen = windows_of("kitchen", unit_rows(600, PROJECTION_DIM, 1), hop_seconds=1.0)
    porch = windows_of("porch", unit_rows(300, PROJECTION_DIM, 2), hop_seconds=2.0)
    write_history(path, kitchen + porch, chunk_windows=128)
    return path


@pytest.mark.slow
def test_scores_equal_the_daemons_on_the_stored_windows_and_filters_apply(
    tmp_path: Path,
    history: Path,
    runner: ClapRunner,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = HistoryStore.open_existing(history)
    chunks = list(store.chunks())
    store.close()
    text = runner.embed_text([TEXT])
    # What the daemon's absolute scores would say of each stored (float16) embedding.
    direct = {
        source: cosine_score(
            np.concatenate([c.embeddings for c in chunks if c.source_id == source]).astype(
                np.float32
            )
            @ text.T
        )[:, 0]
        for source in ("kitchen", "porch")
    }
    scanned = score_chunks(chunks, text_scorer((TEXT,), text, False, 1.0))
    for source_scores in scanned:
        # float32 sums in another order (a product per stored row against one over the
        # whole source: BLAS blocks them differently) differ in the last digits only, far
        # below the float16 storage's own resolution (about 1e-3).
        np.testing.assert_allclose(
            source_scores.scores[:, 0], direct[source_scores.source_id], atol=2e-5
        )

    clips = tmp_path / "clips"
    (clips / "kitchen").mkdir(parents=True)
    best_start = T0 + timedelta(seconds=int(np.argmax(direct["kitchen"])))
    (clips / "kitchen" / "a.json").write_text(
        json.dumps(
            {
                "clip": "kitchen/a.wav",
                "source": "kitchen",
                "start_time": (best_start - timedelta(seconds=3)).isoformat(),
                "end_time": (best_start + timedelta(seconds=1)).isoformat(),
            }
        )
    )
    config = make_config(tmp_path, runner.model_id, history)
    code, out, err = search(
        capsys, TEXT, "--config", str(config), "--clips", str(clips), "--format", "json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["windows_scored"] == 900
    matches = report["matches"]
    assert len(matches) == 10  # the default --top
    every = np.concatenate(list(direct.values()))
    # The text went through the text path alone (helper process and cache), not the runner:
    # the same checkpoint, so the same scores within float16 rounding of the stored rows.
    assert matches[0]["peak_score"] == pytest.approx(float(every.max()), abs=2e-3)
    assert [m["peak_score"] for m in matches] == sorted(
        (m["peak_score"] for m in matches), reverse=True
    )
    if matches[0]["source"] == "kitchen":
        assert matches[0]["clips"] == ["kitchen/a.wav"]

    threshold = float(np.quantile(every, 0.9))
    since = T0 + timedelta(seconds=100)
    code, out, err = search(
        capsys,
        TEXT,
        "--config",
        str(config),
        "--threshold",
        f"{threshold}",
        "--since",
        since.isoformat(),
        "--source",
        "kitchen",
        "--format",
        "json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["windows_scored"] == 500
    kept = direct["kitchen"][100:] >= threshold
    assert sum(m["windows"] for m in report["matches"]) == pytest.approx(int(kept.sum()), abs=3)
    assert {m["source"] for m in report["matches"]} == {"kitchen"}
    assert min(m["start"] for m in report["matches"]) >= since.isoformat().replace("+00:00", "")


def test_an_empty_history_is_one_line_exit_75(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.sqlite3"
    HistoryStore.create(path).close()
    code, out, err = search(capsys, TEXT, "--history", str(path))
    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert err.count("\n") == 1 and "holds no windows yet" in err


def test_a_corrupt_database_is_one_line_exit_75(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.sqlite3"
    path.write_bytes(np.random.default_rng(0).bytes(100_000))
    code, out, err = search(capsys, TEXT, "--history", str(path))
    assert (code, out) == (EXIT_UNAVAILABLE, "")
    assert err.count("\n") == 1 and "unusable" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "last tuesday"], "--since"),
        (["--until", "2024-13-01"], "--until"),
        (["--since", "1h", "--until", "2h"], "after --until"),
        (["--threshold", "1.5"], "--threshold"),
        (["--top", "0"], "--top"),
        (["--jobs", "0"], "--jobs"),
        (["--softmax"], "--softmax"),
        (["--source", "garage"], "garage"),
    ],
)
def test_bad_arguments_are_one_line_exit_78(
    history: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    code, out, err = search(capsys, TEXT, "--history", str(history), *args)
    assert (code, out) == (EXIT_CONFIG, "")
    assert err.count("\n") == 1 and words in err

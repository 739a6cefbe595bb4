"""Labelled datasets for `audio-monitor eval`: an ESC-50 directory or a Hugging Face dataset."""

from __future__ import annotations

import csv
import importlib.util
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from monitor.audio.decode import Clip, load_clip
from monitor.audio.resample import MODEL_SAMPLE_RATE_HZ, resample_to
from monitor.audio.windowing import to_mono
from monitor.config import looks_like_path, slugify
from monitor.errors import ConfigError, SourceError, first_line

logger = logging.getLogger(__name__)

ESC50_CSV = Path("meta") / "esc50.csv"
ESC50_AUDIO = Path("audio")
REQUIRED_COLUMNS = ("filename", "fold", "target", "category")
DEFAULT_SET_NAME = "esc50"
INSTALL_DATASETS = "pip install 'audio-monitor[datasets]'"


@dataclass(frozen=True)
class LabelledClip:
    """One row of the dataset: which file, its fold and class, and how to decode it."""

    filename: str
    fold: int
    target: int
    category: str
    load: Callable[[], Clip] = field(repr=False, compare=False)


@dataclass(frozen=True)
class LabelledDataset:
    """A labelled dataset: its classes (ordered by target) and every row, sorted by filename."""

    source: str
    kind: Literal["directory", "hub"]
    name: str  # slug for the suggested label set's name
    targets: tuple[int, ...]
    classes: tuple[str, ...]  # label names: the categories with '_' -> ' '
    clips: tuple[LabelledClip, ...]

    def select(self, folds: Sequence[int] | None, limit: int | None) -> list[LabelledClip]:
        """The rows of these folds (all when None), the first `limit` of them by filename."""
        chosen = list(self.clips)
        if folds:
            wanted = set(folds)
            present = {clip.fold for clip in self.clips}
            chosen = [clip for clip in chosen if clip.fold in wanted]
            if not chosen:
                have = ", ".join(str(f) for f in sorted(present))
                raise ConfigError(
                    f"--folds {' '.join(str(f) for f in folds)}: no clips in these folds "
                    f"(the dataset has folds {have})"
                )
            for fold in sorted(wanted - present):
                logger.warning("--folds: fold %d has no clips in %s", fold, self.source)
        return chosen[:limit] if limit is not None else chosen

    def class_index(self, clip: LabelledClip) -> int:
        return self.targets.index(clip.target)


def open_dataset(spec: str) -> LabelledDataset:
    """A directory in the ESC-50 layout, else a Hugging Face dataset id (needs `datasets`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return read_esc50_directory(path)
    if path.exists():
        raise ConfigError(
            f"--dataset {spec}: is a file; expected a directory in the ESC-50 layout "
            "(meta/esc50.csv and audio/) or a Hugging Face dataset id"
        )
    if looks_like_path(spec):
        raise ConfigError(f"--dataset {spec}: no such directory")
    return read_hub_dataset(spec)


def _class_names(rows: Sequence[tuple[int, str]], where: str) -> tuple[tuple[int, ...], list[str]]:
    """Targets in ascending order and their label names, checked to be one-to-one."""
    by_target: dict[int, str] = {}
    for target, category in rows:
        known = by_target.setdefault(target, category)
        if known != category:
            raise ConfigError(
                f"{where}: target {target} is both {known!r} and {category!r}; "
                "each target needs one category"
            )
    targets = tuple(sorted(by_target))
    names = [by_target[t].replace("_", " ").strip() for t in targets]
    seen: dict[str, int] = {}
    for target, name in zip(targets, names, strict=True):
        if not slugify(name):
            raise ConfigError(f"{where}: category of target {target} has no letter or digit")
        if slugify(name) in seen:
            raise ConfigError(
                f"{where}: targets {seen[slugify(name)]} and {target} have the same "
                f"category {name!r}"
            )
        seen[slugify(name)] = target
    return targets, names


def _build_dataset(
    source: str,
    kind: Literal["directory", "hub"],
    name: str,
    rows: Sequence[tuple[str, int, int, str, Callable[[], Clip]]],
) -> LabelledDataset:
    if not rows:
        raise ConfigError(f"--dataset {source}: lists no clips")
    targets, classes = _class_names([(r[2], r[3]) for r in rows], source)
    clips = sorted((LabelledClip(*row) for row in rows), key=lambda clip: clip.filename)
    return LabelledDataset(
        source=source,
        kind=kind,
        name=name or DEFAULT_SET_NAME,
        targets=targets,
        classes=tuple(classes),
        clips=tuple(clips),
    )


def read_esc50_directory(directory: Path) -> LabelledDataset:
    """meta/esc50.csv (filename, fold, target, category, ...) and the clips in audio/."""
    csv_path = directory / ESC50_CSV
    audio_dir = directory / ESC50_AUDIO
    if not csv_path.is_file():
        raise ConfigError(
            f"--dataset {directory}: no {ESC50_CSV.as_posix()} (the ESC-50 layout is "
            "meta/esc50.csv listing filename,fold,target,category and the clips in audio/)"
        )
    if not audio_dir.is_dir():
        raise ConfigError(f"--dataset {directory}: no audio/ directory next to meta/")
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{csv_path}: missing column(s) {', '.join(missing)}")
            records = list(reader)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{csv_path}: not UTF-8 text ({err.reason})") from err
    except (OSError, csv.Error) as err:
        raise ConfigError(f"{csv_path}: cannot read ({first_line(err)})") from err
    rows = []
    for line, record in enumerate(records, start=2):
        filename = (record["filename"] or "").strip()
        category = (record["category"] or "").strip()
        try:
            fold, target = int(record["fold"]), int(record["target"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{csv_path}: line {line}: fold and target must be integers") from err
        if not filename or not category:
            raise ConfigError(f"{csv_path}: line {line}: empty filename or category")
        rows.append((filename, fold, target, category, partial(load_clip, audio_dir / filename)))
    return _build_dataset(str(directory), "directory", slugify(directory.resolve().name), rows)


def read_hub_dataset(dataset_id: str) -> LabelledDataset:
    """A Hugging Face dataset with ESC-50's columns (e.g. ashraq/esc50), its "train" split."""
    if importlib.util.find_spec("datasets") is None:
        raise ConfigError(
            f"--dataset {dataset_id}: not a local directory, and reading a Hugging Face "
            f"dataset needs the optional `datasets` package: {INSTALL_DATASETS}"
        )
    import datasets

    try:
        loaded: Any = datasets.load_dataset(dataset_id)
    except Exception as err:
        raise SourceError(
            f"--dataset {dataset_id}: cannot load it from the Hugging Face hub ({first_line(err)})"
        ) from err
    split: Any = loaded
    if isinstance(loaded, datasets.DatasetDict):
        split = loaded["train"] if "train" in loaded else loaded[sorted(loaded)[0]]
    missing = [c for c in (*REQUIRED_COLUMNS, "audio") if c not in split.column_names]
    if missing:
        raise ConfigError(f"--dataset {dataset_id}: missing column(s) {', '.join(missing)}")
    # Undecoded bytes, read with libsndfile like local clips: datasets' own decoder differs
    # between releases (and may need extra packages).
    split = split.cast_column("audio", datasets.Audio(decode=False))
    meta = split.select_columns(list(REQUIRED_COLUMNS)).to_dict()
    rows = []
    for i, filename in enumerate(meta["filename"]):
        load = partial(_hub_clip, split, i, str(filename))
        rows.append(
            (str(filename), int(meta["fold"][i]), int(meta["target"][i]), meta["category"][i], load)
        )
    return _build_dataset(dataset_id, "hub", slugify(dataset_id.rpartition("/")[2]), rows)


def _hub_clip(split: Any, index: int, filename: str) -> Clip:
    try:
        audio = split[index]["audio"]
    except Exception as err:
        raise SourceError(f"{filename}: cannot read the row ({first_line(err)})") from err
    return clip_from_hub_audio(filename, audio)


def clip_from_hub_audio(filename: str, audio: Mapping[str, Any]) -> Clip:
    """A Clip from a datasets Audio value: decoded {array, sampling_rate} or {bytes, path}."""
    if audio.get("array") is not None:
        return _clip_from_array(filename, audio["array"], audio.get("sampling_rate"))
    if audio.get("bytes"):
        with tempfile.TemporaryDirectory(prefix="audio-monitor-eval-") as tmp:
            path = Path(tmp) / ("clip" + Path(filename).suffix)
            path.write_bytes(audio["bytes"])
            try:
                clip = load_clip(path)
            except SourceError as err:
                raise SourceError(str(err).replace(str(path), filename)) from err
        return replace(clip, path=Path(filename))
    if audio.get("path") and Path(audio["path"]).is_file():
        return replace(load_clip(Path(audio["path"])), path=Path(filename))
    raise SourceError(f"{filename}: the dataset row holds no audio")


def _clip_from_array(filename: str, array: Any, rate: Any) -> Clip:
    data = np.asarray(array, dtype=np.float32)
    if rate is None or int(rate) <= 0:
        raise SourceError(f"{filename}: no sampling rate")
    if data.ndim == 2 and data.shape[0] < data.shape[1]:
        data = data.T  # (channels, frames) -> (frames, channels)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise SourceError(f"{filename}: contains no audio (shape {data.shape})")
    if not np.isfinite(data).all():
        raise SourceError(f"{filename}: samples are NaN or infinite")
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    samples = resample_to(to_mono(data), int(rate), MODEL_SAMPLE_RATE_HZ)
    return Clip(Path(filename), samples, int(rate), channels)

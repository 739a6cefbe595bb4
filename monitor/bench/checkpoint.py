"""The checkpoint the bench loads: a directory, the cached hub checkpoint, or random weights."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.bench.results import CheckpointReport
from monitor.bench.workload import BENCH_LABELS, RANDOM_SEED
from monitor.config import DEFAULT_PROMPT_TEMPLATE, looks_like_path
from monitor.errors import ModelError, first_line
from monitor.model.embedcache import cache_directory

logger = logging.getLogger(__name__)

HUB_ID = "laion/clap-htsat-unfused"
CONFIG_DIR_ENV = "AUDIO_MONITOR_CLAP_CONFIG_DIR"
RANDOM_NOTE = "random weights: timings are real, scores are not"
RANDOM_BUILD_VERSION = 1  # part of the cache key: bump when the random checkpoint changes


@dataclass(frozen=True)
class Checkpoint:
    """What both paths load: always a local directory."""

    path: Path
    origin: str  # "directory", "hub" or "random"
    random_weights: bool
    config_dir: Path | None  # where a random checkpoint's architecture came from
    fallback_reason: str | None  # why the hub checkpoint was not used

    def report(self) -> CheckpointReport:
        return CheckpointReport(
            origin=self.origin,
            path=str(self.path),
            random_weights=self.random_weights,
            config_dir=None if self.config_dir is None else str(self.config_dir),
            fallback_reason=self.fallback_reason,
        )

    @property
    def note(self) -> str | None:
        """The warning every report carries when the scores mean nothing."""
        return RANDOM_NOTE if self.random_weights else None


def _hub_snapshot(hub_id: str, download: bool) -> tuple[Path | None, str | None]:
    """The hub checkpoint as a local snapshot with weights, or None and why not."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(
                hub_id,
                allow_patterns=["*.json", "*.txt", "*.safetensors"],
                local_files_only=not download,
            )
        )
    except Exception as err:  # offline, not cached, unknown repository: all mean "not usable"
        if not download:
            return None, f"{hub_id} is not in the Hugging Face cache"
        return None, f"{hub_id} cannot be loaded ({first_line(err)})"
    if not any(folder.glob("*.safetensors")) or not (folder / "config.json").is_file():
        return None, f"the weights of {hub_id} are not in the Hugging Face cache"
    return folder, None


def _has_config(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (
        directory / "preprocessor_config.json"
    ).is_file()


def find_config_dir(hub_id: str = HUB_ID) -> Path:
    """The checkpoint's config.json and preprocessor_config.json, for random weights."""
    from_env = os.environ.get(CONFIG_DIR_ENV)
    if from_env:
        path = Path(from_env).expanduser()
        if not _has_config(path):
            raise ModelError(
                f"{CONFIG_DIR_ENV}={from_env}: needs config.json and preprocessor_config.json "
                f"of {hub_id}"
            )
        return path
    # A checkout next to a shared copy of the configuration (how development machines have it).
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "clap-htsat-unfused"
    if hub_id == HUB_ID and _has_config(beside_repo):
        return beside_repo
    from huggingface_hub import snapshot_download

    try:
        folder = Path(
            snapshot_download(hub_id, allow_patterns=["config.json", "preprocessor_config.json"])
        )
    except Exception as err:
        raise ModelError(
            f"no CLAP checkpoint to bench: {hub_id} is neither cached nor reachable "
            f"({first_line(err)}); pass --model DIR, or set {CONFIG_DIR_ENV} to a directory "
            "holding its config.json and preprocessor_config.json"
        ) from err
    if not _has_config(folder):
        raise ModelError(f"{hub_id}: the hub has no config.json/preprocessor_config.json")
    return folder


def resolve_checkpoint(model: str | None) -> Checkpoint:
    """--model as a directory or hub id when it loads; else random full-size weights."""
    if model is not None:
        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelError(f"--model {model}: no config.json; not a CLAP checkpoint")
            return Checkpoint(path, "directory", False, None, None)
        if looks_like_path(model):
            raise ModelError(f"--model {model}: no such directory")
    hub_id = model or HUB_ID
    # Only an explicit --model downloads: by default the bench never fetches the full
    # checkpoint silently.
    snapshot, reason = _hub_snapshot(hub_id, download=model is not None)
    if snapshot is not None:
        return Checkpoint(snapshot, "hub", False, None, None)
    config_dir = find_config_dir(hub_id)
    logger.info("%s; using random weights of the same architecture", reason)
    return Checkpoint(ensure_random_checkpoint(config_dir), "random", True, config_dir, reason)


def _tokenizer_corpus() -> list[str]:
    template = DEFAULT_PROMPT_TEMPLATE
    corpus = [template.replace("{}", "").strip(), *BENCH_LABELS]
    corpus += [template.format(label) for label in BENCH_LABELS]
    corpus += ["sound number " + " ".join(str(i) for i in range(100))]  # labels past the 50th
    return corpus


def ensure_random_checkpoint(config_dir: Path) -> Path:
    """A full-size random checkpoint for `config_dir`, built once into the cache and reused."""
    key = hashlib.sha256()
    for name in ("config.json", "preprocessor_config.json"):
        key.update((config_dir / name).read_bytes())
    key.update(f"v{RANDOM_BUILD_VERSION} seed {RANDOM_SEED}".encode())
    key.update("\n".join(_tokenizer_corpus()).encode())
    target = cache_directory(None) / f"bench-random-{key.hexdigest()[:16]}"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        logger.info("random checkpoint: %s (cached)", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building a random full-size checkpoint from %s in %s (once)", config_dir, target)
    building = Path(tempfile.mkdtemp(prefix=".bench-random-", dir=target.parent))
    try:
        build_random_checkpoint(config_dir, building)
        try:
            building.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # not another bench's finished copy
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _train_tokenizer(path: Path, vocab_size: int) -> None:
    """A byte-level BPE with RoBERTa's special ids, trained on the bench prompts.

    Every word of the prompts becomes one token, as with RoBERTa's own vocabulary, so the text
    tower sees sequences of the real length.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    for token_id, token in enumerate(specials):
        if tokenizer.token_to_id(token) != token_id:
            raise ModelError(f"random checkpoint: special token {token} did not get id {token_id}")
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    tokenizer.save(str(path))


def build_random_checkpoint(config_dir: Path, directory: Path) -> Path:
    """Save ClapModel(config) with random weights, a tokenizer and the checkpoint's extractor.

    The compute per window is that of the real checkpoint; the scores mean nothing.
    """
    import torch
    from transformers import (
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        RobertaTokenizerFast,
    )
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    config: Any = ClapConfig.from_pretrained(str(config_dir))
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer_file = directory / "_tokenizer.json"
    _train_tokenizer(tokenizer_file, min(2000, int(config.text_config.vocab_size)))
    torch.manual_seed(RANDOM_SEED)
    model: Any = ClapModel(config)
    model.eval()
    with torch.no_grad():
        # Mel input is in dB (about -100..+20); typical statistics instead of 0/1.
        norm = model.audio_model.audio_encoder.batch_norm
        norm.running_mean.uniform_(-60.0, -20.0)
        norm.running_var.uniform_(100.0, 400.0)
    model.save_pretrained(str(directory))
    max_length = int(config.text_config.max_position_embeddings) - 2  # RoBERTa's offset of 2
    tokenizer = RobertaTokenizerFast(
        tokenizer_file=str(tokenizer_file), model_max_length=max_length
    )
    extractor: Any = ClapFeatureExtractor.from_pretrained(str(config_dir))
    processor_class: Any = ClapProcessor
    processor_class(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(
        str(directory)
    )
    tokenizer_file.unlink()
    return directory

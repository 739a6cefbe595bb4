"""Where a CLAP checkpoint comes from, what it holds beside the towers, why it fails to load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monitor.config import ModelConfig, looks_like_path
from monitor.errors import ModelError, first_line
from monitor.model.embedcache import CheckpointIdentity, checkpoint_identity, locate_checkpoint

CHECKPOINT_FILES = "config.json, model.safetensors, the tokenizer and preprocessor files"


def resolve_source(cfg: ModelConfig) -> str:
    """The argument for from_pretrained: a local directory if there is one, else the hub id."""
    path = Path(cfg.name).expanduser()
    if path.is_dir():
        return str(path)
    if looks_like_path(cfg.name):
        kind = "is not a directory" if path.exists() else "no such directory"
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: {kind}; set model.name to a directory holding "
            f"the checkpoint ({CHECKPOINT_FILES}), e.g. made with "
            "`hf download laion/clap-htsat-unfused --local-dir DIR`, or to a hub id"
        )
    return cfg.name


def revision_of(cfg: ModelConfig) -> str:
    """The revision to load: the configured one, else transformers' default."""
    return cfg.revision if cfg.revision is not None else "main"


def checkpoint_dir(cfg: ModelConfig, source: str) -> Path:
    """The local directory of the (now downloaded) checkpoint files."""
    directory = locate_checkpoint(source, cfg.revision)
    if directory is None:
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: its files are not in the Hugging Face cache "
            "after loading; set model.name to a local directory holding the checkpoint"
        )
    return directory


def identity_of(cfg: ModelConfig) -> CheckpointIdentity | None:
    """The checkpoint's cache identity, if its files are on this machine (no network)."""
    directory = locate_checkpoint(cfg.name, cfg.revision)
    return None if directory is None else checkpoint_identity(cfg.name, cfg.revision, directory)


def check_complete(cfg: ModelConfig, tower: str, info: dict[str, Any]) -> None:
    """ModelError if from_pretrained's loading info reports weights of `tower` missing."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ModelError(
            f"cannot load CLAP model {cfg.name!r}: the checkpoint lacks {tower} weights "
            f"({', '.join(missing[:3])}{more}); is it a CLAP checkpoint?"
        )


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def load_error_message(cfg: ModelConfig, source: str, err: BaseException) -> str:
    """One line: what went wrong loading the checkpoint and how to provide it."""
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import errors as hub_errors

    head = f"cannot load CLAP model {cfg.name!r}"
    if cfg.revision is not None:
        head += f" (revision {cfg.revision!r})"
    chain = _causes(err)

    def found(kind: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, kind)), None)

    if Path(source).is_dir():
        return (
            f"{head}: the directory is incomplete or not a CLAP checkpoint ({first_line(err)}); "
            f"it needs {CHECKPOINT_FILES}, as `hf download laion/clap-htsat-unfused "
            "--local-dir DIR` writes them"
        )
    revision = f" --revision {cfg.revision}" if cfg.revision is not None else ""
    download = f"`hf download {cfg.name}{revision}`"
    elsewhere = (
        f"download them on a connected machine ({download}, or `huggingface-cli download` with "
        f"older hubs) and copy the cache ({hub_constants.HF_HUB_CACHE}), or set model.name to a "
        "local directory holding the checkpoint"
    )
    gated = found(hub_errors.GatedRepoError)
    if gated is not None:
        return (
            f"{head}: the repository is gated; accept its terms on huggingface.co and log in "
            f"(`hf auth login`), or set model.name to a local directory holding the checkpoint"
        )
    if found(hub_errors.RepositoryNotFoundError) is not None:
        return (
            f"{head}: no such repository on the Hugging Face hub (or it is private: log in with "
            "`hf auth login`); check model.name or set it to a local directory holding the "
            "checkpoint"
        )
    if found(hub_errors.RevisionNotFoundError) is not None:
        return f"{head}: no such revision on the hub; check model.revision"
    if found(hub_errors.HFValidationError) is not None:
        return (
            f"{head}: neither a local directory nor a valid hub id ('owner/name'); set model.name "
            "to a directory holding the checkpoint or to a hub id"
        )
    not_cached = (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled)
    if any(isinstance(e, not_cached) for e in chain):
        if hub_constants.is_offline_mode():
            return (
                f"{head}: weights not available offline (HF_HUB_OFFLINE is set and they are not "
                f"in the Hugging Face cache); {elsewhere}, or unset HF_HUB_OFFLINE to allow "
                "downloading"
            )
        # The innermost exception names the network failure (DNS, refused, timeout).
        cause = f" ({first_line(chain[-1])})" if len(chain) > 2 else ""
        return f"{head}: the hub is unreachable{cause} and the weights are not cached; {elsewhere}"
    if found(hub_errors.EntryNotFoundError) is not None:
        return (
            f"{head}: the repository lacks a file of a CLAP checkpoint ({first_line(err)}); "
            "check model.name and model.revision"
        )
    return f"{head}: {first_line(err)}; {elsewhere}"

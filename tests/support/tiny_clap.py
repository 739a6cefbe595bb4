"""A tiny random CLAP checkpoint (real transformers files), built once, and its runner."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from monitor.model.runner import ClapRunner

SEED = 1234
# Deliberately different from each other: the zero-shot pipeline scales audio->text logits by
# logit_scale_a, so a runner that took logit_scale_t would be caught by the tests.
LOGIT_SCALE_A = 10.0
LOGIT_SCALE_T = 3.0
PROJECTION_DIM = 16
TINY_CLAP_FILES = (
    "config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

# The real laion/clap-htsat-unfused preprocessor_config.json, field by field.
FEATURE_EXTRACTOR_SETTINGS: dict[str, object] = {
    "feature_size": 64,
    "sampling_rate": 48000,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "padding_value": 0.0,
    "return_attention_mask": False,
    "frequency_min": 50,
    "frequency_max": 14000,
    "top_db": None,
    "truncation": "rand_trunc",
    "padding": "repeatpad",
}

_CORPUS = (
    "This is a sound of {}.",
    "dog barking",
    "cat meowing",
    "glass breaking",
    "smoke alarm",
    "doorbell",
    "baby crying",
    "speech",
    "music",
    "silence",
    "rain",
    "knock on the door",
    "car horn",
    "siren",
    "footsteps",
    "water running",
    "a person talking",
    "birds singing",
    "the quick brown fox jumps over the lazy dog 0123456789",
)
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0..4


def _train_tokenizer(path: Path) -> int:
    """Train a byte-level BPE on the corpus, save tokenizer.json; return its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [text.replace("{}", "") for text in _CORPUS]
    corpus += ["This is a sound of " + text + "." for text in _CORPUS[1:]]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    for token_id, token in enumerate(_SPECIAL_TOKENS):
        if tokenizer.token_to_id(token) != token_id:
            raise RuntimeError(f"special token {token} did not get id {token_id}")
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    tokenizer.save(str(path))
    return int(tokenizer.get_vocab_size())


def build_tiny_clap(directory: Path) -> Path:
    """Write a tiny, deterministic random CLAP checkpoint into `directory` and return it.

    Uses only transformers' own classes and save_pretrained, so the result loads through the
    same code paths as the real hub checkpoint (ClapModel/ClapProcessor/pipeline).
    """
    import torch
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapProcessor,
        ClapTextConfig,
        RobertaTokenizerFast,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    work = directory / "_build"
    work.mkdir(exist_ok=True)
    vocab_size = _train_tokenizer(work / "tokenizer.json")

    text_config = ClapTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        projection_dim=PROJECTION_DIM,
    )
    # spec_size 256 with 64 mel bins is the smallest HTSAT input that holds 10 s (1001 frames).
    audio_config = ClapAudioConfig(
        spec_size=256,
        num_mel_bins=64,
        window_size=8,
        patch_size=4,
        patch_stride=[4, 4],
        patch_embeds_hidden_size=16,
        hidden_size=32,
        depths=[2, 2],  # the second block of a stage attends in shifted windows
        num_attention_heads=[2, 2],
        enable_fusion=False,
        projection_dim=PROJECTION_DIM,
    )
    config = ClapConfig(
        text_config=text_config.to_dict(),
        audio_config=audio_config.to_dict(),
        projection_dim=PROJECTION_DIM,
        logit_scale_init_value=LOGIT_SCALE_A,
        initializer_factor=1.0,
    )

    torch.manual_seed(SEED)
    model: Any = ClapModel(config)
    model.eval()
    with torch.no_grad():
        model.logit_scale_a.fill_(math.log(LOGIT_SCALE_A))
        model.logit_scale_t.fill_(math.log(LOGIT_SCALE_T))
        # The library's init (std 0.02) makes every prompt embed almost identically (cosine
        # 0.998), so all scores would be near-uniform; unit-scale text weights separate them.
        for module in (model.text_model, model.text_projection):
            for name, weight in module.named_parameters():
                if weight.dim() == 2:
                    std = 1.0 if "embeddings" in name else 1.0 / math.sqrt(weight.shape[1])
                    weight.normal_(0.0, std)
        # Mel input is in dB (about -100..+20); typical statistics keep windows apart.
        norm = model.audio_model.audio_encoder.batch_norm
        norm.running_mean.uniform_(-60.0, -20.0)
        norm.running_var.uniform_(100.0, 400.0)
        # The library leaves the relative position biases at zero; a trained model's are not,
        # and the monitor's fused window attention gathers them itself.
        for name, weight in model.audio_model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                weight.normal_(0.0, 1.0)
    model.save_pretrained(directory)

    tokenizer = RobertaTokenizerFast(
        tokenizer_file=str(work / "tokenizer.json"), model_max_length=128
    )
    feature_extractor = ClapFeatureExtractor(**FEATURE_EXTRACTOR_SETTINGS)  # type: ignore[arg-type]
    processor: Any = ClapProcessor
    processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(directory)
    for leftover in work.iterdir():
        leftover.unlink()
    work.rmdir()
    return directory


@pytest.fixture(scope="session")
def tiny_clap_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny random CLAP checkpoint directory, shared by the whole test session."""
    return build_tiny_clap(tmp_path_factory.mktemp("tiny-clap"))


@pytest.fixture(scope="module")
def runner(tiny_clap_dir: Path) -> ClapRunner:
    """The tiny checkpoint loaded with default settings, once per test module."""
    from monitor.config import ModelConfig
    from monitor.model.runner import load_clap

    return load_clap(ModelConfig(precision="fp32", name=str(tiny_clap_dir)))


if __name__ == "__main__":
    # `python -m tests.support.tiny_clap DIR` builds a checkpoint for scripts and subprocess tests.
    target = build_tiny_clap(Path(sys.argv[1]))
    print(json.dumps({"path": str(target), "files": sorted(p.name for p in target.iterdir())}))

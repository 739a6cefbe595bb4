"""Scoring modes on the tiny checkpoint and hand-built vectors: softmax, background, absolute."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from monitor.config import LabelSetConfig
from monitor.model.runner import ClapRunner
from monitor.pipeline.scoring import (
    COSINE_KNEE,
    LabelSetScorer,
    build_scorers,
    cosine_score,
    ensemble_embeddings,
    softmax,
)

LOGIT_SCALE = 100.0  # about what CLAP checkpoints learn: exp(4.6)


@pytest.fixture(scope="module")
def audio(runner: ClapRunner) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(48000 * 3) / 48000
    windows = [
        (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (220.0, 1000.0, 4000.0)
    ]
    windows.append((0.1 * rng.standard_normal(48000 * 2)).astype(np.float32))
    return runner.embed_audio(windows)


def scorer(runner: ClapRunner, **fields: Any) -> LabelSetScorer:
    return LabelSetScorer.build(
        LabelSetConfig(name="s", **fields), runner.embed_text, runner.logit_scale
    )


def test_softmax_without_background_sums_to_one(runner: ClapRunner, audio: np.ndarray) -> None:
    scores = scorer(runner, labels=["dog", "cat", "bird"]).score(audio)
    assert scores.shape == (4, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_background_takes_part_in_softmax_but_is_not_a_label(
    runner: ClapRunner, audio: np.ndarray
) -> None:
    plain = scorer(runner, labels=["dog", "cat"])
    with_bg = scorer(runner, labels=["dog", "cat"], background=["silence", "traffic"])
    assert with_bg.labels == ("dog", "cat")
    scores = with_bg.score(audio)
    assert scores.shape == (4, 2)
    assert (scores.sum(axis=1) < 1.0 - 1e-6).all()  # the background took its share
    # Same as a plain softmax over all four, keeping the labels' columns.
    everything = scorer(runner, labels=["dog", "cat", "silence", "traffic"]).score(audio)
    np.testing.assert_allclose(scores, everything[:, :2], atol=1e-6)
    # The ranking among labels is the same with or without background.
    assert (scores.argmax(axis=1) == plain.score(audio).argmax(axis=1)).all()


@pytest.mark.parametrize("background", [[], ["silence", "people talking"]])
def test_absolute_mode_is_independent_of_the_other_labels(
    runner: ClapRunner, audio: np.ndarray, background: list[str]
) -> None:
    small = scorer(runner, mode="absolute", labels=["dog"], background=background)
    large = scorer(
        runner,
        mode="absolute",
        labels=["cat", "dog", "glass breaking", "siren"],
        background=background,
    )
    np.testing.assert_allclose(small.score(audio)[:, 0], large.score(audio)[:, 1], atol=1e-6)
    # ...whereas a softmax score does change when labels are added.
    soft_small = scorer(runner, labels=["dog", "cat"], background=background).score(audio)
    soft_large = scorer(
        runner, labels=["cat", "dog", "glass breaking", "siren"], background=background
    ).score(audio)
    assert np.abs(soft_small[:, 0] - soft_large[:, 1]).max() > 1e-3


def test_absolute_scores_are_what_the_docs_say(runner: ClapRunner, audio: np.ndarray) -> None:
    text = runner.embed_text(["This is a sound of dog.", "This is a sound of silence."])
    cos = audio @ text.T
    plain = scorer(runner, mode="absolute", labels=["dog"]).score(audio)[:, 0]
    np.testing.assert_allclose(plain, cosine_score(cos[:, 0]), atol=1e-6)
    above = cos[:, 0] >= COSINE_KNEE  # where thresholds mean the cosine itself
    np.testing.assert_allclose(plain[above], cos[above, 0], atol=1e-6)
    margin = scorer(runner, mode="absolute", labels=["dog"], background=["silence"])
    two_way = softmax(runner.logit_scale * cos)[:, 0]  # the label vs the background
    np.testing.assert_allclose(margin.score(audio)[:, 0], two_way, atol=1e-6)
    # A label identical to the background sits exactly at 0.5.
    same = LabelSetScorer("s", ("x",), (0.5,), "absolute", text[:1], text[:1], runner.logit_scale)
    np.testing.assert_allclose(same.score(audio)[:, 0], 0.5, atol=1e-6)


def test_prompt_ensemble_averages_and_renormalises(runner: ClapRunner) -> None:
    templates = ["This is a sound of {}.", "A recording of {}.", "{} can be heard."]
    prompts = [t.format("dog") for t in templates]
    single = ensemble_embeddings(runner.embed_text, [prompts[:1]])
    np.testing.assert_allclose(single[0], runner.embed_text(prompts[:1])[0], atol=1e-7)
    ensemble = ensemble_embeddings(runner.embed_text, [prompts, ["cat"]])
    expected = runner.embed_text(prompts).mean(axis=0)
    np.testing.assert_allclose(ensemble[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.linalg.norm(ensemble[0]) == pytest.approx(1.0, abs=1e-6)
    # Through the config: a list of templates is an ensemble per label.
    built = scorer(runner, prompt_template=templates, labels=["dog", "cat"])
    np.testing.assert_allclose(built.text_embeddings[0], ensemble[0], atol=1e-6)


def test_label_own_prompts_override_the_template(runner: ClapRunner) -> None:
    built = scorer(runner, labels=[{"name": "dog", "prompt": ["woof", "a barking dog"]}, "cat"])
    expected = ensemble_embeddings(runner.embed_text, [["woof", "a barking dog"]])
    np.testing.assert_allclose(built.text_embeddings[0], expected[0], atol=1e-6)


def test_build_scorers_embeds_every_prompt_of_every_set_in_one_call(runner: ClapRunner) -> None:
    calls: list[list[str]] = []

    def counting(prompts: Any) -> np.ndarray:
        calls.append(list(prompts))
        return runner.embed_text(prompts)

    sets = [
        LabelSetConfig(name="a", labels=["dog", "cat"], background=["silence"]),
        LabelSetConfig(name="b", prompt_template=["{}", "a {}"], labels=["x", "y"]),
        LabelSetConfig(name="c", labels=["cat", "bird"]),  # "cat" again: embedded once
    ]
    scorers = build_scorers(sets, counting, runner.logit_scale)
    assert [s.name for s in scorers] == ["a", "b", "c"]
    # One call (one helper process for the daemon's backends, on a cold cache), no repeats.
    assert calls == [
        [
            "This is a sound of dog.",
            "This is a sound of cat.",
            "This is a sound of silence.",
            "x",
            "a x",
            "y",
            "a y",
            "This is a sound of bird.",
        ]
    ]
    # Each set's embeddings are what it gets when built alone.
    for label_set, built in zip(sets, scorers, strict=True):
        alone = LabelSetScorer.build(label_set, runner.embed_text, runner.logit_scale)
        np.testing.assert_array_equal(built.text_embeddings, alone.text_embeddings)
        np.testing.assert_array_equal(built.background_embeddings, alone.background_embeddings)


def test_with_mode_reuses_embeddings(runner: ClapRunner, audio: np.ndarray) -> None:
    soft = scorer(runner, labels=["dog", "cat"], background=["silence"])
    absolute = soft.with_mode("absolute")
    assert absolute.text_embeddings is soft.text_embeddings
    direct = scorer(runner, mode="absolute", labels=["dog", "cat"], background=["silence"])
    np.testing.assert_allclose(absolute.score(audio), direct.score(audio), atol=1e-7)


def hand_built(cosines: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """One audio unit vector and one label unit vector per cosine, at exactly that cosine."""
    c = np.asarray(cosines, dtype=np.float64)
    dim = len(c) + 1
    audio = np.eye(1, dim)
    text = np.zeros((len(c), dim))
    text[:, 0] = c
    text[np.arange(len(c)), np.arange(1, dim)] = np.sqrt(1.0 - c**2)  # each its own direction
    return audio.astype(np.float32), text.astype(np.float32)


def ranks_strictly_by(scores: np.ndarray, cosines: np.ndarray) -> bool:
    """A higher cosine always scores strictly higher: same order, and no ties it lacks."""
    order = np.argsort(cosines)
    return bool((np.diff(scores[order]) > 0).all())


@pytest.mark.parametrize(
    "cosines",
    [
        [0.45, 0.2, 0.05, 0.0, -0.1, 0.3],
        [-0.05, -0.3, -0.9, -0.31, -1.0, -0.5],  # all negative: all tied at 0 when clipped
        [0.3, 0.3001, -0.2, -0.2001, 0.0499, 0.0501, -0.0001, 0.0001],  # close pairs
    ],
)
def test_absolute_without_background_ranks_labels_as_softmax_does(cosines: list[float]) -> None:
    audio, text = hand_built(cosines)
    cos = (audio @ text.T)[0]
    names = tuple(f"l{i}" for i in range(len(cosines)))
    soft = LabelSetScorer("s", names, (0.5,) * len(names), "softmax", text, text[:0], LOGIT_SCALE)
    absolute = soft.with_mode("absolute").score(audio)[0]
    assert ranks_strictly_by(soft.score(audio)[0], cos)
    assert ranks_strictly_by(absolute, cos)  # hence the same ranking as softmax, tie-free
    assert ((absolute > 0) & (absolute <= 1)).all()
    # Thresholds at or above the knee still mean the cosine itself.
    above = cos >= COSINE_KNEE
    np.testing.assert_allclose(absolute[above], cos[above], atol=1e-6)
    assert (absolute[~above] < COSINE_KNEE).all()


def test_cosine_score_is_strictly_increasing_onto_0_1() -> None:
    grid = np.linspace(-1.0, 1.0, 20001)
    scores = cosine_score(grid)
    assert (np.diff(scores) > 0).all()
    assert scores[0] > 0 and scores[-1] == 1.0
    lowest = COSINE_KNEE**2 / (1 + 2 * COSINE_KNEE)
    assert cosine_score(np.array([-1.0]))[0] == pytest.approx(lowest)
    # Continuous at the knee (the tail meets the identity there), and a cosine rounded a hair
    # above 1 still scores 1.
    below = cosine_score(np.array([COSINE_KNEE - 1e-6]))[0]
    assert below == pytest.approx(COSINE_KNEE, abs=2e-6)
    assert cosine_score(np.array([1.0 + 1e-6]))[0] == 1.0


def test_absolute_ranking_matches_softmax_on_the_checkpoint(
    runner: ClapRunner, audio: np.ndarray
) -> None:
    soft = scorer(runner, labels=["dog", "cat", "bird", "siren", "glass breaking"])
    by_softmax = np.argsort(-soft.score(audio), axis=1, kind="stable")
    by_absolute = np.argsort(-soft.with_mode("absolute").score(audio), axis=1, kind="stable")
    np.testing.assert_array_equal(by_absolute, by_softmax)

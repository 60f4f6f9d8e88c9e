"""Offline span prediction and best-of-K reranking (model/separator.py) on the parity model with the extras'
PE-A-Frame and Judge beside it (random weights: what matters is that each step does what the official
pipeline does, with the official numbers of each part proven in tests/test_span_predictor.py and
tests/test_judge.py)."""

import numpy as np
import pytest
import torch

from fixtures.side_models import sam_directory_with_side_models
from samstream.model.audio import resample
from samstream.model.components import SideModels
from samstream.model.errors import PromptError
from samstream.model.registry import load_separator
from samstream.model.sampling import SolverConfig
from samstream.model.span_predictor import frames_to_seconds, runs

RATE = 16000


@pytest.fixture(scope="module")
def sam_dir(parity_dir, tmp_path_factory):
    return sam_directory_with_side_models(parity_dir, tmp_path_factory.mktemp("sam"))


@pytest.fixture(scope="module")
def separator(sam_dir):
    separator = load_separator(str(sam_dir), progress=False)
    separator.side_models = SideModels(sam_dir)
    separator.solver = SolverConfig("midpoint", 2)  # the plumbing is under test, not the sampler
    return separator


def mixture(seconds=1.3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.5) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


def test_predicted_spans_are_the_official_ones_and_reach_the_dit(separator):
    audio = mixture()
    result = separator.separate(audio, RATE, "music", predict_spans=True)
    # The official path by hand: the mixture latents SAM computed, PE-A-Frame, runs of p > 0.3, float32 seconds.
    inputs = separator.prepare([resample(torch.from_numpy(audio), RATE, 200)], ["music"], None)
    frames = -(-int(len(audio) * 200 / RATE) // 8)
    predictor = separator.side_models.span_predictor()
    probabilities = predictor.probabilities(inputs.audio_features[:, :frames, :16], inputs.pad_mask[:, :frames],
                                            ["music"])
    expected = [("+", *pair) for pair in frames_to_seconds(runs(probabilities > 0.3)[0], 8, 200)]
    assert result.predicted_spans == expected == [("+", 0.0, 0.07999999821186066)]  # random weights: the edge
    # Predicted anchors condition the DiT exactly as the same spans given by hand (PR #100's behaviour).
    by_hand = separator.separate(audio, RATE, "music", spans=expected)
    np.testing.assert_array_equal(result.target, by_hand.target)
    plain = separator.separate(audio, RATE, "music")
    assert not np.allclose(result.target, plain.target)


def test_user_spans_win_over_prediction(separator):
    audio = mixture()
    given = [("+", 0.2, 0.6)]
    result = separator.separate(audio, RATE, "dog barking", spans=given, predict_spans=True)
    assert result.predicted_spans is None
    np.testing.assert_array_equal(result.target, separator.separate(audio, RATE, "dog barking", spans=given).target)


def test_best_of_k_keeps_the_judges_favourite(separator):
    audio = mixture(seed=1)
    best = separator.separate(audio, RATE, "dog barking", candidates=3, seed=5)
    assert len(best.candidate_scores) == 3
    # Recompute each candidate alone: candidate k is the batch row with noise rows k of one [K,T,2C] draw.
    frames = -(-int(len(audio) * 200 / RATE) // 8)
    frames = -(-frames // 5) * 5  # the parity codec decodes whole multiples of 5 frames
    noise = torch.randn((3, frames, 32), generator=torch.Generator().manual_seed(5))
    singles = [separator.separate(audio, RATE, "dog barking", noise=noise[k:k + 1]) for k in range(3)]
    chosen = int(np.argmax(best.candidate_scores))
    np.testing.assert_allclose(best.target, singles[chosen].target, atol=1e-5)  # batch rounding only
    others = [k for k in range(3) if k != chosen]
    assert all(not np.allclose(best.target, singles[k].target) for k in others)
    # The scores are the Judge's overall score of (mixture, candidate target) at the model rate.
    judge = separator.side_models.judge()
    assert judge.sample_rate == separator.sample_rate


def test_side_model_errors_are_clear(separator, parity_model):
    from samstream.model.separator import SAMAudioSeparator

    bare = SAMAudioSeparator(parity_model)
    with pytest.raises(PromptError, match="needs the PE-A-Frame span predictor.*--span-predictor DIR"):
        bare.predict_spans(None, ["music"], [1])
    with pytest.raises(PromptError, match="needs the SAM Audio Judge.*--judge DIR"):
        bare.side_model("judge", "reranking (--candidates)")
    with pytest.raises(PromptError, match="needs a text prompt"):
        separator.separate(mixture(), RATE, None, predict_spans=True)
    with pytest.raises(PromptError, match="give one for every clip"):
        separator.separate(mixture(), RATE, None, spans=[("+", 0.1, 0.3)], candidates=2)
    with pytest.raises(PromptError, match="at least 1"):
        separator.separate(mixture(), RATE, "dog", candidates=0)

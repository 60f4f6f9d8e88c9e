"""Prompt wordings: every class has 5-10 lower-case training paraphrases and held-out wordings never trained on."""

from samstream.model.classes import ALL_CLASSES, REQUIRED_CLASSES
from samstream.model.class_prompts import PROMPTS, SPEAKER_PROMPTS, all_train_prompts, canonical


def test_every_class_has_paraphrases_and_heldout_wordings():
    assert set(PROMPTS) == set(ALL_CLASSES) and set(REQUIRED_CLASSES) <= set(PROMPTS)
    for cls, wordings in PROMPTS.items():
        assert 5 <= len(wordings.train) <= 10, cls
        assert wordings.heldout, cls
        for text in wordings.train + wordings.heldout:
            assert text == text.lower().strip() and text, (cls, text)


def test_heldout_wordings_never_appear_in_training():
    train = set(all_train_prompts())
    for wordings in (*PROMPTS.values(), SPEAKER_PROMPTS):
        assert not set(wordings.heldout) & train


def test_examples_from_the_brief():
    assert {"dog barking", "a dog barks", "barking dog"} <= set(PROMPTS["dog bark"].train)
    assert canonical("man speaking") == "man speaking"

"""Text prompts reach the right part of the default model: held-out wordings and other languages included."""

import pytest

from samstream.model.class_prompts import PROMPTS
from samstream.model.prompt_routing import SPEECH_CLASSES, PromptRouter, prototype_wordings


@pytest.fixture(scope="module")
def router():
    from samstream.model.text import MiniLMTextEncoder, PromptCache

    cache = PromptCache(MiniLMTextEncoder())
    return PromptRouter(lambda texts: cache.get(list(texts))[0][:, 0])


def test_held_out_wordings_are_never_prototypes():
    wordings, _ = prototype_wordings()
    held_out = {text for prompts in PROMPTS.values() for text in prompts.heldout}
    assert not held_out & set(wordings)


def test_held_out_wordings_of_speech_and_non_speech_route_correctly(router):
    wrong = []
    for cls, prompts in PROMPTS.items():
        for text in prompts.heldout:
            route = router.route(text)
            if (route.target_class in SPEECH_CLASSES) != (cls in SPEECH_CLASSES):
                wrong.append((text, cls, route.target_class))
            elif cls in SPEECH_CLASSES and route.gender != router.route(cls).gender:
                wrong.append((text, cls, route.target_class))
    assert not wrong, wrong


@pytest.mark.parametrize("text, gender", [
    ("someone speaking on the phone", None), ("my own voice", None), ("persona que habla", None),
    ("el hombre habla", "male"), ("homme qui parle", "male"), ("la mujer habla", "female"),
    ("frau spricht", "female"), ("a lady talking", "female"), ("a guy talking", "male"),
])
def test_user_wordings_and_other_languages_reach_the_speech_expert(router, text, gender):
    route = router.route(text)
    assert route.speech and route.gender == gender, route


@pytest.mark.parametrize("text, remove", [("dog barking", True), ("a burst of laughter", False),
                                          ("a choir of voices", False), ("rolling thunder", True)])
def test_non_speech_prompts_take_speech_out_first_unless_the_target_is_vocal(router, text, remove):
    route = router.route(text)
    assert not route.speech and route.remove_speech == remove, route

"""Which part of the default model serves a text prompt: nearest class wording in MiniLM space.

The default model is a composite (model/composite.py): a pretrained speech expert, a voice picker and a
general separator. A text prompt is matched to the class whose wording lies nearest to it (cosine similarity of
all-MiniLM-L6-v2 sentence vectors): every training wording of every class (model/class_prompts.py), plus speech
wordings users say that are not class names ("my voice", "the person talking") and a few in other languages, so
that paraphrases and translations land on the right part. Held-out wordings are never prototypes: they measure
how well routing generalises (tests/test_prompt_routing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from samstream.model.class_prompts import PROMPTS

SPEECH_CLASSES = ("speech", "man speaking", "woman speaking")
GENDER = {"man speaking": "male", "woman speaking": "female"}
# Sounds a speech enhancer keeps (or mangles) as if they were speech: for these targets the composite never
# removes speech first, since that would remove the target itself.
VOCAL_CLASSES = ("singing", "laughter", "scream", "cough", "sneeze", "baby crying", "snoring")
# Below this similarity to every prototype a prompt names nothing we know: the general separator alone decides.
MIN_SIMILARITY = 0.35

USER_SPEECH_WORDINGS = {
    "speech": ("my voice", "the person talking", "voices", "conversation",
               "dialogue", "narration", "the speaker", "vocal speech", "una persona hablando", "voz humana",
               "une personne qui parle", "la voix", "eine person spricht", "die stimme", "una persona che parla",
               "uma pessoa falando"),
    "man speaking": ("the man", "his voice", "un hombre hablando", "voz masculina", "un homme qui parle",
                     "voix d'homme", "ein mann spricht", "männerstimme", "un uomo che parla", "um homem falando"),
    "woman speaking": ("the woman", "her voice", "una mujer hablando", "voz femenina", "une femme qui parle",
                       "voix de femme", "eine frau spricht", "frauenstimme", "una donna che parla",
                       "uma mulher falando"),
}


@dataclass(frozen=True)
class Route:
    """What a prompt asks the composite for."""

    target_class: str | None  # nearest class, or None when nothing is near enough
    similarity: float

    @property
    def speech(self) -> bool:
        return self.target_class in SPEECH_CLASSES

    @property
    def gender(self) -> str | None:
        return GENDER.get(self.target_class)

    @property
    def remove_speech(self) -> bool:
        """Separate the target from the mixture with speech taken out first (speech is an interferer)."""
        return self.target_class is not None and not self.speech and self.target_class not in VOCAL_CLASSES


def prototype_wordings() -> tuple[list[str], list[str]]:
    """(wordings, their classes): every training wording of every class, then the user speech wordings."""
    wordings, classes = [], []
    for name, prompts in PROMPTS.items():
        for text in prompts.train:
            wordings.append(text)
            classes.append(name)
    for name, texts in USER_SPEECH_WORDINGS.items():
        wordings.extend(texts)
        classes.extend([name] * len(texts))
    return wordings, classes


class PromptRouter:
    """`route(text) -> Route`; `text_vectors(list[str]) -> [N, dim]` L2-normalised sentence vectors (cached by
    the caller)."""

    def __init__(self, text_vectors: Callable[[list[str]], torch.Tensor]) -> None:
        self._text_vectors = text_vectors
        self._wordings, self._classes = prototype_wordings()
        self._prototypes: torch.Tensor | None = None
        self._routes: dict[str, Route] = {}

    def route(self, text: str | None) -> Route:
        if text is None:
            return Route(None, 0.0)
        if text not in self._routes:
            if self._prototypes is None:
                self._prototypes = self._text_vectors(self._wordings)
            similarity = self._prototypes @ self._text_vectors([text])[0]
            best = int(similarity.argmax())
            score = float(similarity[best])
            self._routes[text] = Route(self._classes[best] if score >= MIN_SIMILARITY else None, score)
        return self._routes[text]

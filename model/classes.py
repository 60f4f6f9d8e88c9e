"""The target classes and how they relate, so mixtures never pair a target with something it contains, and
the default model can tell which prompts name speech.

A class may have a parent ("woman speaking" is "speech"; "piano" is "music"): a target of the parent
class draws from the parent's own sources and all its children. Two classes "overlap" when one may
contain the other or their recordings blur into each other (a thunder recording carries rain); an
interferer never overlaps the target, except the deliberate other-gender speaker.
"""

from __future__ import annotations

REQUIRED_CLASSES = (
    "speech", "man speaking", "woman speaking", "piano", "guitar", "violin", "drums", "bass",
    "dog bark", "siren", "bell", "door", "engine", "water", "applause", "typing", "phone ringing",
)

EXTRA_CLASSES = (
    "music", "brass", "woodwind", "organ", "accordion", "harmonica", "singing",
    "cat", "bird", "farm animal", "wild animal", "alarm", "knock", "explosion", "gunshot",
    "footsteps", "glass breaking", "wind", "thunder", "fire crackling", "clock ticking", "laughter",
    "scream", "whistle", "car horn", "snoring", "heartbeat", "woodworking", "cough", "sneeze",
    "baby crying", "bubbles",
)

ALL_CLASSES = REQUIRED_CLASSES + EXTRA_CLASSES

PARENT = {
    "man speaking": "speech",
    "woman speaking": "speech",
    **{c: "music" for c in ("piano", "guitar", "violin", "drums", "bass", "brass", "woodwind", "organ",
                            "accordion", "harmonica", "singing")},
    "bubbles": "water",
}

GENDERED = {"man speaking": "woman speaking", "woman speaking": "man speaking"}

# Pairs whose recordings may contain or resemble each other too closely to serve as target/interferer.
_CONFUSABLE = (
    ("siren", "alarm"), ("thunder", "water"), ("thunder", "explosion"), ("thunder", "wind"),
    ("door", "knock"), ("explosion", "gunshot"), ("laughter", "speech"), ("scream", "speech"),
    ("cough", "speech"), ("sneeze", "speech"), ("baby crying", "speech"), ("singing", "speech"),
    ("dog bark", "wild animal"), ("applause", "speech"), ("engine", "car horn"), ("bird", "farm animal"),
)


def family(name: str) -> str:
    """The root of a class ("woman speaking" -> "speech"; "piano" -> "music"; "dog bark" -> itself)."""
    while name in PARENT:
        name = PARENT[name]
    return name


def members(name: str) -> tuple[str, ...]:
    """The class and every class below it: the classes whose sources a target of `name` may draw."""
    return (name,) + tuple(c for c in ALL_CLASSES if c != name and _is_ancestor(name, c))


def _is_ancestor(ancestor: str, name: str) -> bool:
    while name in PARENT:
        name = PARENT[name]
        if name == ancestor:
            return True
    return False


def overlaps(a: str, b: str) -> bool:
    """True when b must not be an interferer of target a (or vice versa).

    Instruments are siblings under "music" and may mix (piano against drums is the point), but not
    with "music" itself; two kinds of speech never mix under a text prompt (the other-gender
    interferer is added on purpose by the mixer, not through this test).
    """
    if a == b or _is_ancestor(a, b) or _is_ancestor(b, a):
        return True
    if family(a) == family(b) == "speech":
        return True
    pairs = {(a, b), (b, a), (family(a), family(b)), (family(b), family(a))}
    return any(p in _CONFUSABLE for p in pairs)

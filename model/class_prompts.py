"""Text prompts per class: lower-case noun/verb phrases as SAM Audio expects.

`train` wordings are what the model sees in training (the first is the canonical prompt used by
evaluation sets); `heldout` wordings never appear in training and measure how well free-text
prompts generalise to unseen phrasings.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class ClassPrompts:
    train: tuple[str, ...]
    heldout: tuple[str, ...]


def _p(train: str, heldout: str) -> ClassPrompts:
    return ClassPrompts(tuple(train.split("|")), tuple(heldout.split("|")))


PROMPTS: dict[str, ClassPrompts] = {
    "speech": _p("speech|a person speaking|someone talking|human voice|talking|spoken words|a voice speaking",
                 "people talking|a person says something"),
    "man speaking": _p("man speaking|a man talks|male voice|a man speaking|male speech|a man's voice talking",
                       "a guy talking|male speaker"),
    "woman speaking": _p("woman speaking|a woman talks|female voice|a woman speaking|female speech|a woman's voice talking",
                         "a lady talking|female speaker"),
    "piano": _p("piano|piano playing|a piano|someone playing the piano|piano notes|piano music",
                "keys of a grand piano|a pianist performing"),
    "guitar": _p("guitar|guitar playing|a guitar|strummed guitar|guitar chords|plucked guitar strings",
                 "someone strumming|an acoustic guitar being played"),
    "violin": _p("violin|violin playing|a violin|string instrument|bowed strings|cello and violin",
                 "a fiddle|a string section playing"),
    "drums": _p("drums|drum kit|drumming|percussion|drum beat|someone playing drums|drums and cymbals",
                "a drummer|beating drums"),
    "bass": _p("bass|bass guitar|bass line|a bass playing|low bass notes|electric bass",
               "deep bass tones|a bassist"),
    "dog bark": _p("dog barking|a dog barks|barking dog|dog bark|a barking dog|dog|woof of a dog",
                   "a puppy yapping|canine barking"),
    "siren": _p("siren|a siren wailing|police siren|ambulance siren|fire truck siren|emergency siren",
                "wailing sirens of an emergency vehicle|a blaring siren"),
    "bell": _p("bell|a bell ringing|bell ringing|church bell|ringing bell|a gong|chime of a bell",
               "bells tolling|a bell chiming"),
    "door": _p("door|a door closing|door slam|a door opening|door creaking|door slamming shut",
               "someone shutting a door|a creaky door"),
    "engine": _p("engine|car engine|an engine running|engine noise|motor running|a vehicle engine|car passing by",
                 "revving motor|a motorcycle going past"),
    "water": _p("water|running water|water splashing|rain|flowing water|water dripping|a stream of water",
                "rainfall|water pouring"),
    "applause": _p("applause|people clapping|clapping|a crowd applauding|cheering crowd|audience applause",
                   "hands clapping|an ovation"),
    "typing": _p("typing|keyboard typing|someone typing|keys clicking|typing on a keyboard|typewriter",
                 "clacking keys|a person typing fast"),
    "phone ringing": _p("phone ringing|a phone rings|telephone ringing|ringing phone|ringtone|a telephone",
                        "an incoming call ringing|the phone is ringing"),
    "music": _p("music|a song|music playing|background music|instrumental music|a melody",
                "a tune|musicians playing"),
    "brass": _p("brass|trumpet|a horn playing|trombone|brass instrument|tuba", "a bugle call|brass section"),
    "woodwind": _p("flute|woodwind|clarinet|saxophone|a flute playing|woodwind instrument", "a recorder|a sax solo"),
    "organ": _p("organ|an organ playing|church organ|organ music|electric organ|organ chords", "pipe organ chords"),
    "accordion": _p("accordion|an accordion playing|accordion music|squeezebox|someone playing the accordion", "a concertina"),
    "harmonica": _p("harmonica|a harmonica playing|mouth organ|harmonica music|someone playing the harmonica", "blues harp"),
    "singing": _p("singing|a person singing|choir|vocals|someone sings|a singer", "a choir of voices|a sung melody"),
    "cat": _p("cat|a cat meowing|meowing|cat meow|kitten|a cat", "a purring meowing kitty"),
    "bird": _p("bird|birds chirping|a bird singing|birdsong|chirping|chicken clucking|duck quacking",
               "tweeting birds|an owl hooting"),
    "farm animal": _p("farm animals|a cow mooing|a horse neighing|sheep bleating|a pig oinking|livestock",
                      "a mooing cow|a donkey braying"),
    "wild animal": _p("wild animal|a wolf howling|howling|crickets chirping|a frog croaking|animal calls",
                      "coyotes howling|a moose call"),
    "alarm": _p("alarm|an alarm going off|klaxon|alarm beeping|warning alarm|beeping alarm", "a buzzer alarm sounding"),
    "knock": _p("knock|knocking|someone knocking|a knock on the door|knocking on wood", "rapping on a door"),
    "explosion": _p("explosion|a blast|an explosion|boom|bomb exploding|explosions", "something blowing up"),
    "gunshot": _p("gunshot|gunfire|a gun firing|shots fired|a gunshot|shooting", "a rifle shot"),
    "footsteps": _p("footsteps|someone walking|steps|walking footsteps|footstep sounds", "a person walking by"),
    "glass breaking": _p("glass breaking|shattering glass|breaking glass|glass shatters|a glass smashes", "a window smashing"),
    "wind": _p("wind|wind blowing|howling wind|a gust of wind|windy", "a breeze|strong wind"),
    "thunder": _p("thunder|a thunderclap|thunder rumbling|thunderstorm|thunder crashing", "rolling thunder"),
    "fire crackling": _p("fire crackling|a crackling fire|fire|burning fire|campfire", "flames crackling"),
    "clock ticking": _p("clock ticking|a ticking clock|tick tock|clock|ticking", "a clock going tick"),
    "laughter": _p("laughter|laughing|someone laughing|a person laughs|giggling", "a burst of laughter"),
    "scream": _p("scream|screaming|a person screaming|a scream|yelling in fear", "a shriek"),
    "whistle": _p("whistle|a whistle blowing|referee whistle|whistling|a blown whistle", "a shrill whistle"),
    "car horn": _p("car horn|a horn honking|honking|a car honks|car honking", "a beeping horn"),
    "snoring": _p("snoring|someone snoring|a person snores|snore|a man snoring", "a sleeper snoring loudly"),
    "heartbeat": _p("heartbeat|a heart beating|heart beat|heartbeats|a beating heart", "a pounding heart"),
    "woodworking": _p("sawing|hammering|a saw cutting wood|chopping wood|woodworking", "someone cutting timber"),
    "cough": _p("cough|coughing|a person coughs|someone coughing|a cough", "a hacking cough"),
    "sneeze": _p("sneeze|sneezing|a person sneezes|achoo|someone sneezes", "someone sneezing loudly"),
    "baby crying": _p("baby crying|a crying baby|infant crying|a baby cries|baby", "a wailing infant"),
    "bubbles": _p("bubbles|bubbling|bubbling water|air bubbles|bubbles popping", "blub blub of bubbles"),
}

# The audio-prompted "pick this voice" task: the enrollment clip carries the identity.
SPEAKER_PROMPTS = _p("the speaker in the example|this voice|the same voice as the example|this person talking|the enrolled speaker",
                     "the voice from the enrollment clip")

def prompts_for(cls: str) -> ClassPrompts:
    return SPEAKER_PROMPTS if cls == "speaker" else PROMPTS[cls]


def canonical(cls: str) -> str:
    return prompts_for(cls).train[0]


def all_train_prompts() -> list[str]:
    """Every training wording once (to embed with the text encoder and cache)."""
    seen: dict[str, None] = {}
    for cls_prompts in (*PROMPTS.values(), SPEAKER_PROMPTS):
        for text in cls_prompts.train:
            seen.setdefault(text, None)
    return list(seen)

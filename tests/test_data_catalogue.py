"""The catalogue's globs pick the right files and classes (DATA.md, DATA_EXTRA.md) on real folder layouts."""

import struct
import zlib

import pytest

from samstream.model.training.catalogue import RULES, glob_to_regex, match, rules_by_package
from samstream.model.classes import ALL_CLASSES
from samstream.model.training.rcc import extract_rcc_audio


def test_glob_semantics():
    assert glob_to_regex("**/dogs/dog.ogg").fullmatch("usr/share/tuxpaint/stamps/animals/dogs/dog.ogg")
    assert glob_to_regex("**/dogs/dog.ogg").fullmatch("dogs/dog.ogg")
    assert not glob_to_regex("**/dogs/dog.ogg").fullmatch("usr/dogs/hotdog.ogg")
    assert glob_to_regex("a/*/b.ogg").fullmatch("a/x/b.ogg")
    assert not glob_to_regex("a/*/b.ogg").fullmatch("a/x/y/b.ogg")  # * never crosses a folder
    assert glob_to_regex("**/Music Loops/Drum*.mp3").fullmatch("Media/Sounds/Music Loops/DrumSet1.mp3")


@pytest.mark.parametrize("package, relpath, cls", [
    ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/city/cs/vit-m-hlava.ogg", "woman speaking"),
    ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/city/cs/vit-v-hlava.ogg", "man speaking"),
    ("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/city/cs/vit-hs-klid1.ogg", None),
    ("hedgewars-data", "usr/share/games/hedgewars/Data/Sounds/voices/Pirate/Hello.ogg", "speech"),
    ("hedgewars-data", "usr/share/games/hedgewars/Data/Sounds/voices/Pirate/Laugh.ogg", "laughter"),
    ("hedgewars-data", "usr/share/games/hedgewars/Data/Sounds/voices/Pirate/Ow2.ogg", None),
    ("hedgewars-data", "usr/share/games/hedgewars/Data/Music/Beach.ogg", "music"),
    ("bucklespring-data", "usr/share/buckle/wav/1e-0.wav", "typing"),
    ("bucklespring-data", "usr/share/buckle/wav/2f-1.wav", "typing"),
    ("bucklespring-data", "usr/share/buckle/wav/30-0.wav", None),
    ("bucklespring-data", "usr/share/buckle/wav/6b-0.wav", None),
    ("scratch", "usr/share/scratch/Media/Sounds/Percussion/Gong.wav", "bell"),
    ("scratch", "usr/share/scratch/Media/Sounds/Percussion/CymbalCrash.wav", "drums"),
    ("scratch", "usr/share/scratch/Media/Sounds/Music Loops/DrumSet1.mp3", "drums"),
    ("scratch", "usr/share/scratch/Media/Sounds/Music Loops/Techno.mp3", "music"),
    ("scratch", "usr/share/scratch/Media/Sounds/Animal/Dog1.wav", "dog bark"),
    ("gcompris-qt-data", "rcc/instruments/gcompris/src/activities/instruments/resource/piano.ogg", "piano"),
    ("gcompris-qt-data", "rcc/instruments/gcompris/src/activities/instruments/resource/cello.ogg", "violin"),
    ("sonic-pi-samples", "usr/lib/sonic-pi/etc/samples/ambi_piano.flac", "piano"),
    ("sonic-pi-samples", "usr/lib/sonic-pi/etc/samples/ambi_piano.txt", None),
    ("cube2-data", "usr/share/games/sauerbraten/packages/sounds/chainsaw/idle.ogg", "engine"),
    ("cube2-data", "usr/share/games/sauerbraten/packages/sounds/chainsaw/attack.ogg", "woodworking"),
])
def test_rules_pick_the_right_class(package, relpath, cls):
    rule = match(package, relpath, rules_by_package().get(package, []))
    assert (rule.cls if rule else None) == cls


def test_speakers_and_genders():
    rules = rules_by_package()
    rule = match("hedgewars-data", "usr/share/games/hedgewars/Data/Sounds/voices/Pirate/Hello.ogg", rules["hedgewars-data"])
    assert rule.speaker_of("usr/share/games/hedgewars/Data/Sounds/voices/Pirate/Hello.ogg") == "hedgewars-data:Pirate"
    rule = match("fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/a/cs/a-m-1.ogg", rules["fillets-ng-data-cs"])
    assert (rule.gender, rule.speaker_of("x")) == ("female", "fillets-ng-data-cs:m")
    speakers = [match("klettres-data", path, rules["klettres-data"]).speaker_of(path) for path in (
        "usr/share/klettres/fr/alpha/a.ogg", "usr/share/klettres/fr/syllab/ba.ogg",  # one reader
        "usr/share/klettres/de/alpha/a.ogg", "usr/share/klettres/de/syllab/ba.ogg")]  # two
    assert speakers == ["klettres-data:fr", "klettres-data:fr", "klettres-data:de/alpha", "klettres-data:de/syllab"]


def test_every_rule_names_a_known_class_and_no_reserved_source():
    assert {r.cls for r in RULES} <= set(ALL_CLASSES)
    reserved = ("timgm6mb", "freepats", "black_pearl", "hydrogen-drumkits")
    assert not [r for r in RULES if any(x in (r.package + r.glob).lower() for x in reserved)]


def _rcc_bundle(files: dict[str, bytes]) -> bytes:
    """A version-1 Qt resource bundle: root folder -> 'res' folder -> the files (zlib-compressed)."""
    names, name_offsets = b"", {}
    for name in ["res", *files]:
        name_offsets[name] = len(names)
        encoded = name.encode("utf-16-be")
        names += struct.pack(">HI", len(name), 0) + encoded
    data, data_offsets = b"", {}
    for name, payload in files.items():
        data_offsets[name] = len(data)
        packed = struct.pack(">I", len(payload)) + zlib.compress(payload)
        data += struct.pack(">I", len(packed)) + packed
    tree = struct.pack(">IHII", 0, 2, 1, 1)  # root: one child, node 1
    tree += struct.pack(">IHII", name_offsets["res"], 2, len(files), 2)
    for name in files:
        tree += struct.pack(">IHHHI", name_offsets[name], 1, 0, 0, data_offsets[name])
    header_size = 20
    tree_at, data_at = header_size, header_size + len(tree)
    names_at = data_at + len(data)
    return b"qres" + struct.pack(">IIII", 1, tree_at, data_at, names_at) + tree + data + names


def test_rcc_extraction_keeps_audio_only(tmp_path):
    bundle = tmp_path / "instruments.rcc"
    bundle.write_bytes(_rcc_bundle({"piano.ogg": b"OggS-fake-audio", "icon.svg": b"<svg/>"}))
    assert extract_rcc_audio(bundle, tmp_path / "out") == 1
    assert (tmp_path / "out/res/piano.ogg").read_bytes() == b"OggS-fake-audio"
    assert not (tmp_path / "out/res/icon.svg").exists()

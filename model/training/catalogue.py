"""The source catalogue: which files of which allowed package belong to which class.

Each rule is (class, package, glob relative to the unpacked package root). Globs follow DATA.md and
DATA_EXTRA.md; "rcc/**/" globs reach into the audio pulled out of gcompris' Qt bundles. Labels come
from file and folder names only. Where several rules match one file, the first rule wins, so the
specific rules (gendered speech) come before the general ones. `speaker` is a regex whose first group
names the speaker (or a constant speaker name), `exclude` a regex on the path, `gender` fixes the
speaker's gender.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Rule:
    cls: str
    package: str
    glob: str
    speaker: str | None = None  # regex with one group, or "=name" for a constant speaker
    gender: str | None = None  # "male" / "female" when the rule fixes it
    exclude: str | None = None  # regex: matching paths are skipped

    @cached_property
    def pattern(self) -> re.Pattern:
        return glob_to_regex(self.glob)

    def matches(self, relpath: str) -> bool:
        if not self.pattern.fullmatch(relpath):
            return False
        return not (self.exclude and re.search(self.exclude, relpath))

    def speaker_of(self, relpath: str) -> str | None:
        if self.speaker is None:
            return None
        if self.speaker.startswith("="):
            return f"{self.package}:{self.speaker[1:]}"
        found = re.search(self.speaker, relpath)
        return f"{self.package}:{found.group(1)}" if found else None


def glob_to_regex(glob: str) -> re.Pattern:
    """`**/` = any number of folders, `*` = any run within a name, `?` = one character; case-sensitive."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


R = Rule
_HEDGEWARS_NONVERBAL = r"/(Laugh|Ow\d*|Ooff\d*|Ouch|PoisonCough|PoisonMoan|Jump\d*|Firepunch\d*|Hmm|Nooo|Uh-oh)\.ogg$"

RULES: tuple[Rule, ...] = (
    # --- speech, gendered first (DATA.md; DATA_EXTRA flare merchants) ---
    R("woman speaking", "fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/*/cs/*-m-*.ogg", speaker="=m", gender="female"),
    R("man speaking", "fillets-ng-data-cs", "usr/share/games/fillets-ng/sound/*/cs/*-v-*.ogg", speaker="=v", gender="male"),
    R("woman speaking", "flare-game", "**/npcs/female_merchant_*.ogg", speaker="=female_merchant", gender="female"),
    R("man speaking", "flare-game", "**/npcs/male_merchant_*.ogg", speaker="=male_merchant", gender="male"),
    R("laughter", "hedgewars-data", "**/Sounds/voices/*/Laugh.ogg"),
    R("cough", "hedgewars-data", "**/Sounds/voices/*/PoisonCough.ogg"),
    R("speech", "hedgewars-data", "**/Sounds/voices/*/*.ogg", speaker=r"voices/([^/]+)/", exclude=_HEDGEWARS_NONVERBAL),
    R("speech", "tuxpaint-stamps-default", "**/*_desc_*.ogg", speaker=r"_desc_([A-Za-z_@]+)\.ogg$"),
    # One reader per language, except German: its letters and its syllables are two readers (median pitch 214 vs
    # 108 Hz; GE2E similarity of the two 0.69, as between different languages' readers, against 0.85-0.99 for the
    # two folders of every other language).
    R("speech", "klettres-data", "usr/share/klettres/de/*/*.ogg", speaker=r"klettres/(de/[^/]+)/"),
    R("speech", "klettres-data", "usr/share/klettres/*/**/*.ogg", speaker=r"klettres/([^/]+)/"),
    R("speech", "ktuberling-data", "usr/share/ktuberling/sounds/*/*.*", speaker=r"sounds/([^/]+)/"),
    R("speech", "boswars-data", "**/campaigns/tutorial/level01*.wav", speaker="=tutorial"),
    R("speech", "boswars-data", "**/*.ready.*"),
    R("speech", "boswars-data", "**/*.underattack.*"),
    R("speech", "boswars-data", "**/*.completed.*"),
    R("speech", "ardentryst", "**/Sounds/VOI_Intro_*.ogg", speaker="=intro"),
    R("speech", "freedroidrpg-data", "**/tux_ingame_comments/*.ogg", speaker="=tux"),
    R("speech", "netpanzer-data", "**/*yessir.wav"),
    R("speech", "netpanzer-data", "**/*_affirm.wav"),
    R("speech", "netpanzer-data", "**/move_movout.wav"),
    R("speech", "wordwarvi-sound", "**/help_*_here.ogg"),
    R("speech", "wordwarvi-sound", "**/ow_my_spine.ogg"),
    R("speech", "wordwarvi-sound", "**/aaaah_it_burns.ogg"),
    R("speech", "wordwarvi-sound", "**/nice_bank_shot.ogg"),
    R("speech", "wordwarvi-sound", "**/UseTheSource.ogg"),
    R("speech", "csoundqt-examples", "**/fox.wav"),
    R("speech", "csoundqt-examples", "**/AndItsAll.wav"),
    R("speech", "warmux-data", "**/voices/*", speaker=r"voices/([^/]+)/"),
    R("speech", "gcin-voice", "usr/share/gcin-voice/ogg/**/*.ogg", speaker="=gcin"),
    R("speech", "saytime", "usr/share/saytime/*.au", speaker="=saytime"),
    R("speech", "pocketsphinx-testdata", "**/test/data/*/*.wav", speaker=r"data/([^/]+)/"),
    R("speech", "codec2-examples", "usr/share/codec2/wav/*.wav"),
    # --- instruments ---
    R("piano", "sonic-pi-samples", "**/ambi_piano.flac"),
    R("piano", "gcompris-qt-data", "rcc/**/instruments/resource/piano.*"),
    R("guitar", "scratch", "**/GuitarStrum.wav"),
    R("guitar", "scratch", "**/GuitarChords*.mp3"),
    R("guitar", "sonic-pi-samples", "**/guit_*.flac"),
    R("guitar", "gcompris-qt-data", "rcc/**/instruments/resource/guitar.*"),
    R("guitar", "gcompris-qt-data", "rcc/**/instruments/resource/electric_guitar.*"),
    R("guitar", "gcompris-qt-data", "rcc/**/instruments/resource/banjo.*"),
    R("guitar", "gcompris-qt-data", "rcc/**/memory-sound/resource/guitar_*"),
    R("guitar", "csoundqt-examples", "**/ClassGuit.wav"),
    R("guitar", "csoundqt-examples", "**/ClassicalGuitar.wav"),
    R("guitar", "performous", "**/guitar_fail*.ogg"),
    R("guitar", "chuck-data", "**/geetar.wav"),
    R("violin", "tuxpaint-stamps-default", "**/string/violin.ogg"),
    R("violin", "tuxpaint-stamps-default", "**/string/cello.ogg"),
    R("violin", "gcompris-qt-data", "rcc/**/instruments/resource/violin.*"),
    R("violin", "gcompris-qt-data", "rcc/**/instruments/resource/cello.*"),
    R("violin", "gcompris-qt-data", "rcc/**/instruments/resource/harp.*"),
    R("violin", "csoundqt-examples", "**/violins.wav"),
    R("violin", "csoundqt-examples", "**/BratscheMono.wav"),
    R("violin", "cube2-data", "**/FlavioGaete/Vla_G_Major.*"),
    R("drums", "sonic-pi-samples", "**/drum_*.flac"),
    R("drums", "sonic-pi-samples", "**/loop_amen*.flac"),
    R("drums", "sonic-pi-samples", "**/loop_breakbeat.flac"),
    R("drums", "scratch", "**/Music Loops/Drum*.mp3"),
    R("drums", "scratch", "**/Percussion/*", exclude=r"/Gong\.wav$"),
    R("drums", "tuxpaint-stamps-default", "**/percussion/drumkit.ogg"),
    R("drums", "hydrogen-data", "**/GMRockKit/*.wav"),
    R("drums", "hydrogen-data", "**/TR808EmulationKit/*.flac"),
    R("drums", "performous", "**/drum_*.ogg"),
    R("drums", "exadrums", "**/*.wav"),
    R("drums", "chuck-data", "**/kick*.wav"),
    R("drums", "chuck-data", "**/snare*.wav"),
    R("drums", "chuck-data", "**/hihat*.wav"),
    R("drums", "chuck-data", "**/cowbell*.wav"),
    R("drums", "csoundqt-examples", "**/808loop*.wav"),
    R("drums", "wesnoth-1.16-data", "**/ambient/wardrums.*"),
    *(R("drums", "gcompris-qt-data", f"rcc/**/instruments/resource/{name}.*") for name in
      ("drum_kit", "snare_drum", "bongo", "timpani", "cymbal", "tambourine", "castanets", "maracas", "triangle")),
    R("bass", "sonic-pi-samples", "**/bass_*.flac"),
    R("bass", "csoundqt-examples", "**/BassGuitarC.wav"),
    *(R("brass", "gcompris-qt-data", f"rcc/**/instruments/resource/{name}.*") for name in ("horn", "trumpet", "trombone", "tuba")),
    R("brass", "wesnoth-1.16-data", "**/horn-signals/horn-*.*"),
    R("brass", "scratch", "**/Instruments/Trumpet*.wav"),
    *(R("woodwind", "gcompris-qt-data", f"rcc/**/instruments/resource/{name}.*") for name in ("flute_traversiere", "clarinet", "saxophone")),
    R("woodwind", "csoundqt-examples", "**/flute.wav"),
    R("woodwind", "warmux-data", "**/Divertissement_pour_flute.ogg"),
    R("organ", "gcompris-qt-data", "rcc/**/instruments/resource/organ.*"),
    R("accordion", "gcompris-qt-data", "rcc/**/instruments/resource/accordion.*"),
    R("harmonica", "gcompris-qt-data", "rcc/**/instruments/resource/harmonica.*"),
    R("singing", "csoundqt-examples", "**/choir.wav"),
    R("singing", "scratch", "**/Vocals/Singer*.wav"),
    # --- full music mixes ---
    R("music", "widelands-data", "**/music/*.ogg"),
    R("music", "warzone2100-music", "**/*.opus"),
    R("music", "freedroidrpg-data", "**/music/*.ogg"),
    R("music", "colobot-common-sounds", "**/music/*.ogg"),
    R("music", "flare-game", "**/music/*.ogg"),
    R("music", "unknown-horizons", "**/audio/music/*.ogg"),
    R("music", "gcompris-qt-data", "rcc/**/explore_world_music/resource/music/*"),
    R("music", "btanks-data", "**/tunes/*.ogg"),
    R("music", "ardentryst", "**/Music/*.ogg"),
    R("music", "hedgewars-data", "**/Data/Music/*.ogg"),
    R("music", "wesnoth-1.16-music", "**/music/*.ogg"),
    R("music", "scratch", "**/Music Loops/*.mp3", exclude=r"/(Drum|GuitarChords|HumanBeatbox)[^/]*$"),
    # --- animals ---
    R("dog bark", "scratch", "**/Animal/Dog*.wav"),
    R("dog bark", "tuxpaint-stamps-default", "**/dogs/dog.ogg"),
    R("dog bark", "lugaru-data", "**/Bark*.ogg"),
    R("dog bark", "gcompris-qt-data", "rcc/**/explore_farm_animals/resource/animals/dog.*"),
    R("dog bark", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRBark_*"),
    R("dog bark", "xemacs21-basesupport", "**/sounds/bark.wav"),
    R("cat", "gcompris-qt-data", "rcc/**/explore_farm_animals/resource/animals/cat.*"),
    R("cat", "xemacs21-basesupport", "**/sounds/catmeow.wav"),
    R("cat", "scratch", "**/Animal/Kitten.wav"),
    R("cat", "scratch", "**/Animal/Meow.wav"),
    R("cat", "scratch", "**/Animal/Cat.mp3"),
    R("bird", "widelands-data", "**/animals/bird*.ogg"),
    R("bird", "widelands-data", "**/duck/duck_*.ogg"),
    R("bird", "wesnoth-1.16-data", "**/ambient/birds*.*"),
    R("bird", "flare-game", "**/bird_twitter_loop.ogg"),
    R("bird", "flare-game", "**/raven_loop.ogg"),
    R("bird", "flare-game", "**/forest_owl_loop.ogg"),
    *(R("bird", "gcompris-qt-data", f"rcc/**/explore_farm_animals/resource/animals/{name}.*") for name in ("chickens", "duck", "owl")),
    R("bird", "pekka-kana-2-data", "**/crow.wav"),
    R("bird", "pekka-kana-2-data", "**/hen.wav"),
    R("bird", "pekka-kana-2-data", "**/chick.wav"),
    R("bird", "megaglest-data", "**/chicken/sounds/*"),
    R("bird", "megaglest-data", "**/tilesets/*/sounds/chicken*"),
    *(R("bird", "scratch", f"**/Animal/{name}.wav") for name in ("Bird", "Owl", "Rooster", "Goose", "Duck")),
    *(R("farm animal", "gcompris-qt-data", f"rcc/**/explore_farm_animals/resource/animals/{name}.*") for name in ("cow", "horse", "sheep", "pig")),
    R("farm animal", "widelands-data", "**/farm/horse_*.ogg"),
    R("farm animal", "widelands-data", "**/farm/sheep_*.ogg"),
    R("farm animal", "widelands-data", "**/farm/ox_*.ogg"),
    R("farm animal", "widelands-data", "**/farm/donkey.ogg"),
    R("farm animal", "wesnoth-1.16-data", "**/sounds/horse-*.*"),
    R("farm animal", "megaglest-data", "**/sounds/cow_*.wav"),
    R("farm animal", "megaglest-data", "**/sounds/pig_*.wav"),
    R("farm animal", "megaglest-data", "**/bull/sounds/bull_*"),
    R("farm animal", "megaglest-data", "**/mudchute_cow_*"),
    R("farm animal", "btanks-data", "**/sounds/cow.ogg"),
    R("farm animal", "pekka-kana-2-data", "**/moo.wav"),
    R("farm animal", "pekka-kana-2-data", "**/pig*.wav"),
    R("farm animal", "scratch", "**/Animal/Horse*.wav"),
    *(R("wild animal", "widelands-data", f"**/animals/{name}") for name in
      ("wolf_*.ogg", "coyote_*.ogg", "moose_*.ogg", "stag_*.ogg", "boar.ogg", "frog.ogg", "crickets*.ogg")),
    R("wild animal", "wesnoth-1.16-data", "**/sounds/wolf-*.*"),
    R("wild animal", "megaglest-data", "**/tilesets/*/sounds/wolf*"),
    R("wild animal", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRFrogsInPond*"),
    R("wild animal", "scratch", "**/Animal/WolfHowl.wav"),
    R("wild animal", "scratch", "**/Animal/Cricket*.wav"),
    # --- alarms, bells, phones, sirens ---
    R("siren", "tuxpaint-stamps-default", "**/emergency/firetruck.ogg"),
    R("alarm", "tuxtype-data", "**/alarm.wav"),
    R("alarm", "tuxmath-data", "**/alarm.wav"),
    R("alarm", "btanks-data", "**/klaxon*.ogg"),
    R("alarm", "endless-sky-data", "**/alarm.*"),
    R("bell", "sonic-pi-samples", "**/perc_bell*.flac"),
    R("bell", "sonic-pi-samples", "**/elec_bell.flac"),
    R("bell", "scratch", "**/BellToll.wav"),
    R("bell", "scratch", "**/Gong.wav"),
    R("bell", "sound-theme-freedesktop", "usr/share/sounds/freedesktop/stereo/bell.oga"),
    R("bell", "supertux-data", "**/savebell*.wav"),
    R("bell", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRBuddhist_gong_*"),
    R("bell", "unknown-horizons", "**/ships_bell.ogg"),
    R("bell", "xboard", "**/gong.wav"),
    R("bell", "tuxmath-data", "**/towerclock.wav"),
    R("bell", "csoundqt-examples", "**/bell.aiff"),
    R("bell", "mazeofgalious-data", "**/bell.*"),
    R("phone ringing", "sonic-pi-samples", "**/mehackit_phone*.flac"),
    R("phone ringing", "supertux-data", "**/phone.wav"),
    R("phone ringing", "gnome-audio", "**/phone.wav"),
    R("phone ringing", "xboard", "**/phone.wav"),
    R("phone ringing", "oxygen-sounds", "**/Oxygen-Im-Phone-Ring.ogg"),
    # --- doors, knocks ---
    R("door", "minetest-data", "**/doors_*.ogg"),
    R("door", "minetest-data", "**/xpanes_steel_bar_door_*.ogg"),
    R("door", "scratch", "**/Door*"),
    R("door", "flare-game", "**/soundfx/door_open.ogg"),
    R("door", "gcompris-qt-data", "rcc/**/canal_lock/resource/door_*"),
    R("door", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRDoor_Open_*"),
    R("door", "cube2-data", "**/sfx_DoorSlam.*"),
    R("door", "mazeofgalious-data", "**/door*.wav"),
    R("door", "mazeofgalious-data", "**/wdoor.wav"),
    R("door", "wordwarvi-sound", "**/toyota_celica_cardoor_sample.ogg"),
    R("knock", "gcompris-qt-data", "rcc/**/*/resource/knock.*"),
    # --- engines and vehicles ---
    R("engine", "scratch", "**/CarPassing.wav"),
    R("engine", "scratch", "**/MotorcyclePassing.wav"),
    R("engine", "micropolis-data", "**/heavytraffic.wav"),
    R("engine", "micropolis-data", "**/ignition.wav"),
    R("engine", "etw-data", "**/intro/engine.wav"),
    R("engine", "triplea", "**/*engine*.mp3"),
    *(R("engine", "torcs-data", f"**/sound/{name}") for name in
      ("*engine*.wav", "viper*.wav", "944.wav", "935.wav", "lamborghinidiablo.wav", "ferrari*.wav", "f360.wav",
       "nsx.wav", "gt40.wav", "lotus.wav", "mclarenf1.wav", "renault-v10.wav", "xj220.wav", "ford*.wav",
       "corolla*.wav", "alpha-romeo.wav", "clkdtmb2.wav", "cleanviper.wav")),
    R("engine", "btanks-data", "**/sounds/engine-*.ogg"),
    R("engine", "btanks-data", "**/sounds/helicopter.ogg"),
    R("engine", "btanks-data", "**/sounds/train.ogg"),
    R("engine", "btanks-data", "**/sounds/tank-move.ogg"),
    R("engine", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRStartAndStopCarEngine*"),
    R("engine", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRTrain_*"),
    R("engine", "gcompris-qt-data", "rcc/**/*/resource/helicopter.*"),
    R("engine", "gcompris-qt-data", "rcc/**/*/resource/car.*"),
    R("engine", "gcompris-qt-data", "rcc/**/railroad/resource/sounds/train.*"),
    R("engine", "warmux-data", "**/aircraft_flying.ogg"),
    R("engine", "gl-117-data", "**/plane1.wav"),
    *(R("engine", "netpanzer-data", f"**/{name}.wav") for name in ("hevidle", "hevmov", "hevstart", "tankidle")),
    R("engine", "cube2-data", "**/chainsaw/idle.*"),
    # --- water ---
    R("bubbles", "scratch", "**/Bubbles.wav"),
    R("bubbles", "fillets-ng-data", "**/sound/share/sp-bubles_*.ogg"),
    R("water", "minetest-data", "**/env_sounds_water*.ogg"),
    R("water", "scratch", "**/Water*.mp3"),
    R("water", "scratch", "**/Ripples.wav"),
    R("water", "supertux-data", "**/rain.wav"),
    R("water", "supertux-data", "**/waterfall.wav"),
    R("water", "supertux-data", "**/splash.*"),
    R("water", "flare-game", "**/environment/rain.ogg"),
    R("water", "flare-game", "**/river_loop.ogg"),
    R("water", "flare-game", "**/cave_droplets_loop.ogg"),
    R("water", "ardentryst", "**/Rain_Loop.ogg"),
    R("water", "megaglest-data", "**/water_sounds/water*"),
    R("water", "megaglest-data", "**/tilesets/*/sounds/rain*"),
    R("water", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRRain_*"),
    R("water", "gcompris-qt-data", "rcc/**/canal_lock/resource/water_fill.*"),
    R("water", "caveexpress-data", "**/tile-waterfall.*"),
    R("water", "caveexpress-data", "**/water-*"),
    R("water", "madbomber-data", "**/splash*.wav"),
    R("water", "cube2-data", "**/yo_frankie/watersplash2.*"),
    R("water", "cube2-data", "**/yo_frankie/amb_waterdrip_2.*"),
    R("water", "khangman", "**/splash.ogg"),
    # --- crowds ---
    R("applause", "etw-data", "**/crowd/crowd*.wav"),
    R("applause", "dustracing2d-data", "**/cheering.ogg"),
    R("applause", "frozen-bubble-data", "**/applause.ogg"),
    R("applause", "monsterz-data", "**/applause.wav"),
    R("applause", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRApplauses_*"),
    R("applause", "tuxfootball", "**/crowd*.wav"),
    R("applause", "tuxtype-data", "**/cheer.wav"),
    R("applause", "tuxmath-data", "**/cheer.wav"),
    R("applause", "heroes-sound-effects", "**/foule*.wav"),
    # --- typing: bucklespring keys with scan code < 0x30 (letters and digits) only ---
    R("typing", "bucklespring-data", "**/wav/*.wav", exclude=r"/(?:[3-9a-f][0-9a-f]|[0-9a-f]{3,})-[^/]*$"),
    R("typing", "scratch", "**/Typing.mp3"),
    R("typing", "frozen-bubble-data", "**/typewriter.ogg"),
    # --- other events ---
    R("explosion", "powermanga-data", "**/*explosion*"),
    R("explosion", "warmux-data", "**/weapons/explosion*.ogg"),
    R("explosion", "warmux-data", "**/dynamite_exp.ogg"),
    R("explosion", "btanks-data", "**/*explosion*.ogg"),
    R("explosion", "endless-sky-data", "**/explosion*"),
    R("explosion", "wesnoth-1.16-data", "**/sounds/explosion.*"),
    R("explosion", "cube2-data", "**/q009/explosion.*"),
    R("explosion", "tuxtype-data", "**/explosion.wav"),
    R("explosion", "tuxmath-data", "**/explosion.wav"),
    R("explosion", "madbomber-data", "**/*explosion.wav"),
    R("explosion", "wordwarvi-sound", "**/big_explosion.ogg"),
    R("explosion", "wordwarvi-sound", "**/bombexplosion.ogg"),
    R("explosion", "gl-117-data", "**/explode1.wav"),
    R("explosion", "netpanzer-data", "**/expl_*.wav"),
    R("explosion", "xemacs21-basesupport", "**/explosion*.au"),
    R("gunshot", "wesnoth-1.16-data", "**/sounds/gunshot.*"),
    R("gunshot", "wesnoth-1.16-data", "**/sounds/thunderstick.*"),
    R("gunshot", "warmux-data", "**/weapons/shotgun.ogg"),
    R("gunshot", "warmux-data", "**/weapons/gun.ogg"),
    R("gunshot", "warmux-data", "**/weapons/m16.ogg"),
    *(R("gunshot", "cube2-data", f"**/q009/{name}*") for name in ("pistol", "rifle", "shotgun", "minigun")),
    R("gunshot", "xemacs21-basesupport", "**/shotgun.wav"),
    R("gunshot", "btanks-data", "**/sounds/shot.ogg"),
    R("gunshot", "netpanzer-data", "**/battle_mg1.wav"),
    R("footsteps", "ardentryst", "**/*_STEP_*.ogg"),
    R("footsteps", "flare-game", "**/steps/step_*.ogg"),
    R("footsteps", "freedroidrpg-data", "**/tux_footstep.ogg"),
    R("footsteps", "btanks-data", "**/man-steps.ogg"),
    R("footsteps", "cube2-data", "**/0ad/fs_sand*"),
    R("footsteps", "scratch", "**/Human/Footsteps-*"),
    R("glass breaking", "freedroidrpg-data", "**/Glass_Break.ogg"),
    R("wind", "flare-game", "**/wind_loop.ogg"),
    R("wind", "flare-game", "**/cave_wind_loop.ogg"),
    R("wind", "megaglest-data", "**/tilesets/*/sounds/wind*"),
    R("wind", "cube2-data", "**/0ad/windgust_*"),
    R("wind", "ardentryst", "**/cavewind.ogg"),
    R("thunder", "cube2-data", "**/0ad/thunder_*"),
    R("thunder", "gl-117-data", "**/thunder1.wav"),
    R("fire crackling", "flare-game", "**/open_fire*.ogg"),
    R("fire crackling", "wesnoth-1.16-data", "**/ambient/campfire.*"),
    R("fire crackling", "ardentryst", "**/fire_loop.ogg"),
    R("fire crackling", "btanks-data", "**/sounds/fire.ogg"),
    R("fire crackling", "cube2-data", "**/sfx/burning.*"),
    R("clock ticking", "tuxtype-data", "**/tock.wav"),
    R("clock ticking", "tuxmath-data", "**/tock.wav"),
    R("clock ticking", "heroes-sound-effects", "**/clock0*.wav"),
    R("laughter", "wesnoth-1.16-data", "**/dwarf-laugh.*"),
    R("laughter", "wesnoth-1.16-data", "**/witches-laugh.*"),
    R("laughter", "btanks-data", "**/laugh0*.ogg"),
    R("laughter", "monsterz-data", "**/laugh.wav"),
    R("laughter", "xemacs21-basesupport", "**/laugh.au"),
    R("laughter", "xemacs21-basesupport", "**/Evil_Laugh.au"),
    R("laughter", "xemacs21-basesupport", "**/Snicker.au"),
    R("laughter", "scratch", "**/Human/Laugh-*"),
    R("laughter", "bambam", "**/giggle.wav"),
    R("scream", "btanks-data", "**/kamikaze-scream.ogg"),
    R("scream", "netpanzer-data", "**/scream_*.wav"),
    R("scream", "wordwarvi-sound", "**/fallingscreamhi.ogg"),
    R("scream", "scratch", "**/Human/Scream-*"),
    R("cough", "scratch", "**/Human/Cough-*"),
    R("sneeze", "scratch", "**/Human/Sneeze-*"),
    R("baby crying", "scratch", "**/Human/BabyCry.mp3"),
    R("whistle", "tuxfootball", "**/refwhistle*.wav"),
    R("whistle", "xemacs21-basesupport", "**/whistle.au"),
    R("car horn", "xboard", "**/honkhonk.wav"),
    R("car horn", "heroes-sound-effects", "**/claxon.wav"),
    R("snoring", "xemacs21-basesupport", "**/snore.wav"),
    R("snoring", "frozen-bubble-data", "**/snore.ogg"),
    R("heartbeat", "flare-game", "**/heartbeat.ogg"),
    R("heartbeat", "gcompris-qt-data", "rcc/**/memory-sound/resource/LRHeart_beat_*"),
    R("woodworking", "widelands-data", "**/hammering/*.ogg"),
    R("woodworking", "widelands-data", "**/saw/*.ogg"),
    R("woodworking", "widelands-data", "**/woodcutting/*.ogg"),
    R("woodworking", "cube2-data", "**/chainsaw/attack.*"),
)

AUDIO_SUFFIXES = (".ogg", ".oga", ".mp3", ".wav", ".flac", ".opus", ".au", ".aiff", ".aif")


def rules_by_package() -> dict[str, list[Rule]]:
    out: dict[str, list[Rule]] = {}
    for rule in RULES:
        out.setdefault(rule.package, []).append(rule)
    return out


def match(package: str, relpath: str, rules: list[Rule]) -> Rule | None:
    """The first rule of `package` that claims relpath (a path relative to the package root)."""
    if not relpath.lower().endswith(AUDIO_SUFFIXES):
        return None
    for rule in rules:
        if rule.matches(relpath):
            return rule
    return None

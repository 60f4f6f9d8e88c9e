"""The Debian packages we may train on (DATA.md, DATA_EXTRA.md) and the tools used to render stems.

Every other audio package, and the timgm6mb-soundfont, freepats and Black_Pearl instrument sets, is
reserved for external evaluation: never add them here.
"""

# DATA.md: the original pool.
CORE_PACKAGES = (
    "fillets-ng-data-cs", "tuxpaint-stamps-default", "klettres-data", "ktuberling-data",
    "sonic-pi-samples", "scratch", "lugaru-data", "sound-theme-freedesktop", "supertux-data",
    "minetest-data", "micropolis-data", "etw-data", "triplea", "dustracing2d-data",
    "bucklespring-data",
)

# DATA_EXTRA.md: the extended pool (section 0 and section 5).
EXTRA_PACKAGES = (
    "hedgewars-data", "gcin-voice", "planetblupi-common", "codec2-examples", "oxygen-sounds",
    "chuck-data", "bambam", "saytime", "pocketsphinx-testdata", "openttd-opensfx",
    "supercollider-common", "ukui-media", "wesnoth-1.16-music", "fillets-ng-data",
    "avldrums.lv2-soundfont",
    "ardentryst", "boswars-data", "btanks-data", "caveexpress-data", "colobot-common-sounds",
    "csoundqt-examples", "cube2-data", "endless-sky-data", "exadrums", "flare-game",
    "freedroidrpg-data", "frozen-bubble-data", "gcompris-qt-data", "gl-117-data", "gnome-audio",
    "heroes-sound-effects", "hydrogen-data", "khangman", "madbomber-data", "mazeofgalious-data",
    "megaglest-data", "monsterz-data", "netpanzer-data", "pekka-kana-2-data", "performous",
    "powermanga-data", "torcs-data", "tuxfootball", "tuxmath-data", "tuxtype-data",
    "unknown-horizons", "warmux-data", "warzone2100-music", "wesnoth-1.16-data", "widelands-data",
    "wordwarvi-sound", "xboard", "xemacs21-basesupport",
)

DATA_PACKAGES = CORE_PACKAGES + EXTRA_PACKAGES

# Installed (not just unpacked) because rendering runs them; training-time only.
SYNTH_TOOL_PACKAGES = (
    "espeak-ng", "flite", "libfluidsynth3", "fluid-soundfont-gm", "musescore-general-soundfont-small",
    "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts",
)

# Files inside allowed packages that are reserved all the same (DATA_EXTRA.md: the Black Pearl kit).
RESERVED_NAME_PARTS = ("black_pearl",)

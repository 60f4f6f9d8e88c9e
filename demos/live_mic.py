"""Live microphone isolation: your microphone in, only the sound you name out of the speakers.

    python demos/live_mic.py                                   # your voice, nothing else; Ctrl-C to stop
    python demos/live_mic.py --prompt "man speaking"          # use headphones
    python demos/live_mic.py --prompt "keyboard typing" --hear residual   # everything but the typing
    python demos/live_mic.py --list-devices

`samstream mic` with demo defaults: the default model in this process, the system's default devices,
a level meter. Your voice goes through the default model's speech expert (DeepFilterNet3, docs/model_card.md),
at a fixed latency under 100 ms; `--no-speech-expert` compares with the model's own networks alone. Any
`samstream mic` option works (--input/--output DEV, --server URL, --record FILE, --enroll FILE ...).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from samstream.clients.cli import main as samstream

    if not any(arg in argv for arg in ("--prompt", "--span", "--enroll", "--list-devices")):
        argv = ["--prompt", "my voice", *argv]
        print('no prompt given: isolating "my voice" (try --prompt "dog barking")', file=sys.stderr)
    if "--list-devices" not in argv:
        print("listening: Ctrl-C stops (use headphones, or the speakers feed the microphone)", file=sys.stderr)
    return samstream(["mic", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

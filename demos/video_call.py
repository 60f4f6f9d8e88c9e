"""Video-call speaker extraction: a call with audio and video over WebRTC; you pick the speaker to keep.

    python demos/video_call.py --keep b -o call_out        # two real readers (or TTS voices), keep B
    python demos/video_call.py --speaker-a me.wav --speaker-b you.wav --keep a -o call_out
    python demos/video_call.py --model SAM_DIR --box 0.52,0.17,0.97,0.83 --keep b -o call_out   # pick on the video

The caller here is a Python WebRTC peer (aiortc) standing in for a video-call client: it sends the
call's picture (two tiles, the one speaking lit) and its sound. The speaker you keep first talks alone
("hello, it's me"), then the other, then both at once. At the end of the kept speaker's first
`--enroll-seconds`, the caller sends "enroll this voice": those seconds of the call become the audio-example
prompt (no text, no model of that voice beforehand; the default model's voice picker serves it), and from
then on it hears that speaker only. The server (started here with the default model and its voice meter, or
--server) returns the separated sound beside the call's video, and its voice meter says, every half second,
how like the enrolled voice the call (and what you hear) sounds.

Voices: --speaker-a/--speaker-b files; otherwise real recordings from Debian packages that `bash install.sh test`
installs: A a man reading card names (pocketsphinx test data), B a woman speaking the channel names of the
freedesktop sound theme ("front left", ...); with --same-gender B is instead a man reading a novel (the
pocketsphinx test data's LibriVox reader), the voice picker's hard case. Otherwise two espeak-ng voices, otherwise
synthetic vowel sounds (which no voice model knows: expect nothing from them).

With a SAM Audio checkpoint that has its vision encoder (--model DIR), --box X0,Y0,X1,Y1 picks the speaker
on the video instead: a box around their tile (fractions of the picture from its top-left corner; speaker A's
tile is about 0.03,0.17,0.48,0.83, B's 0.52,0.17,0.97,0.83) becomes the visual-mask prompt as soon as the call
is up, and the kept speaker's solo span is dropped from the prompt then. The default model cannot use visual
prompts: without --box it enrolls the voice.

Writes OUT/call.webm (what the caller saw and heard), OUT/heard.wav, OUT/mixture.wav and prints how
close what you hear is to the kept speaker alone while both talk (SI-SDR), against the raw call: the
improvement the voice picker brings on this call.
In a browser: `samstream serve`, open http://127.0.0.1:8765/?video=1, press "Enroll this voice" while
the person you want to keep is speaking (or, with `samstream serve --model SAM_DIR`, drag a box around them
on your camera's picture).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import add_server_arguments, si_sdr_aligned, start_server

RATE = 48000
FPS = 15
SOLO_S = 3.0  # each speaker alone, the kept one first
ENROLL_S = 2.8  # the kept speaker's first seconds become the enrollment
TOGETHER_S = 6.0  # then both
READINGS = Path("/usr/share/pocketsphinx/test/data")  # bash install.sh test
SPOKEN_WORDS = Path("/usr/share/sounds/freedesktop/stereo")  # the same: a woman's voice (audio-channel-*.oga)
SENTENCES = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
             "It is easy to tell the depth of a well. These days a chicken leg is a rare dish.",
             "Rice is often served in round bowls. The juice of lemons makes fine punch. The box was thrown "
             "beside the parked truck. The hogs were fed chopped corn and garbage.")


def synthetic_voice(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A vowel-ish voice: harmonics of a wandering pitch shaped by moving formants, in syllables."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    syllables = np.repeat(rng.uniform(0, 1, size=int(seconds * 4) + 2), RATE // 4)[: len(t)]
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t + seed) + 0.05 * (syllables - 0.5))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    vowels = np.array([[730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [570, 840, 2410], [300, 870, 2240]])
    formants = vowels[(syllables * len(vowels)).astype(int) % len(vowels)]
    voice = np.zeros_like(t)
    for k in range(1, int(4000 / f0)):
        gain = sum(np.exp(-0.5 * ((k * pitch - formants[:, i]) / (80 + 40 * i)) ** 2) / (i + 1) for i in range(3))
        voice += gain * np.sin(k * phase)
    envelope = np.clip(np.sin(np.pi * (t * 4 % 1)) * 1.6, 0, 1) * (syllables > 0.15)
    voice *= np.convolve(envelope, np.ones(480) / 480, mode="same")
    return (0.2 * voice / (np.abs(voice).max() + 1e-9)).astype(np.float32)


def fit(audio: np.ndarray, seconds: float) -> np.ndarray:
    """`seconds` of a voice (looped when shorter), peak 0.2; the two speakers of a call are then set equally loud."""
    audio = np.resize(audio, round(seconds * RATE)) if len(audio) < seconds * RATE else audio[: round(seconds * RATE)]
    return (0.2 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def load_voice(path: str | Path, seconds: float) -> np.ndarray:
    from samstream.clients.webrtc_client import read_mono_48k

    return fit(read_mono_48k(str(path)), seconds)


def recordings(paths: list[Path], seconds: float) -> np.ndarray:
    """One real speaker's recordings one after another, 0.1 s apart."""
    from samstream.clients.webrtc_client import read_mono_48k

    gap = np.zeros(RATE // 10, np.float32)
    return fit(np.concatenate([part for path in paths for part in (read_mono_48k(str(path)), gap)]), seconds)


def espeak(voice: str, text: str, seconds: float) -> np.ndarray:
    import io

    import soundfile as sf
    import soxr

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text], capture_output=True,
                         check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return fit(soxr.resample(audio, rate, RATE).astype(np.float32), seconds)


def voices(args: argparse.Namespace, seconds: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Speakers A and B, and where they come from."""
    if args.speaker_a and args.speaker_b:
        return load_voice(args.speaker_a, seconds), load_voice(args.speaker_b, seconds), "your files"
    man, reader = sorted((READINGS / "cards").glob("*.wav")), sorted((READINGS / "librivox").glob("*.wav"))
    woman = sorted(SPOKEN_WORDS.glob("audio-channel-*.oga"))
    if man and reader and args.same_gender:
        return (recordings(man, seconds), recordings(reader, seconds),
                f"real read speech of two men ({READINGS}: cards, librivox)")
    if man and woman and not args.same_gender:
        return (recordings(man, seconds), recordings(woman, seconds),
                f"real speech of a man ({READINGS / 'cards'}) and a woman ({SPOKEN_WORDS}/audio-channel-*)")
    if shutil.which("espeak-ng"):
        return (espeak("en-us+m3", SENTENCES[0], seconds), espeak("en-us+f4", SENTENCES[1], seconds),
                "espeak-ng voices en-us+m3 and en-us+f4")
    return synthetic_voice(seconds, 120, 1), synthetic_voice(seconds, 210, 2), "synthetic vowels"


def call_audio(kept: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The call's timeline: the kept speaker alone, the other alone, both. Returns (mixture, kept's part,
    the other's part)."""
    solo, together = round(SOLO_S * RATE), round(TOGETHER_S * RATE)
    part_kept = np.concatenate([kept[:solo], np.zeros(solo, np.float32), kept[solo : solo + together]])
    part_other = np.concatenate([np.zeros(solo, np.float32), other[:solo], other[solo : solo + together]])
    return part_kept + part_other, part_kept, part_other


def meter_summary(readings: list[dict]) -> dict:
    """The voice meter's readings (the server's data-channel metrics), averaged by what the call held in each
    1.6 s window: the kept speaker alone, the other alone, both."""
    spans = {"kept_alone": (0, SOLO_S), "other_alone": (SOLO_S, 2 * SOLO_S),
             "both": (2 * SOLO_S, 2 * SOLO_S + TOGETHER_S)}
    summary = {}
    for name, (start, end) in spans.items():
        inside = [r for r in readings if start + r["window_s"] <= r["window_end_s"] <= end]
        for side in ("input", "output"):
            values = [r[side] for r in inside if r.get(side) is not None]
            summary[f"{side}_{name}"] = round(float(np.mean(values)), 3) if values else None
    return summary


def call_video(part_a: np.ndarray, part_b: np.ndarray):
    """A MediaStreamTrack of two participant tiles; a tile lights up while its speaker is loud."""
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    hop = RATE // FPS
    loud = [np.array([np.sqrt(np.mean(p[i : i + hop] ** 2)) > 0.01 for i in range(0, len(p), hop)])
            for p in (part_a, part_b)]

    class Tiles(VideoStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.index = 0

        async def recv(self):
            pts, time_base = await self.next_timestamp()
            image = np.full((180, 320, 3), 24, np.uint8)
            for tile, (speaking, colour) in enumerate(zip(loud, ((80, 160, 255), (255, 150, 80)))):
                lit = self.index < len(speaking) and speaking[self.index]
                x = 10 + tile * 155
                image[30:150, x : x + 145] = colour if lit else (60, 60, 70)
                image[80:100, x + 60 : x + 85] = 240 if tile == 0 else 20  # a mark to tell the tiles apart
            self.index += 1
            frame = VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            return frame

    return Tiles()


async def run(args: argparse.Namespace) -> dict:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRecorder, MediaRelay
    from websockets.asyncio.client import connect

    from samstream.clients.webrtc_client import paced_audio_track
    from samstream.stream.media import frame_to_mono

    seconds = 2 * SOLO_S + TOGETHER_S
    a, b, source = voices(args, SOLO_S + TOGETHER_S)
    print(f"voices: {source}; keeping speaker {args.keep.upper()}")
    kept_voice, other_voice = (a, b) if args.keep == "a" else (b, a)
    mixture, keep, other = call_audio(kept_voice, other_voice)
    part_a, part_b = (keep, other) if args.keep == "a" else (other, keep)
    enroll_at = args.enroll_seconds  # the first seconds of the call: the kept speaker alone
    if args.box is not None:
        enroll_at = None  # the box picks the speaker: nothing to enroll

    server = None
    url = args.server
    if url is None:
        server, url = await start_server(args.model, args.port)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    audio_track = paced_audio_track(mixture, tail_s=1.0)
    pc.addTrack(audio_track)
    pc.addTrack(call_video(part_a, part_b))
    channel = pc.createDataChannel("control")
    channel_open = asyncio.Event()
    channel.on("open", channel_open.set)
    events: list[dict] = []

    def on_message(text: str) -> None:
        events.append(json.loads(text))
        if events[-1].get("type") == "error":
            print(f"server: {events[-1]['code']}: {events[-1]['message']}")

    channel.on("message", on_message)
    recorder = MediaRecorder(str(out / "call.webm"))
    relay = MediaRelay()
    heard: list[np.ndarray] = []

    async def keep_audio(track) -> None:
        while True:
            try:
                heard.append(frame_to_mono(await track.recv()))
            except Exception:
                return

    @pc.on("track")
    def on_track(track) -> None:
        recorder.addTrack(relay.subscribe(track))
        if track.kind == "audio":
            asyncio.ensure_future(keep_audio(relay.subscribe(track)))

    async with connect(url, max_size=None) as ws:
        await pc.setLocalDescription(await pc.createOffer())
        # Until a voice is enrolled (or the box is set): all speech.
        await ws.send(json.dumps({"type": "webrtc_offer", "prompt": {"text": "speech"},
                                  "offer": {"type": "offer", "sdp": pc.localDescription.sdp}}))
        answer = json.loads(await ws.recv())
        if answer.get("type") != "webrtc_answer":
            sys.exit(f"the server refused the call: {answer}")
        await pc.setRemoteDescription(RTCSessionDescription(**answer["answer"]))
        await recorder.start()
        other_name = "B" if args.keep == "a" else "A"
        print(f"call connected; engine latency {answer['latency_ms']:.0f} ms. Speaker {args.keep.upper()} talks, "
              f"then {other_name}, then both.")
        if args.box is not None:
            await asyncio.wait_for(channel_open.wait(), 10)
            print(f"visual prompt: the box {args.box} on the call's picture (speaker {args.keep.upper()})")
            channel.send(json.dumps({"type": "visual_mask", "box": args.box}))
            channel.send(json.dumps({"type": "prompt", "text": None}))  # from now on: the box only
        started = time.monotonic()
        while audio_track.readyState == "live":
            position = audio_track.position / RATE
            if enroll_at is not None and position >= enroll_at:
                print(f"{position:5.1f} s  enroll this voice: speaker {args.keep.upper()} (the last "
                      f"{args.enroll_seconds:g} s)")
                channel.send(json.dumps({"type": "enroll", "seconds": args.enroll_seconds}))
                channel.send(json.dumps({"type": "prompt", "text": None}))  # from now on: the voice example only
                enroll_at = None
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        await recorder.stop()
        await pc.close()
    if server is not None:
        await server.shutdown()

    import soundfile as sf


    received = np.concatenate(heard) if heard else np.zeros(0, np.float32)
    sf.write(out / "heard.wav", received, RATE)
    sf.write(out / "mixture.wav", mixture, RATE)
    # Score the stretch where both talk (the enrollment was 3 s before it: the new prompt has settled).
    scored = slice(round(2 * SOLO_S * RATE), round(seconds * RATE))
    heard_db = si_sdr_aligned(received, keep, scored, answer["latency_samples"])
    mixture_db = si_sdr_aligned(mixture, keep, scored, 0)
    metrics = [e for e in events if e.get("type") == "metrics"]
    readings = [m["voice"] for m in metrics if m.get("voice") and "window_end_s" in m["voice"]]
    result = {
        "kept": args.keep, "voices": source, "wall_s": round(time.monotonic() - started, 1),
        "si_sdr_heard_db": round(heard_db, 2), "si_sdr_mixture_db": round(mixture_db, 2),
        "si_sdr_improvement_db": round(heard_db - mixture_db, 2),
        "branch": next((e["understood"]["branch"] for e in reversed(events) if (e.get("understood") or {}).get("branch")), None),
        "voice_meter": meter_summary(readings),
        "prompts": [e["prompt"] for e in events if e.get("type") == "prompt"],
        "errors": [e for e in events if e.get("type") == "error"],
        "video_frames_pushed": next((e["video_frames_pushed"] for e in reversed(events)
                                     if e.get("type") == "metrics"), 0),
        "files": [str(out / name) for name in ("call.webm", "heard.wav", "mixture.wav")],
    }
    print(f"both talking: what you hear is {heard_db:.1f} dB SI-SDR from speaker {args.keep.upper()} alone; the raw "
          f"call {mixture_db:.1f} dB: an improvement of {heard_db - mixture_db:+.1f} dB")
    if result["branch"] == "general":
        print("note: the server's default model has no voice picker weights (model/weights/voice.safetensors) yet, so "
              "its general network served the enrollment; it does not pick one voice out of two")
    meter = result["voice_meter"]
    if readings:
        print("voice meter (similarity to the enrolled voice; input = the call, output = what you hear): "
              + ", ".join(f"{k} {v:.2f}" for k, v in meter.items() if v is not None))
    print(f"wrote {', '.join(result['files'])}")
    return result


def parse_box(text: str) -> list[float]:
    try:
        box = [float(value) for value in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 with 0 <= X0 < X1 <= 1 and 0 <= Y0 < Y1 <= 1 "
                                         f"(fractions of the picture), got {text!r}")
    return box


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", choices=["a", "b"], default="b", help="the speaker to keep (default: b)")
    parser.add_argument("--box", type=parse_box, metavar="X0,Y0,X1,Y1",
                        help="pick the speaker on the video: a box around their tile (speaker A: 0.03,0.17,0.48,0.83, "
                             "B: 0.52,0.17,0.97,0.83); needs --model DIR, a SAM Audio checkpoint with its vision "
                             "encoder (or --server running one)")
    parser.add_argument("--speaker-a", help="speech of speaker A (any audio file; with --speaker-b); default: real "
                                            "read speech, else espeak-ng, else synthetic")
    parser.add_argument("--speaker-b", help="speech of speaker B")
    parser.add_argument("--same-gender", action="store_true",
                        help="the default real voices, with B a second man instead of a woman")
    parser.add_argument("--enroll-seconds", type=float, default=ENROLL_S, metavar="S",
                        help=f"enroll the kept speaker's first S seconds of the call (0.5-{SOLO_S:g}; default {ENROLL_S:g}: "
                             "a margin before the other speaker starts)")
    parser.add_argument("-o", "--output", default="video_call_out", help="output folder")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    if not 0.5 <= args.enroll_seconds <= SOLO_S:
        parser.error(f"--enroll-seconds must lie in 0.5-{SOLO_S:g}: the kept speaker talks alone for {SOLO_S:g} s")
    if bool(args.speaker_a) != bool(args.speaker_b):
        parser.error("give both --speaker-a and --speaker-b, or neither")
    if args.box is not None and args.server is None and args.model == "tiny":
        parser.error("--box needs --model DIR, a SAM Audio checkpoint with its vision encoder: the default model "
                     "cannot use visual prompts (without --box the demo enrolls the voice instead)")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Video-call speaker extraction: a call with audio and video over WebRTC; you pick the speaker to keep.

    python demos/video_call.py --keep b -o call_out        # synthetic two-person call
    python demos/video_call.py --speaker-a me.wav --speaker-b you.wav --keep a -o call_out
    python demos/video_call.py --model SAM_DIR --box 0.52,0.17,0.97,0.83 --keep b -o call_out   # pick on the video

The caller here is a Python WebRTC peer (aiortc) standing in for a video-call client: it sends the
call's picture (two tiles, the one speaking lit) and its sound. Each speaker first talks alone, then
both talk at once. When the speaker you keep has talked alone for a while, the caller sends
"enroll this voice" (the last seconds of the call become the audio-example prompt: no text, no model
of that voice beforehand), and from then on it hears that speaker only. The server (started here with
the default model, or --server) returns the separated sound beside the call's video.

With a SAM Audio checkpoint that has its vision encoder (--model DIR), --box X0,Y0,X1,Y1 picks the speaker
on the video instead: a box around their tile (fractions of the picture from its top-left corner; speaker A's
tile is about 0.03,0.17,0.48,0.83, B's 0.52,0.17,0.97,0.83) becomes the visual-mask prompt as soon as the call
is up, and the kept speaker's solo span is dropped from the prompt then. The default model cannot use visual
prompts: without --box it enrolls the voice.

Writes OUT/call.webm (what the caller saw and heard), OUT/heard.wav, OUT/mixture.wav and prints how
close what you hear is to the kept speaker alone, against the unprocessed mixture.
In a browser: `samstream serve`, open http://127.0.0.1:8765/?video=1, press "Enroll this voice" while
the person you want to keep is speaking (or, with `samstream serve --model SAM_DIR`, drag a box around them
on your camera's picture).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from common import add_server_arguments, si_sdr_aligned, start_server

RATE = 48000
FPS = 15
SOLO_S = 3.0  # each speaker alone
TOGETHER_S = 6.0  # then both
ENROLL_S = 2.5


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


def load_voice(path: str, seconds: float) -> np.ndarray:
    from samstream.clients.webrtc_client import read_mono_48k

    audio = read_mono_48k(path)
    audio = np.resize(audio, round(seconds * RATE)) if len(audio) < seconds * RATE else audio[: round(seconds * RATE)]
    return (0.2 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def call_audio(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The call's timeline: A alone, B alone, both. Returns (mixture, a's part, b's part)."""
    solo, together = round(SOLO_S * RATE), round(TOGETHER_S * RATE)
    part_a = np.concatenate([a[:solo], np.zeros(solo, np.float32), a[solo : solo + together]])
    part_b = np.concatenate([np.zeros(solo, np.float32), b[:solo], b[solo : solo + together]])
    return part_a + part_b, part_a, part_b


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
    a = load_voice(args.speaker_a, SOLO_S + TOGETHER_S) if args.speaker_a else synthetic_voice(SOLO_S + TOGETHER_S, 120, 1)
    b = load_voice(args.speaker_b, SOLO_S + TOGETHER_S) if args.speaker_b else synthetic_voice(SOLO_S + TOGETHER_S, 210, 2)
    mixture, part_a, part_b = call_audio(a, b)
    keep = part_a if args.keep == "a" else part_b
    enroll_at = SOLO_S if args.keep == "a" else 2 * SOLO_S  # the end of the kept speaker's solo
    solo = [enroll_at - SOLO_S, enroll_at]
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
        # Until a voice is enrolled (or the box is set): the kept speaker's solo stretch as a "this sound" span.
        await ws.send(json.dumps({"type": "webrtc_offer", "prompt": {"spans": [["+", *solo]]},
                                  "offer": {"type": "offer", "sdp": pc.localDescription.sdp}}))
        answer = json.loads(await ws.recv())
        if answer.get("type") != "webrtc_answer":
            sys.exit(f"the server refused the call: {answer}")
        await pc.setRemoteDescription(RTCSessionDescription(**answer["answer"]))
        await recorder.start()
        print(f"call connected; engine latency {answer['latency_ms']:.0f} ms. Speaker A talks, then B, then both.")
        if args.box is not None:
            await asyncio.wait_for(channel_open.wait(), 10)
            print(f"visual prompt: the box {args.box} on the call's picture (speaker {args.keep.upper()})")
            channel.send(json.dumps({"type": "visual_mask", "box": args.box}))
            channel.send(json.dumps({"type": "prompt", "spans": []}))  # from now on: the box only
        started = time.monotonic()
        while audio_track.readyState == "live":
            position = audio_track.position / RATE
            if enroll_at is not None and position >= enroll_at:
                print(f"{position:5.1f} s  enroll this voice: speaker {args.keep.upper()} (last {ENROLL_S} s)")
                channel.send(json.dumps({"type": "enroll", "seconds": ENROLL_S}))
                channel.send(json.dumps({"type": "prompt", "spans": []}))  # from now on: the voice example only
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
    # Score the stretch where both talk, once the enrolled prompt has settled (1 s in).
    start = round((2 * SOLO_S + 1.0) * RATE)
    scored = slice(start, round(seconds * RATE))
    result = {
        "kept": args.keep, "wall_s": round(time.monotonic() - started, 1),
        "si_sdr_heard_db": si_sdr_aligned(received, keep, scored, answer["latency_samples"]),
        "si_sdr_mixture_db": si_sdr_aligned(mixture, keep, scored, 0),
        "prompts": [e["prompt"] for e in events if e.get("type") == "prompt"],
        "errors": [e for e in events if e.get("type") == "error"],
        "video_frames_pushed": next((e["video_frames_pushed"] for e in reversed(events)
                                     if e.get("type") == "metrics"), 0),
        "files": [str(out / name) for name in ("call.webm", "heard.wav", "mixture.wav")],
    }
    print(f"both talking: what you hear is {result['si_sdr_heard_db']:.1f} dB SI-SDR from speaker "
          f"{args.keep.upper()} alone (the raw call: {result['si_sdr_mixture_db']:.1f} dB)")
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
    parser.add_argument("--speaker-a", help="speech of speaker A (any audio file); default: a synthetic voice")
    parser.add_argument("--speaker-b", help="speech of speaker B; default: a synthetic voice")
    parser.add_argument("-o", "--output", default="video_call_out", help="output folder")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    if args.box is not None and args.server is None and args.model == "tiny":
        parser.error("--box needs --model DIR, a SAM Audio checkpoint with its vision encoder: the default model "
                     "cannot use visual prompts (without --box the demo enrolls the voice instead)")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

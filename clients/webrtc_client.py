"""A Python WebRTC client (aiortc): stream an audio file to a samstream server, record the separated audio.

    python -m samstream.clients.webrtc_client ws://localhost:8765/ input.wav --prompt "speech" -o out.wav

Signalling goes over the server's WebSocket (`webrtc_offer` -> `webrtc_answer`, see
stream/server/webrtc.py); the audio (and, for `WebRTCCall(..., video=frames)`, a video clip beside
it) goes over WebRTC, paced in real time like a microphone and a camera.
`WebRTCCall.frames` is what the caller hears (by default the target) from the first received frame:
output n is input n - L on the server's clock (L = `latency_samples` in the answer), plus Opus's
look-ahead each way (2.5 ms with samstream's encoder). The command line writes it with the first L
samples dropped, so the file lines up with the input to within those 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

RATE = 48000  # WebRTC audio (Opus) runs at 48 kHz
FRAME = 960  # 20 ms
VIDEO_CLOCK = 90000  # RTP's video clock rate


def read_mono_48k(path: str) -> np.ndarray:
    import soundfile as sf
    import soxr

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return soxr.resample(mono, rate, RATE).astype(np.float32) if rate != RATE else mono


def paced_audio_track(audio: np.ndarray, tail_s: float = 1.0, realtime: bool = True):
    """A MediaStreamTrack playing float32 mono 48 kHz audio as 20 ms Opus packets, in real time, then
    `tail_s` of silence (which pushes the separated tail out of the server), then it ends."""
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError

    from samstream.stream.media import OpusPacketEncoder

    samples = np.concatenate([audio, np.zeros(round(tail_s * RATE), np.float32)]).astype(np.float32)
    samples = np.pad(samples, (0, -len(samples) % FRAME))

    class PacedAudioTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.position = 0
            self.started: float | None = None  # time.monotonic() when the first frame was handed over
            self.encoder = OpusPacketEncoder()  # "lowdelay" Opus: aiortc's own "voip" mode bends the waveform

        async def recv(self):
            if self.readyState != "live" or self.position >= len(samples):
                self.stop()
                raise MediaStreamError
            if self.started is None:
                self.started = time.monotonic()
            if realtime:
                wait = self.started + self.position / RATE - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            (packet,) = self.encoder.encode(samples[self.position : self.position + FRAME])
            self.position += FRAME
            return packet

    return PacedAudioTrack()


def paced_video_track(frames: np.ndarray, fps: float, realtime: bool = True):
    """A MediaStreamTrack playing uint8 RGB frames [N, H, W, 3] at `fps`, in real time from its first frame
    (like paced_audio_track, so a call's picture and sound start together), then it ends."""
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError
    from av import VideoFrame

    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3
            and len(frames)):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"video must be uint8 RGB frames [frames, height, width, 3], got {got}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")

    class PacedVideoTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.position = 0  # frames handed over
            self.started: float | None = None

        async def recv(self):
            if self.readyState != "live" or self.position >= len(frames):
                self.stop()
                raise MediaStreamError
            if self.started is None:
                self.started = time.monotonic()
            if realtime:
                wait = self.started + self.position / fps - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            frame = VideoFrame.from_ndarray(frames[self.position], format="rgb24")
            frame.pts, frame.time_base = round(self.position * VIDEO_CLOCK / fps), fractions.Fraction(1, VIDEO_CLOCK)
            self.position += 1
            return frame

    return PacedVideoTrack()


@dataclass
class CallResult:
    audio: np.ndarray  # what was heard: float32 mono 48 kHz, from the first received frame
    answer: dict  # the server's webrtc_answer (latency_samples, sample_rate)
    metrics: list[dict] = field(default_factory=list)  # metrics messages from the data channel
    events: list[dict] = field(default_factory=list)  # every other data-channel or signalling message


class WebRTCCall:
    """One call: `await call.start(url)`, then `call.control({...})` on the data channel, then `await call.finish()`.

    `video` (uint8 RGB frames [N, H, W, 3] played at `fps`) adds a camera track beside the audio, for visual
    prompts: `call.set_box([x0, y0, x1, y1])` marks the speaker to keep on it."""

    PING_EVERY_S = 10.0  # the server closes sockets that stay silent for its idle timeout (30 s by default)

    def __init__(self, audio: np.ndarray, prompt: dict, output: dict | None = None, tail_s: float = 1.0,
                 ice_servers: list[str] | tuple[str, ...] = (), realtime: bool = True,
                 video: np.ndarray | None = None, fps: float = 15.0) -> None:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        self.prompt = prompt
        self.output = output or {"target": 1.0, "residual": 0.0}
        self.source = paced_audio_track(audio, tail_s, realtime)
        self.video_source = None if video is None else paced_video_track(video, fps, realtime)
        # No ICE servers unless asked: aiortc would otherwise contact Google's public STUN server.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(url) for url in ice_servers]))
        self.pc.addTrack(self.source)
        if self.video_source is not None:
            self.pc.addTrack(self.video_source)
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("message", self._on_message)
        self.channel_open = asyncio.Event()
        self.channel.on("open", self.channel_open.set)
        self.pc.on("track", self._on_track)
        self.frames: list[np.ndarray] = []
        self.video_frames_received = 0  # frames of the server's echo of our video
        self.arrivals: list[float] = []  # time.monotonic() when each of `frames` arrived (latency measurements)
        self.answer: dict = {}
        self.metrics: list[dict] = []
        self.events: list[dict] = []  # every other message, from the data channel or the socket
        self.websocket = None
        self._tasks: list[asyncio.Task] = []

    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.ensure_future(self._record(track)))
        else:  # counted and let go: aiortc queues a track's frames until someone reads them
            self._tasks.append(asyncio.ensure_future(self._count_video(track)))

    async def _count_video(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.video_frames_received += 1

    async def _record(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        from samstream.stream.media import frame_to_mono

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.arrivals.append(time.monotonic())
            self.frames.append(frame_to_mono(frame))

    def _on_message(self, text: str) -> None:
        message = json.loads(text)
        (self.metrics if message.get("type") == "metrics" else self.events).append(message)

    async def start(self, url: str, token: str | None = None) -> dict:
        """Connect the signalling socket, offer (every candidate gathered: aiortc does not trickle),
        wait for the answer and connect. Returns the answer (latency_samples, sample_rate, session)."""
        from aiortc import RTCSessionDescription
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.websocket = await connect(url, additional_headers=headers, max_size=None)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        description = self.pc.localDescription
        await self.websocket.send(json.dumps({
            "type": "webrtc_offer", "offer": {"type": description.type, "sdp": description.sdp},
            "prompt": self.prompt, "output": self.output,
        }))
        while True:
            message = json.loads(await self.websocket.recv())
            if message.get("type") == "webrtc_answer":
                break
            if message.get("type") == "error":
                await self.finish()
                raise RuntimeError(f"the server refused the call: {message.get('code')}: {message.get('message')}")
            self.events.append(message)
        self.answer = message
        await self.pc.setRemoteDescription(RTCSessionDescription(**message["answer"]))
        self._tasks.append(asyncio.ensure_future(self._read_socket()))
        self._tasks.append(asyncio.ensure_future(self._ping()))
        return message

    async def _read_socket(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in self.websocket:
                if isinstance(message, str):
                    self.events.append(json.loads(message))
        except ConnectionClosed:
            pass

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.PING_EVERY_S)
            await self.websocket.send(json.dumps({"type": "webrtc_ping"}))

    def control(self, message: dict) -> None:
        """Send a data-channel message (prompt, span_begin/span_end, enroll, output, visual_mask)."""
        self.channel.send(json.dumps(message))

    def set_box(self, box: list[float] | tuple[float, ...] | None) -> None:
        """Keep the sound of what this box on the call's video shows: [x0, y0, x1, y1] as fractions of the
        picture's width and height from its top-left corner; None clears it. Needs `video` and a server model
        with a vision encoder (the server answers with an error otherwise)."""
        self.control({"type": "visual_mask", "box": None if box is None else [float(value) for value in box]})

    @property
    def sent_samples(self) -> int:
        return self.source.position

    @property
    def received_samples(self) -> int:
        return sum(len(frame) for frame in self.frames)

    async def wait_sent(self) -> None:
        """Until the source has played to its end (audio and silent tail)."""
        while self.source.readyState == "live":
            await asyncio.sleep(0.02)

    async def wait_received(self, samples: int, idle_s: float = 1.0) -> None:
        """Until `samples` output samples arrived, or none arrived for `idle_s` (the last ~80 ms stay in
        the receiver's jitter buffer when the stream stops)."""
        count, since = self.received_samples, time.monotonic()
        while self.received_samples < samples and time.monotonic() - since < idle_s:
            await asyncio.sleep(0.02)
            if self.received_samples != count:
                count, since = self.received_samples, time.monotonic()

    async def finish(self) -> CallResult:
        """Hang up (closing the socket ends the call on the server too) and return what was heard."""
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        if self.websocket is not None:
            await self.websocket.close()
        audio = np.concatenate(self.frames) if self.frames else np.zeros(0, np.float32)
        return CallResult(audio, self.answer, self.metrics, self.events)


async def call_server(url: str, audio: np.ndarray, prompt: dict, output: dict | None = None,
                      tail_s: float = 1.0, token: str | None = None) -> CallResult:
    """Stream `audio` (float32 mono 48 kHz) to the server at `url` and record what comes back."""
    call = WebRTCCall(audio, prompt, output, tail_s)
    await call.start(url, token)
    await call.wait_sent()
    await call.wait_received(call.sent_samples)
    return await call.finish()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from samstream.model.anchors import parse_span

    parser = argparse.ArgumentParser(description="Stream an audio file to a samstream server over WebRTC.")
    parser.add_argument("url", help="the server's WebSocket address, e.g. ws://localhost:8765/")
    parser.add_argument("input", help="audio file to stream (played in real time)")
    parser.add_argument("-o", "--output", required=True, help="WAV file for what comes back (48 kHz mono)")
    parser.add_argument("--prompt", help='what to extract, e.g. "dog barking"')
    parser.add_argument("--span", action="append", type=parse_span, default=[], metavar="SIGN:START-END",
                        help="time-span prompt: +:3.2-4.0 (this sound) or --span=-:7-8 (not this)")
    parser.add_argument("--hear", choices=["target", "residual", "mixture"], default="target",
                        help="which output to record (mixture = target + residual)")
    parser.add_argument("--token", help="the server's access token (or SAMSTREAM_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    args = parse_args(argv)
    if args.prompt is None and not args.span:
        print("error: give --prompt and/or --span", file=sys.stderr)
        return 2
    prompt = {"text": args.prompt, "spans": [list(span) for span in args.span]}
    gains = {"target": (1.0, 0.0), "residual": (0.0, 1.0), "mixture": (1.0, 1.0)}[args.hear]
    audio = read_mono_48k(args.input)
    token = args.token or os.environ.get("SAMSTREAM_TOKEN")
    result = asyncio.run(call_server(args.url, audio, prompt, {"target": gains[0], "residual": gains[1]}, token=token))
    latency = result.answer.get("latency_samples", 0)
    aligned = result.audio[latency : latency + len(audio)]
    sf.write(args.output, aligned, RATE, subtype="FLOAT")
    last = result.metrics[-1] if result.metrics else {}
    summary = {"output": args.output, "samples_sent": len(audio), "samples_written": len(aligned),
               "latency_ms": result.answer.get("latency_ms"), "rtf": last.get("rtf"), "level": last.get("level")}
    print(f"wrote {args.output}: {len(aligned)} samples at {RATE} Hz; "
          f"engine latency {summary['latency_ms']:.1f} ms, RTF {summary['rtf'] or 0:.2f}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""WebRTC transport (aiortc): the caller's microphone track in, the separated track out.

One `WebRTCPeer` per call. Signalling rides on the server's WebSocket (protocol "samstream.v1",
docs/webrtc.md): the client sends `webrtc_offer` (its SDP with every ICE candidate gathered, and the
first prompt) and gets `webrtc_answer`. Then:

    caller's audio track ─► SeparatedTrack: downmix, engine session (Batcher handle), mix ─► back to the caller
    caller's video track ─► VideoFeed: RGB at 336x336, stamped on the stream clock ─► the session's model
                            (only when the model takes video: SAM Audio with its vision encoder)
    data channel "control": prompt changes in, live metrics (latency, RTF, degradation) out

The output track follows aiortc's `examples/server`: a `MediaStreamTrack` whose `recv()` returns the
next transformed frame. The caller's frames are fed to the engine as they arrive (a pump task), so a
compute backlog shows up in the batcher, which degrades in its declared way (a call is a live stream),
rather than in aiortc's queues. Load never ends a call: a full backlog makes the pump wait for room.
Every input sample yields exactly one output sample: output sample n is the separation of
input sample n - L, L = `latency_samples` (in the answer and in every metrics message).

The call lives as long as its signalling WebSocket (hanging up = closing the socket, and a server
shutdown hangs up every call), the caller's track, and the peer connection. The server closes
connections that send nothing for its idle timeout, so callers send `webrtc_ping` now and then.

Data channel messages (JSON text), caller -> server:
    {"type": "prompt", "text": "dog barking", "spans": [["+", 3.2, 4.0]], "example": null}
        every key optional: a key that is present replaces that part of the prompt (null clears it)
    {"type": "span_begin", "sign": "+"} ... {"type": "span_end", "sign": "+"}
        "this sound" / "not this" held down: a span on the stream clock, open until released
    {"type": "enroll", "seconds": 3}      the last N seconds of the caller's input become the audio example
    {"type": "output", "target": 1.0, "residual": 0.0}   gains of the two outputs in what the caller hears
    {"type": "visual_mask", "box": [x0, y0, x1, y1]}   the speaker to keep, as a box on the caller's video
        (fractions of its width and height from the top-left corner); "box": null clears it
server -> caller: {"type": "metrics", ...} every `metrics_interval_s`; {"type": "prompt", "prompt": {...}}
after each change; {"type": "error", "code": ..., "message": ..., "request": ...}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from av import Packet

from samstream.model.errors import UserFacingError
from samstream.stream.media import RATE, OpusPacketEncoder, frame_to_mono
from samstream.stream.processor import Prompt, StreamInputError
from samstream.stream.server.enroll import EnrollmentError, InputHistory, enroll_seconds, enrollment_clip, to_model_rate
from samstream.stream.server.ws import ProtocolError, check_text_length, request_name, shown, understood

if TYPE_CHECKING:
    from samstream.stream.batcher import StreamHandle
    from samstream.stream.server.app import SeparationServer
    from samstream.stream.server.ws import Connection

log = logging.getLogger("samstream.server")

OPEN_SPAN_S = 24 * 3600.0  # the end of a span whose button is still held
MAX_CONTROL_BYTES = 65536
# The working resolution of the call's video and of visual masks: PE-Core-L14-336, SAM Audio's vision encoder,
# resizes every frame to 336x336 anyway (aspect ratio not kept, as the official processor does), so frames
# converted to it once here lose nothing the model would see, and a box rasterized at it always fits them.
VIDEO_SIZE = 336
VIDEO_QUEUE_FRAMES = 8  # converted frames waiting for the engine's worker (~0.3 s at 30 fps, 2.7 MB)
NO_VISION = ("this server's model has no vision encoder, so it cannot use visual prompts (the default model never "
             "has one): start the server with --model DIR, a SAM Audio checkpoint that has its vision encoder, "
             "or use 'enroll this voice'")


class OutputMix:
    """What the caller hears: target_gain * target + residual_gain * residual.

    A gain change ramps linearly over one frame, so moving the slider does not click.
    """

    def __init__(self, target: float = 1.0, residual: float = 0.0) -> None:
        self.gains = self._check(target, residual)
        self._previous = self.gains

    @staticmethod
    def _check(target: Any, residual: Any) -> np.ndarray:
        try:
            gains = np.array([float(target), float(residual)], dtype=np.float32)
        except (TypeError, ValueError):
            raise ProtocolError("bad_message", f"output gains must be numbers, got target={shown(target)}, "
                                               f"residual={shown(residual)}") from None
        if not np.isfinite(gains).all() or (gains < 0).any() or (gains > 2).any():
            raise ProtocolError("bad_message", f"output gains must lie in [0, 2], got target={target}, residual={residual}")
        return gains

    def set(self, target: Any, residual: Any) -> None:
        self.gains = self._check(target, residual)

    def apply(self, target: np.ndarray, residual: np.ndarray) -> np.ndarray:
        start, end = self._previous, self.gains
        self._previous = end
        if np.array_equal(start, end):
            return end[0] * target + end[1] * residual
        ramp = np.arange(1, len(target) + 1, dtype=np.float32) / max(1, len(target))
        gains = start[:, None] + (end - start)[:, None] * ramp[None, :]
        return (gains[0] * target + gains[1] * residual).astype(np.float32)


# ---------------------------------------------------------------------------------------- the track


class SeparatedTrack(MediaStreamTrack):
    """The caller's audio, separated: one output sample for every input sample, as 20 ms Opus packets."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, handle: StreamHandle, mix: OutputMix,
                 on_end: Callable[[Exception | None], None], queue_frames: int = 100, bitrate: int = 128000) -> None:
        super().__init__()
        self.source = source
        self.handle = handle
        self.mix = mix
        self.history = InputHistory(rate=RATE)  # the last seconds of the caller's input, for "enroll this voice"
        self.samples_in = 0  # caller samples fed to the engine: the stream clock of spans
        self.samples_out = 0
        # Observers of every frame: (input, target, residual), aligned by stream index (output n is
        # the separation of input n - latency_samples). Recording and monitoring hook.
        self.listeners: list[Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = []
        self._on_end = on_end  # called once when the stream ends: None (the caller's track ended) or the error
        self._pending: asyncio.Queue = asyncio.Queue(maxsize=queue_frames)
        self._pump_task: asyncio.Task | None = None
        self._encoder = OpusPacketEncoder(bitrate)
        self._packets: deque[Packet] = deque()

    async def _pump(self) -> None:
        """Feed the caller's frames to the engine as they arrive; recv() collects the results in order."""
        try:
            while True:
                frame = await self.source.recv()
                if frame.sample_rate != RATE:
                    raise StreamInputError(f"WebRTC audio must arrive at {RATE} Hz, got {frame.sample_rate} Hz")
                pcm = frame_to_mono(frame)
                self.history.write(pcm)
                # Flow control, never a refusal: a call is live, so the batcher degrades it (fewer steps, then
                # pass-through) when compute falls behind, which drains its backlog; meanwhile its frames wait
                # here (and in aiortc's queue) rather than ending the call.
                await self.handle.wait_for_room(len(pcm))
                output = self.handle.submit(pcm)  # fed now: frames reach the session in arrival order
                self.samples_in += len(pcm)
                await self._pending.put((pcm, output))
        except MediaStreamError:
            pass
        except Exception as error:  # reported once by recv()
            await self._pending.put((None, error))
            return
        await self._pending.put(None)

    async def recv(self) -> Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pump_task is None:
            self._pump_task = asyncio.ensure_future(self._pump())
        while not self._packets:
            await self._separate_next()
        return self._packets.popleft()

    async def _separate_next(self) -> None:
        item = await self._pending.get()
        if item is None:  # the caller's track ended
            self.stop()
            self._on_end(None)
            raise MediaStreamError
        pcm, result = item
        try:
            if isinstance(result, Exception):
                raise result
            target, residual = await result
        except Exception as error:
            self.stop()
            self._on_end(error)
            raise MediaStreamError from error
        for listener in self.listeners:
            listener(pcm, target, residual)
        self.samples_out += len(pcm)
        self._packets.extend(self._encoder.encode(self.mix.apply(target, residual)))

    def stop(self) -> None:
        super().stop()
        if self._pump_task is not None:
            self._pump_task.cancel()
        # Frames still queued will never be heard; once the call's stream is aborted their engine calls
        # fail, and no one else would retrieve those errors.
        while not self._pending.empty():
            item = self._pending.get_nowait()
            if item is not None and isinstance(item[1], asyncio.Future):
                item[1].add_done_callback(lambda done: done.cancelled() or done.exception())


def video_frame_to_rgb(frame) -> np.ndarray:
    """An av.VideoFrame (any size and pixel format) as uint8 RGB [VIDEO_SIZE, VIDEO_SIZE, 3]."""
    return frame.reformat(width=VIDEO_SIZE, height=VIDEO_SIZE, format="rgb24").to_ndarray()


class VideoFeed:
    """The caller's video to the engine session, beside its audio, for visual-mask prompts.

    Each frame is converted to RGB at VIDEO_SIZE and stamped with the stream clock when it arrives (`clock()`:
    seconds of the caller's audio fed to the engine so far): the picture goes with the sound that came with
    it, whatever the tracks' RTP timestamps say, and it reaches the model before the audio after it, which the
    model needs to finalise the latent frames around its time. A frame stamped no later than the previous one
    (it came before any new audio) is skipped: the model wants increasing times, and it uses at most one frame
    per latent frame (25 per second for SAM Audio), so it loses nothing. Frames wait in a small bounded queue
    for the engine's worker, which takes them between rounds; when the worker is behind, the oldest waiting
    frame is dropped, so the audio path never waits for video and memory stays bounded. `pushed`, `dropped` and `skipped` count frames for the call's metrics.
    """

    def __init__(self, source: MediaStreamTrack, handle: StreamHandle, clock: Callable[[], float],
                 queue_frames: int = VIDEO_QUEUE_FRAMES) -> None:
        self.source = source
        self.handle = handle
        self.clock = clock
        self.pushed = self.dropped = self.skipped = 0
        self._queue: asyncio.Queue[tuple[np.ndarray, float]] = asyncio.Queue(maxsize=queue_frames)
        self._last_time = -math.inf

    async def run(self) -> None:
        """Until the caller's video track ends; raises what stopped the video reaching the engine."""
        pusher = asyncio.ensure_future(self._push())
        try:
            while not pusher.done():  # it stops only on an error, seen at the next frame
                try:
                    frame = await self.source.recv()
                except MediaStreamError:  # the caller's video ended
                    return
                self._enqueue(frame)
            pusher.result()
        finally:
            pusher.cancel()

    def _enqueue(self, frame) -> None:
        time_s = self.clock()
        if time_s <= self._last_time:
            self.skipped += 1
            return
        self._last_time = time_s
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait((video_frame_to_rgb(frame), time_s))

    async def _push(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            images, times = zip(*batch)
            await self.handle.push_video(np.stack(images), np.array(times))
            self.pushed += len(batch)


# ---------------------------------------------------------------------------------------- prompts


Box = tuple[float, float, float, float]


def check_box(box: Any) -> Box:
    """A `visual_mask` box: [x0, y0, x1, y1], fractions of the video's width and height from its top-left corner."""
    numbers = isinstance(box, list) and len(box) == 4 and all(
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) for value in box)
    if not numbers or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ProtocolError("bad_prompt", "'box' must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and "
                                          "0 <= y0 < y1 <= 1 (fractions of the video's width and height from its "
                                          f"top-left corner), or null to clear it; got {shown(box)}")
    return tuple(float(value) for value in box)


def box_mask(box: Box, size: int = VIDEO_SIZE) -> np.ndarray:
    """The box rasterized at the working resolution: bool [size, size], True on every pixel the box touches
    (so even a box thinner than a pixel marks one)."""
    x0, y0, x1, y1 = box
    mask = np.zeros((size, size), dtype=bool)
    mask[math.floor(y0 * size) : math.ceil(y1 * size), math.floor(x0 * size) : math.ceil(x1 * size)] = True
    return mask


@dataclass(eq=False)
class PromptParts:
    """The parts of a caller's prompt, each replaceable on its own (text, spans, audio example, visual box)."""

    text: str | None = None
    spans: tuple = ()
    example: np.ndarray | None = None  # model rate
    box: Box | None = None  # on the caller's video, rasterized into the prompt's visual mask

    def update(self, message: dict) -> PromptParts:
        """The parts a `prompt` message leaves: each key present replaces its part (null clears it)."""
        unknown = sorted(set(message) - {"type", "text", "spans", "example"})
        if unknown:
            raise ProtocolError("bad_prompt", f"unknown prompt fields {shown(unknown)}: use text, spans, example "
                                              "(a box on the video is a 'visual_mask' message)")
        parts = replace(self)
        if "text" in message:
            text = message["text"]
            if text is not None and not isinstance(text, str):
                raise ProtocolError("bad_prompt", f"prompt 'text' must be a string or null, got {shown(text)}")
            check_text_length(text)
            parts.text = text if text and text.strip() else None
        if "spans" in message:
            spans = message["spans"] or []
            if not isinstance(spans, list) or not all(isinstance(span, list) for span in spans):
                raise ProtocolError("bad_prompt", f"prompt 'spans' must be a list of [sign, start_s, end_s], "
                                                  f"got {shown(spans)}")
            parts.spans = tuple(tuple(span) for span in spans)
        if "example" in message:
            if message["example"] is not None:
                raise ProtocolError("bad_prompt", "over WebRTC 'example' can only be cleared (null): "
                                                  "send 'enroll' to take one from your input")
            parts.example = None
        return parts

    def prompt(self) -> Prompt:
        visual_mask = None if self.box is None else box_mask(self.box)
        try:
            return Prompt(text=self.text, spans=self.spans, example=self.example, visual_mask=visual_mask)
        except UserFacingError as error:
            raise ProtocolError("bad_prompt", str(error)) from None

    def describe(self, model_rate: int) -> dict:
        example_s = None if self.example is None else round(len(self.example) / model_rate, 3)
        return {"text": self.text, "spans": [list(span) for span in self.spans], "example_s": example_s,
                "box": None if self.box is None else list(self.box)}


def check_sign(sign: Any) -> str:
    if sign not in ("+", "-"):
        raise ProtocolError("bad_message", f"'sign' must be '+' (this sound) or '-' (not this), got {shown(sign)}")
    return sign


# ---------------------------------------------------------------------------------------- one call


OpenStream = Callable[[Prompt, int], Awaitable["StreamHandle"]]


class WebRTCPeer:
    """One WebRTC call. `open_stream(prompt, rate)` opens its engine session (a `Batcher.open`, or the
    server's, which counts sessions); `send(message)` reaches the caller over the signalling socket
    (used until the data channel is open); `on_close()` runs once when the call ends.

    `ice_servers` defaults to none: aiortc would otherwise ask Google's public STUN server; pass e.g.
    ["stun:stun.example.org:3478"] when callers sit behind NAT.
    """

    def __init__(self, open_stream: OpenStream, send: Callable[[dict], Awaitable[None]] | None = None,
                 on_close: Callable[[], None] | None = None, *, ice_servers: list[str] | tuple[str, ...] = (),
                 metrics_interval_s: float = 0.5, echo_video: bool = True) -> None:
        self.open_stream = open_stream
        self.send = send
        self.on_close = on_close
        self.ice_servers = list(ice_servers)
        self.metrics_interval_s = metrics_interval_s
        self.echo_video = echo_video
        self.pc: RTCPeerConnection | None = None
        self.handle: StreamHandle | None = None
        self.track: SeparatedTrack | None = None  # the separated output, once the caller's audio arrived
        self.video: VideoFeed | None = None  # the caller's video to the model, when both exist
        self.dropped_samples = 0  # caller samples never separated: the call ended first
        self.channel = None
        self.parts = PromptParts()
        self.mix = OutputMix()
        self._open_spans: dict[str, tuple] = {}  # sign -> the open span of a held button
        self._prompt_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.closed = asyncio.Event()

    @property
    def model_rate(self) -> int:
        return self.handle.session.model_rate

    @property
    def stream_s(self) -> float:
        """The stream clock: seconds of the caller's audio fed to the engine (spans are on this clock)."""
        return self.track.samples_in / RATE if self.track is not None else 0.0

    async def accept(self, message: dict) -> dict:
        """Handle a `webrtc_offer`; returns the `webrtc_answer` message."""
        offer = message.get("offer")
        if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
            raise ProtocolError("bad_message", "webrtc_offer needs 'offer': {\"type\": \"offer\", \"sdp\": \"...\"}")
        if not isinstance(message.get("prompt"), dict):
            raise ProtocolError("bad_prompt", "webrtc_offer needs 'prompt': {\"text\": ..., \"spans\": [...]}")
        self.parts = PromptParts().update(message["prompt"])
        prompt = self.parts.prompt()
        output = message.get("output", {})
        if not isinstance(output, dict):
            raise ProtocolError("bad_message", "'output' must be {\"target\": gain, \"residual\": gain}")
        self.mix = OutputMix(output.get("target", 1.0), output.get("residual", 0.0))
        self.handle = await self.open_stream(prompt, RATE)

        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(url) for url in self.ice_servers]))

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self.track is None:
                self.track = SeparatedTrack(track, self.handle, self.mix, self._stream_ended)
                pc.addTrack(self.track)
            elif track.kind == "video" and self.video is None and self.handle.session.accepts_video:
                # Two consumers of one track (the model and the echo): each gets every frame through a relay.
                relay = MediaRelay()
                self.video = VideoFeed(relay.subscribe(track), self.handle, lambda: self.stream_s)
                self._spawn(self._feed_video(self.video))
                if self.echo_video:
                    pc.addTrack(relay.subscribe(track))
            elif track.kind == "video" and self.echo_video:
                pc.addTrack(track)  # the call's picture comes back beside its separated sound

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            self.channel = channel
            channel.on("message", lambda text: self._spawn(self.on_control(text)))
            channel.on("close", lambda: self._spawn(self.close()))
            self._spawn(self._send_metrics(channel))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._spawn(self.close())

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        except ValueError as error:  # aiortc's SDP parser
            await self.close()
            raise ProtocolError("bad_message", f"the offer's SDP is not usable: {error}") from None
        if self.track is None:
            await self.close()
            raise ProtocolError("bad_message", "the offer carries no audio track: add the microphone before offering")
        # Opus only (48 kHz both ways, what the session is opened at), never G.722 or G.711.
        opus = [codec for codec in RTCRtpSender.getCapabilities("audio").codecs if codec.mimeType.lower() == "audio/opus"]
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.setCodecPreferences(opus)
        await pc.setLocalDescription(await pc.createAnswer())  # aiortc gathers every candidate here
        return {
            "type": "webrtc_answer",
            "answer": {"type": "answer", "sdp": pc.localDescription.sdp},
            "sample_rate": RATE,
            "latency_samples": self.handle.latency_samples,
            "latency_ms": 1000.0 * self.handle.latency_samples / RATE,
            "model_rate": self.model_rate,
            "understood": understood(self.handle),  # how the model took the first prompt (docs/protocol.md)
        }

    async def add_candidate(self, message: dict) -> None:
        """A trickled ICE candidate (the browser client sends none: its offer holds them all)."""
        if self.pc is None:
            raise ProtocolError("bad_message", "webrtc_candidate before webrtc_offer")
        candidate = message.get("candidate")
        if candidate is None:  # end of candidates
            return
        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
            raise ProtocolError("bad_message", "'candidate' must be {\"candidate\": \"candidate:...\", "
                                               "\"sdpMid\": ..., \"sdpMLineIndex\": ...} or null")
        line = candidate["candidate"].removeprefix("a=").removeprefix("candidate:")
        if not line:
            return
        try:
            parsed = candidate_from_sdp(line)
        except (ValueError, IndexError):
            raise ProtocolError("bad_message", f"unreadable ICE candidate {shown(candidate['candidate'])}") from None
        parsed.sdpMid = candidate.get("sdpMid")
        parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
        await self.pc.addIceCandidate(parsed)

    # ------------------------------------------------------------------------------ control

    async def on_control(self, text: Any) -> None:
        kind = None
        try:
            if not isinstance(text, str) or len(text) > MAX_CONTROL_BYTES:
                raise ProtocolError("bad_message", f"control messages are JSON text of at most {MAX_CONTROL_BYTES} bytes")
            try:
                message = json.loads(text)
            except json.JSONDecodeError as error:
                raise ProtocolError("bad_json", f"control message is not JSON: {error}") from None
            except RecursionError:
                raise ProtocolError("bad_json", "control message is JSON nested too deeply") from None
            if not isinstance(message, dict):
                raise ProtocolError("bad_json", "a control message must be a JSON object with a string 'type'")
            kind = message.get("type")
            await self.control(message)
        except ProtocolError as error:
            request = request_name(kind) if isinstance(kind, str) else None
            await self.notify({"type": "error", "code": error.code, "message": error.message, "request": request})

    async def control(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "prompt":
            await self._change_prompt(lambda parts: parts.update(message))
        elif kind == "span_begin":
            sign = check_sign(message.get("sign"))
            if sign in self._open_spans:
                return  # already held
            start = self.stream_s
            span = self._open_spans[sign] = (sign, start, start + OPEN_SPAN_S)
            await self._change_prompt(lambda parts: replace(parts, spans=parts.spans + (span,)))
        elif kind == "span_end":
            sign = check_sign(message.get("sign"))
            if sign not in self._open_spans:
                raise ProtocolError("bad_message", f"span_end '{sign}' without span_begin")
            held = self._open_spans.pop(sign)
            closed = (sign, held[1], max(self.stream_s, held[1] + 1.0 / RATE))

            await self._change_prompt(
                lambda parts: replace(parts, spans=tuple(closed if span == held else span for span in parts.spans)))
        elif kind == "enroll":
            try:  # shared with the WebSocket protocol's enroll (stream/server/enroll.py)
                seconds = enroll_seconds(message.get("seconds", 3.0))
                clip = enrollment_clip(self.track.history if self.track is not None else InputHistory(rate=RATE), seconds)
            except EnrollmentError as error:
                raise ProtocolError(error.code, error.message) from None
            example = to_model_rate(clip, RATE, self.model_rate)
            await self._change_prompt(lambda parts: replace(parts, example=example))
        elif kind == "output":
            self.mix.set(message.get("target", 1.0), message.get("residual", 0.0))
        elif kind == "visual_mask":
            if not self.handle.session.accepts_video:
                raise ProtocolError("no_vision", NO_VISION)
            if "box" not in message:
                raise ProtocolError("bad_prompt", "visual_mask needs 'box': [x0, y0, x1, y1] (fractions of the "
                                                  "video's width and height), or null to clear it")
            box = None if message["box"] is None else check_box(message["box"])
            if box is not None and self.video is None:
                raise ProtocolError("no_video", "this call sends no video, so there is nothing to draw a box on: "
                                                "offer a camera (video) track with the audio (the browser client: "
                                                "open it with ?video=1)")
            await self._change_prompt(lambda parts: replace(parts, box=box))
        else:
            raise ProtocolError("unknown_type", f"unknown control message type {shown(kind)}: use prompt, span_begin, "
                                                "span_end, enroll, output or visual_mask")

    async def _change_prompt(self, change: Callable[[PromptParts], PromptParts]) -> None:
        async with self._prompt_lock:  # changes apply in order, each to the parts the previous one left
            parts = change(self.parts)
            prompt = parts.prompt()
            try:
                await self.handle.set_prompt(prompt)
            except UserFacingError as error:  # e.g. text for a model without a text encoder
                raise ProtocolError("bad_prompt", str(error)) from None
            self.parts = parts
        await self.notify({"type": "prompt", "prompt": parts.describe(self.model_rate), "stream_s": self.stream_s,
                           "understood": understood(self.handle)})  # how the model took it (docs/protocol.md)

    # ------------------------------------------------------------------------------ outgoing

    def metrics(self) -> dict:
        metrics = self.handle.metrics.as_dict()
        samples_in = self.track.samples_in if self.track is not None else 0
        samples_out = self.track.samples_out if self.track is not None else 0
        video = self.video
        return {"type": "metrics", **metrics, "latency_samples": self.handle.latency_samples, "sample_rate": RATE,
                "samples_in": samples_in, "samples_out": samples_out, "stream_s": samples_in / RATE,
                "video_frames_pushed": video.pushed if video else 0,
                "video_frames_dropped": video.dropped if video else 0,
                "video_frames_skipped": video.skipped if video else 0,
                "degraded": metrics["level"] != 0, "prompt": self.parts.describe(self.model_rate)}

    async def _send_metrics(self, channel) -> None:
        while channel.readyState != "closed":
            if channel.readyState == "open":
                channel.send(json.dumps(self.metrics()))
            await asyncio.sleep(self.metrics_interval_s)

    async def notify(self, message: dict) -> None:
        """To the caller: over the data channel when it is open, else over the signalling socket."""
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(message))
        elif self.send is not None:
            await self.send(message)

    async def _feed_video(self, feed: VideoFeed) -> None:
        """The call's video to its model until the video ends; a failure stops the video only (the audio goes
        on, and a visual prompt keeps using the last frame the model got)."""
        try:
            await feed.run()
        except Exception as error:
            if self.handle.error is not None or self.closed.is_set():
                return  # the stream itself ended: the audio path reports that
            log.warning("WebRTC video stopped: %s", error, exc_info=error, extra={"fields": {"error": str(error)}})
            await self.notify({"type": "error", "code": "video_error", "request": None,
                               "message": f"the call's video no longer reaches the model ({error}); the audio goes on"})

    def _stream_ended(self, error: Exception | None) -> None:
        if error is not None:
            log.warning("WebRTC stream failed: %s", error, exc_info=error, extra={"fields": {"error": str(error)}})
            if isinstance(error, StreamInputError) and self.handle.error is None:
                code, what = "bad_frame", str(error)  # e.g. audio at another rate than the call's
            else:
                code, what = "model_error", f"the model failed on this call ({error})"
            self._spawn(self.notify({"type": "error", "code": code, "message": f"the call's audio stopped: {what}",
                                     "request": None}))
        self._spawn(self.close())

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Hang up: stop the tracks, close the connection, end the engine session."""
        if self.closed.is_set():
            return
        self.closed.set()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self.track is not None:
            self.track.stop()
        if self.pc is not None:
            await self.pc.close()
        if self.handle is not None:
            # The call is over: its queued audio and tail have no one to go to.
            self.dropped_samples = self.handle.abort()
        if self.on_close is not None:
            self.on_close()


# ---------------------------------------------------------------------------------------- signalling


class WebRTCService:
    """Serves `webrtc_offer`, `webrtc_candidate` and `webrtc_ping` on a `SeparationServer`'s WebSocket:

        WebRTCService(server)          # before server.start()
    """

    def __init__(self, server: SeparationServer, ice_servers: list[str] | tuple[str, ...] = (),
                 echo_video: bool = True) -> None:
        self.server = server
        self.ice_servers = tuple(ice_servers)
        self.echo_video = echo_video
        self.peers: dict[str, WebRTCPeer] = {}  # connection id -> its call
        # Called with each accepted call before its answer leaves (monitoring, recording: see
        # SeparatedTrack.listeners), so nothing of the call's audio can be missed.
        self.on_call: list[Callable[[WebRTCPeer], None]] = []
        server.register_message_handler("webrtc_offer", self.on_offer)
        server.register_message_handler("webrtc_candidate", self.on_candidate)
        server.register_message_handler("webrtc_ping", self.on_ping)

    async def on_offer(self, connection: Connection, message: dict) -> None:
        if connection.id in self.peers:
            raise ProtocolError("already_started", "this connection already has a call: open another socket")
        session_id = None

        async def open_stream(prompt: Prompt, rate: int) -> StreamHandle:
            nonlocal session_id
            session_id, handle = await self.server.open_stream(prompt, rate)
            return handle

        def on_close() -> None:
            self.peers.pop(connection.id, None)
            if session_id is not None and self.server.release(session_id):
                track = peer.track
                log.info("webrtc call ended", extra={"fields": {
                    **connection.log_fields, "session": session_id,
                    "samples_in": track.samples_in if track else 0, "samples_out": track.samples_out if track else 0,
                    "samples_dropped": peer.dropped_samples}})

        peer = WebRTCPeer(open_stream, connection.send_message, on_close, ice_servers=self.ice_servers,
                          echo_video=self.echo_video)
        self.peers[connection.id] = peer
        connection.add_cleanup(peer.close)  # closing the signalling socket hangs up
        try:
            answer = await peer.accept(message)
        except BaseException:
            await peer.close()
            raise
        answer["session"] = session_id
        for callback in self.on_call:
            callback(peer)
        log.info("webrtc call", extra={"fields": {**connection.log_fields, "session": session_id,
                                                  "prompt": peer.parts.describe(peer.model_rate)}})
        await connection.send_message(answer)

    async def on_candidate(self, connection: Connection, message: dict) -> None:
        peer = self.peers.get(connection.id)
        if peer is None:
            raise ProtocolError("not_started", "webrtc_candidate before webrtc_offer")
        await peer.add_candidate(message)
        await connection.send_message({"type": "webrtc_candidate_added"})

    async def on_ping(self, connection: Connection, message: dict) -> None:
        """Keeps the signalling socket (and so the call) within the server's idle timeout."""
        peer = self.peers.get(connection.id)
        await connection.send_message({"type": "webrtc_pong", "call": peer is not None and not peer.closed.is_set()})

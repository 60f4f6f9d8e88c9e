"""The WebSocket streaming protocol "samstream.v1" (docs/protocol.md is its specification).

One `Connection` serves one WebSocket. Binary messages carry mono PCM in and separated PCM out; text
messages carry JSON control messages (`start`, `prompt`, `flush`, `stop`, `metrics`, and the types
that extensions register, e.g. WebRTC signalling).

Replies leave in request order: each binary frame gets one reply (a binary frame of the same length,
or an `error`), each JSON message gets one reply, so a client can pair them by counting. The compute
runs on the batcher's worker thread meanwhile, so the receive loop *starts* each request's work at
once (a push into the batcher, a flush) and queues a `_Reply`; the send loop awaits the replies one
after another and sends them.

Flow control and bounds (docs/protocol.md, "Limits and flow control"). The receive loop stops reading
(so TCP pushes back on the client) while the session's backlog has no room for the next frame, while
`OUTBOX_REPLIES` replies wait to be sent, or while more than `OUTBOX_AUDIO_S` of audio does. A client
that does not read its replies cannot make the server hold more than that; one whose reply cannot be
written for `send_timeout_s` is cut off (a slow reader), and its session is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from samstream.model.errors import UserFacingError
from samstream.stream.metrics import FEWER_STEPS, PASS_THROUGH
from samstream.stream.processor import Prompt, StreamInputError
from samstream.stream.resample import MAX_RATE, MIN_RATE
from samstream.stream.server.enroll import (
    MAX_ENROLL_S, EnrollmentError, InputHistory, enroll_seconds, enrollment_clip, to_model_rate,
)

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from samstream.stream.batcher import Batcher, StreamHandle
    from samstream.stream.server.ops import ServerConfig, ServerMetrics

log = logging.getLogger("samstream.server")

PROTOCOL = "samstream.v1"
FORMATS = {"pcm16": np.dtype("<i2"), "float32": np.dtype("<f4")}
OUTPUTS = {"both": 2, "target": 1, "residual": 1}  # "both": target and residual interleaved
MAX_EXAMPLE_S = 30.0
MIN_METRICS_INTERVAL_S = 0.1
OUTBOX_REPLIES = 256  # replies (audio and JSON) waiting to be sent, per connection
OUTBOX_AUDIO_S = 4.0  # seconds of a connection's audio in replies waiting to be sent (or computed)
PACINGS = ("live", "as_fast_as_possible")
SHOWN_CHARS = 60  # a client's value quoted in an error message is cut to this many characters
MAX_TEXT_CHARS = 1000  # a text prompt names a sound: longer texts are refused (bad_prompt)

# Stable error codes (docs/protocol.md says when each is sent).
ERROR_CODES = frozenset({
    "bad_json", "unknown_type", "bad_message", "unsupported_protocol", "not_started", "already_started",
    "bad_format", "bad_sample_rate", "bad_prompt", "frame_too_large", "bad_frame", "backlog_full",
    "too_many_sessions", "unauthorized", "origin_forbidden", "idle_timeout", "model_error", "internal",
    "no_vision", "no_video", "video_error",  # visual prompts on WebRTC calls (docs/webrtc.md)
    "slow_reader",  # a client that does not read its replies (logged and counted; the connection is dropped)
    "not_enough_audio",  # `enroll` before enough (sounding) input: stream/server/enroll.py
})

MessageHandler = Callable[["Connection", dict], Awaitable[None]]


class ConnectionHost(Protocol):
    """What a `Connection` uses of the server that accepted it (app.SeparationServer). Declared here, so
    this module needs nothing from app.py, which imports it."""

    config: ServerConfig
    model_name: str
    model_rate: int
    batcher: Batcher
    sessions: dict[str, StreamHandle]
    metrics: ServerMetrics
    message_handlers: dict[str, MessageHandler]

    async def open_stream(self, prompt: Prompt, client_rate: int) -> tuple[str, StreamHandle]: ...

    def release(self, session_id: str) -> bool: ...


class ProtocolError(Exception):
    """A request the server refuses; the client gets `{"type": "error", "code": code, "message": message}`."""

    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------------------- formats


def shown(value: Any) -> str:
    """A client's value for an error message: its repr, cut to SHOWN_CHARS (a 1 MiB value must not make a
    2 MiB error)."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def request_name(kind: str) -> str:
    """A message type as the `request` field of its error reply (cut like `shown`)."""
    return kind if len(kind) <= SHOWN_CHARS else kind[:SHOWN_CHARS] + "..."


@dataclass(frozen=True)
class StreamFormat:
    encoding: str  # "pcm16" | "float32", little-endian, both ways
    sample_rate: int  # the client's rate, both ways
    outputs: str  # "both" | "target" | "residual"
    pacing: str = "live"  # "live" (may be degraded to keep up) | "as_fast_as_possible" (never degraded)

    @property
    def channels(self) -> int:
        return OUTPUTS[self.outputs]


def decode_pcm(data: bytes, encoding: str) -> np.ndarray:
    """A binary frame as float32 mono samples, or `bad_frame`."""
    dtype = FORMATS[encoding]
    if not data:
        raise ProtocolError("bad_frame", "empty audio frame: send at least one sample")
    if len(data) % dtype.itemsize:
        raise ProtocolError("bad_frame", f"audio frame of {len(data)} bytes is not a whole number of "
                                         f"{dtype.itemsize}-byte {encoding} samples")
    samples = np.frombuffer(data, dtype=dtype)
    if encoding == "pcm16":
        return samples.astype(np.float32) / 32768.0
    if not np.isfinite(samples).all():
        raise ProtocolError("bad_frame", "audio frame contains NaN or infinite samples")
    return samples.astype(np.float32)


def encode_pcm(samples: np.ndarray, encoding: str) -> bytes:
    """float32 samples (any shape, C order) as little-endian bytes in `encoding`."""
    if encoding == "pcm16":
        return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return samples.astype("<f4", copy=False).tobytes()


def encode_output(target: np.ndarray, residual: np.ndarray, fmt: StreamFormat) -> bytes:
    if fmt.outputs == "both":
        return encode_pcm(np.stack([target, residual], axis=1), fmt.encoding)  # frame-major: t0 r0 t1 r1 ...
    return encode_pcm(target if fmt.outputs == "target" else residual, fmt.encoding)


def parse_control(text: str) -> dict:
    """A text message as a control message (a JSON object with a string `type`), or `bad_json`."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProtocolError("bad_json", f"text message is not JSON: {error}") from None
    except RecursionError:  # Python's parser gives up on arrays/objects nested ~1000 deep
        raise ProtocolError("bad_json", "text message is JSON nested too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_json", "a control message must be a JSON object with a string 'type'")
    return message


def parse_start(message: dict) -> tuple[StreamFormat, float | None]:
    """The stream format and the periodic-metrics interval of a `start` message."""
    protocol = message.get("protocol", PROTOCOL)
    if not isinstance(protocol, str) or protocol != PROTOCOL:
        raise ProtocolError("unsupported_protocol", f"this server speaks {PROTOCOL}, not {shown(protocol)}")
    if "format" not in message:
        raise ProtocolError("bad_format", f"start is missing 'format': one of {sorted(FORMATS)}")
    encoding = message["format"]
    if not isinstance(encoding, str) or encoding not in FORMATS:
        raise ProtocolError("bad_format", f"'format' must be one of {sorted(FORMATS)}, got {shown(encoding)}")
    outputs = message.get("outputs", "both")
    if not isinstance(outputs, str) or outputs not in OUTPUTS:
        raise ProtocolError("bad_format", f"'outputs' must be one of {list(OUTPUTS)}, got {shown(outputs)}")
    if "sample_rate" not in message:
        raise ProtocolError("bad_sample_rate", f"start is missing 'sample_rate': the client's rate in Hz, an "
                                               f"integer from {MIN_RATE} to {MAX_RATE}")
    rate = message["sample_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError("bad_sample_rate",
                            f"'sample_rate' must be an integer from {MIN_RATE} to {MAX_RATE} Hz, got {shown(rate)}")
    pacing = message.get("pacing", "live")
    if not isinstance(pacing, str) or pacing not in PACINGS:
        raise ProtocolError("bad_message", f"'pacing' must be one of {list(PACINGS)}, got {shown(pacing)}")
    interval = message.get("metrics_interval_s")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, (int, float))
                                 or not MIN_METRICS_INTERVAL_S <= interval <= 3600):
        raise ProtocolError("bad_message", f"'metrics_interval_s' must be a number of seconds from "
                                           f"{MIN_METRICS_INTERVAL_S} to 3600, got {shown(interval)}")
    return StreamFormat(encoding, rate, outputs, pacing), interval


def parse_prompt(spec: Any, fmt: StreamFormat, model_rate: int) -> Prompt:
    """A JSON prompt {text, spans, example} as an engine `Prompt` (the example resampled to the model rate).

    Runs in a worker thread: decoding and resampling a long example takes a few milliseconds."""
    if spec is None:
        raise ProtocolError("bad_prompt", "missing 'prompt': an object with 'text', 'spans' and/or 'example'")
    if not isinstance(spec, dict):
        raise ProtocolError("bad_prompt", f"'prompt' must be an object with 'text', 'spans' and/or 'example', "
                                          f"got {shown(spec)}")
    unknown = sorted(set(spec) - {"text", "spans", "example"})
    if unknown:
        raise ProtocolError("bad_prompt", f"unknown prompt fields {shown(unknown)}: use text, spans, example")
    text = spec.get("text")
    if text is not None and not isinstance(text, str):
        raise ProtocolError("bad_prompt", f"prompt 'text' must be a string, got {shown(text)}")
    check_text_length(text)
    spans = spec.get("spans", [])
    if not isinstance(spans, list) or not all(isinstance(span, list) for span in spans):
        raise ProtocolError("bad_prompt", f"prompt 'spans' must be a list of [sign, start_s, end_s], "
                                          f"got {shown(spans)}")
    example = None
    if spec.get("example") is not None:
        example = decode_example(spec["example"], fmt, model_rate)
    try:
        return Prompt(text=text, spans=tuple(tuple(span) for span in spans), example=example)
    except UserFacingError as error:
        message = str(error)
        if len(message) > 4 * SHOWN_CHARS:  # it may quote the client's value
            message = message[: 4 * SHOWN_CHARS] + "..."
        raise ProtocolError("bad_prompt", message) from None


def check_text_length(text: str | None) -> None:
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise ProtocolError("bad_prompt", f"prompt 'text' of {len(text)} characters is too long: name the sound in "
                                          f"at most {MAX_TEXT_CHARS} characters, e.g. \"dog barking\"")


def decode_example(data: Any, fmt: StreamFormat, model_rate: int) -> np.ndarray:
    """A base64 audio example (PCM in the stream's format and rate) as float32 at the model rate."""
    import soxr

    if not isinstance(data, str):
        raise ProtocolError("bad_prompt", "prompt 'example' must be base64 text")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_prompt", "prompt 'example' is not valid base64") from None
    try:
        audio = decode_pcm(raw, fmt.encoding)
    except ProtocolError as error:
        raise ProtocolError("bad_prompt", f"prompt 'example': {error.message}") from None
    if len(audio) > MAX_EXAMPLE_S * fmt.sample_rate:
        raise ProtocolError("bad_prompt", f"prompt 'example' is {len(audio) / fmt.sample_rate:.1f} s long: "
                                          f"send at most {MAX_EXAMPLE_S:.0f} s")
    if fmt.sample_rate == model_rate:
        return audio
    return soxr.resample(audio, fmt.sample_rate, model_rate).astype(np.float32)


# ------------------------------------------------------------------------------------------- connection


@dataclass
class _Reply:
    request: str | None  # "audio" or the message type, named by an error reply (None: no request)
    deliver: Callable[[Any], Awaitable[None]]  # sends the reply, given the work's result
    work: asyncio.Future | None = None  # started when the request arrived
    samples: int = 0  # client samples of audio the reply carries (bounded by OUTBOX_AUDIO_S)
    ready_at: float = 0.0  # when the work finished (the send-wait timing)

    def mark_ready(self, _: asyncio.Future) -> None:
        self.ready_at = time.monotonic()


@dataclass
class _Stream:
    """The connection's current session."""

    id: str
    handle: StreamHandle
    format: StreamFormat
    samples_in: int = 0  # input samples whose output was sent
    samples_out: int = 0  # output samples sent, per channel (pre-roll and tail included)
    dropped_samples: int = 0  # input samples never answered: the client went away first
    metrics_task: asyncio.Task | None = field(default=None, repr=False)
    history: InputHistory | None = field(default=None, repr=False)  # the last seconds of input, for `enroll`


class Connection:
    """One client WebSocket. Extensions (registered message handlers) use `send_message`, `add_cleanup`,
    `id`, `log_fields` and `server` (whose `open_stream` enforces the session limit)."""

    def __init__(self, server: ConnectionHost, websocket: ServerConnection) -> None:
        self.server = server
        self.ws = websocket
        self.id = secrets.token_hex(4)
        self.stream: _Stream | None = None
        self._outbox: asyncio.Queue[_Reply | None] = asyncio.Queue(maxsize=OUTBOX_REPLIES)
        self._outbox_samples = 0  # client samples of audio in replies not yet sent (OUTBOX_AUDIO_S)
        self._outbox_drained = asyncio.Event()  # set by the send loop when it sends an audio reply
        self._shutdown = asyncio.get_running_loop().create_future()
        self._gone = False  # the client disconnected: replies are dropped, sessions released
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._handlers: dict[str, MessageHandler] = {
            "start": Connection._on_start, "prompt": Connection._on_prompt, "flush": Connection._on_flush,
            "stop": Connection._on_stop, "metrics": Connection._on_metrics, "enroll": Connection._on_enroll,
        }
        self._stop_requested = False
        self._vanished: tuple[_Stream, str] | None = None  # the session of a client that went away
        self._receive_timeout: asyncio.Timeout | None = None  # the receive in progress (idle timeout, shutdown)
        self._sending_since: float | None = None  # when the send in progress began (the slow-reader watchdog)

    @property
    def log_fields(self) -> dict:
        fields = {"connection": self.id, "remote": str(self.ws.remote_address[0]) if self.ws.remote_address else None}
        if self.stream is not None:
            fields["session"] = self.stream.id
        return fields

    # ---------------------------------------------------------------- extension API

    async def send_message(self, message: dict) -> None:
        """Queue a JSON message; it leaves after every reply queued before it."""
        await self._queue(_Reply(str(message.get("type")), lambda _: self._send_json(message)))

    def add_cleanup(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` when the connection ends, however it ends (e.g. to hang up a WebRTC peer)."""
        self._cleanups.append(callback)

    def request_shutdown(self) -> None:
        """Graceful server shutdown: stop reading, flush the session (tail + `end`), close with 1001."""
        if not self._shutdown.done():
            self._shutdown.set_result(None)
        if self._receive_timeout is not None:  # a receive in progress ends now
            self._receive_timeout.reschedule(asyncio.get_running_loop().time())

    # ---------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        watchdog = asyncio.create_task(self._watch_sends())
        code, reason, why = CloseCode.INTERNAL_ERROR, "internal error", "internal"
        try:
            code, reason, why = await self._receive_loop()
        except ConnectionClosed:
            self._gone, why = True, "disconnect"
        except Exception:
            log.exception("internal error", extra={"fields": self.log_fields})
        finally:
            await self._end_stream(why)  # the session's tail and `end` first, then why the connection closes
            if why == "idle_timeout":
                timeout = self.server.config.idle_timeout_s
                await self._send_error_reply(why, f"no message for {timeout:g} s: closing the connection", None)
            elif why == "internal":
                await self._send_error_reply(why, "the server failed on this connection (see its log)", None)
            await self._outbox.put(None)
            await sender
            watchdog.cancel()
            if self._vanished is not None:  # its log line counts every sample: answered or dropped
                self._release(*self._vanished)
            for cleanup in self._cleanups:
                try:
                    await cleanup()
                except Exception:
                    log.exception("connection cleanup failed", extra={"fields": self.log_fields})
            if not self._gone:
                await self.ws.close(code, reason)

    async def _next_message(self) -> str | bytes | None:
        """The next message; None on idle timeout or shutdown (`self._shutdown` tells which). One timeout context
        per message, no task: this runs for every frame of every client (websockets: cancelling recv() loses
        no message)."""
        if self._shutdown.done():
            return None
        try:
            async with asyncio.timeout(self.server.config.idle_timeout_s) as self._receive_timeout:
                return await self.ws.recv()
        except TimeoutError:
            return None
        finally:
            self._receive_timeout = None

    async def _receive_loop(self) -> tuple[int, str, str]:
        """Serve requests until the client stops, idles out or the server shuts down; returns the
        close code and reason and why the session (if any) ends."""
        while True:
            message = await self._next_message()
            if message is None:
                if self._shutdown.done():
                    return CloseCode.GOING_AWAY, "server shutting down", "shutdown"
                return CloseCode.POLICY_VIOLATION, "idle timeout", "idle_timeout"
            request = "audio" if isinstance(message, bytes) else "json"
            try:
                if isinstance(message, bytes):
                    await self._on_audio(message)
                else:
                    control = parse_control(message)
                    request = request_name(control["type"])
                    await self._handler(control["type"])(self, control)
            except ProtocolError as error:
                await self._send_error_reply(error.code, error.message, request)
            except UserFacingError as error:  # from an extension's handler
                await self._send_error_reply("bad_message", str(error), request)
            if self._stop_requested:
                return CloseCode.NORMAL_CLOSURE, "stopped", "stop"

    def _handler(self, kind: str) -> MessageHandler:
        handler = self._handlers.get(kind) or self.server.message_handlers.get(kind)
        if handler is None:
            known = sorted([*self._handlers, *self.server.message_handlers])
            raise ProtocolError("unknown_type", f"unknown message type {shown(kind)}: use one of {known}")
        return handler

    # ---------------------------------------------------------------- requests

    async def _on_audio(self, data: bytes) -> None:
        stream = self._live_stream("audio")
        pcm = decode_pcm(data, stream.format.encoding)
        limit = stream.handle.session.max_frame
        if len(pcm) > limit:
            raise ProtocolError("frame_too_large", f"audio frame of {len(pcm)} samples is too long: send at most "
                                                   f"{limit} samples ({self.server.config.max_frame_s:g} s) per frame")
        received = time.monotonic()
        if not stream.handle.session.has_room(len(pcm)):
            await self._wait_for_room(stream, len(pcm))  # flow control: reading stops until the session has room
        try:
            output = stream.handle.submit(pcm)  # fed now: frames reach the session in arrival order
        except StreamInputError as error:
            if stream.handle.error is not None:
                raise self._model_error(stream.handle.error) from None
            raise ProtocolError("backlog_full", f"{error} (the connection is closing)") from None
        stream.history.write(pcm)
        reply = _Reply("audio", lambda out: self._send_frame(stream, out, received, reply.ready_at or time.monotonic()),
                       output, len(pcm))
        output.add_done_callback(reply.mark_ready)  # a callback, not a task: this runs for every frame
        await self._queue(reply)

    async def _wait_for_room(self, stream: _Stream, samples: int) -> None:
        """Until the session's backlog takes `samples` more (its compute catches up: at once for a live stream
        that keeps to the clock), or the connection shuts down or closes."""
        room = asyncio.ensure_future(stream.handle.wait_for_room(samples))
        closed = asyncio.ensure_future(self.ws.wait_closed())
        try:
            await asyncio.wait((room, self._shutdown, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            room.cancel()
            closed.cancel()

    @staticmethod
    def _model_error(error: BaseException) -> ProtocolError:
        return ProtocolError("model_error", f"the model failed on this session ({error}); the session is over: "
                                            "send start to open a new one")

    async def _send_frame(self, stream: _Stream, output: tuple[np.ndarray, np.ndarray], received: float,
                          ready: float) -> None:
        target, residual = output
        await self._send(encode_output(target, residual, stream.format))
        stream.samples_in += len(target)
        stream.samples_out += len(target)
        now = time.monotonic()
        self.server.metrics.frame_answered(now - received)
        self.server.metrics.timings["send_wait"].observe(now - ready)

    async def _on_start(self, message: dict) -> None:
        if self._current_stream() is not None:
            raise ProtocolError("already_started",
                                f"session {self.stream.id} is running: flush it before starting another")
        fmt, interval = parse_start(message)
        if "prompt" not in message:
            raise ProtocolError("bad_prompt", "start needs a 'prompt' with text, spans and/or an example")
        prompt = await asyncio.to_thread(parse_prompt, message["prompt"], fmt, self.server.model_rate)
        session_id, handle = await self.server.open_stream(prompt, fmt.sample_rate, live=fmt.pacing == "live")
        self.stream = stream = _Stream(session_id, handle, fmt, history=InputHistory(MAX_ENROLL_S, fmt.sample_rate))
        if interval is not None:
            stream.metrics_task = asyncio.create_task(self._push_metrics(stream, interval))
        log.info("session started", extra={"fields": {
            **self.log_fields, "sample_rate": fmt.sample_rate, "format": fmt.encoding, "outputs": fmt.outputs,
            "pacing": fmt.pacing,
            "latency_samples": handle.latency_samples, "prompt": describe_prompt(prompt)}})
        processor = self.server.batcher.processor
        await self._send_json_reply("start", {
            "type": "started", "protocol": PROTOCOL, "session": session_id, "model": self.server.model_name,
            "format": fmt.encoding, "sample_rate": fmt.sample_rate, "outputs": fmt.outputs, "channels": fmt.channels,
            "pacing": fmt.pacing, "latency_samples": handle.latency_samples,
            "latency_ms": 1000.0 * handle.latency_samples / fmt.sample_rate,
            "model_rate": processor.sample_rate, "hop": processor.hop_samples,
            "hop_ms": 1000.0 * processor.hop_samples / processor.sample_rate,
            "max_frame_samples": handle.session.max_frame, "understood": understood(handle),
        })

    async def _on_prompt(self, message: dict) -> None:
        stream = self._live_stream("prompt")
        prompt = await asyncio.to_thread(parse_prompt, message.get("prompt"), stream.format, self.server.model_rate)
        await self._set_prompt(stream, prompt)
        await self._send_json_reply("prompt", {"type": "prompt_changed", "session": stream.id,
                                               "understood": understood(stream.handle)})

    async def _set_prompt(self, stream: _Stream, prompt: Prompt) -> None:
        try:
            await stream.handle.set_prompt(prompt)
        except UserFacingError as error:  # e.g. text for a model without a text encoder
            raise ProtocolError("bad_prompt", str(error)) from None
        except Exception as error:  # the processor switches prompts atomically: the session goes on
            log.exception("prompt change failed", extra={"fields": self.log_fields})
            raise ProtocolError("bad_prompt", f"the model could not take this prompt ({error}); "
                                              "the previous prompt stays") from None
        log.info("prompt changed", extra={"fields": {**self.log_fields, "prompt": describe_prompt(prompt)}})

    async def _on_enroll(self, message: dict) -> None:
        """The last `seconds` of this stream's input become the prompt (stream/server/enroll.py), with the
        message's optional `text`; the output crossfades to it like any prompt change."""
        stream = self._live_stream("enroll")
        text = message.get("text")
        if text is not None and not isinstance(text, str):
            raise ProtocolError("bad_prompt", f"enroll 'text' must be a string, got {shown(text)}")
        check_text_length(text)
        try:
            clip = enrollment_clip(stream.history, enroll_seconds(message.get("seconds", 3.0)))
        except EnrollmentError as error:
            raise ProtocolError(error.code, error.message) from None
        rate = stream.format.sample_rate
        stream_s = stream.history.total / rate  # the clip ends here, on the stream's input clock
        example = await asyncio.to_thread(to_model_rate, clip, rate, self.server.model_rate)
        try:
            prompt = Prompt(text=text or None, example=example)
        except UserFacingError as error:
            raise ProtocolError("bad_prompt", str(error)) from None
        await self._set_prompt(stream, prompt)
        await self._send_json_reply("enroll", {
            "type": "enrolled", "session": stream.id, "seconds": round(len(clip) / rate, 4),
            "from_s": round(stream_s - len(clip) / rate, 4), "to_s": round(stream_s, 4),
            "understood": understood(stream.handle)})

    async def _on_flush(self, message: dict) -> None:
        self._live_stream("flush")
        await self._end_stream("flush")

    async def _on_stop(self, message: dict) -> None:
        self._stop_requested = True  # the connection closes after this reply, even if no session ran
        if self._current_stream() is not None:
            await self._end_stream("stop")
        else:
            await self._send_json_reply("stop", {"type": "end", "session": None, "reason": "stop",
                                                 "samples_in": 0, "samples_out": 0, "latency_samples": 0})

    async def _on_metrics(self, message: dict) -> None:
        stream = self._live_stream("metrics")
        await self._queue(_Reply("metrics", lambda _: self._send_json(self._metrics(stream, periodic=False))))

    def _current_stream(self) -> _Stream | None:
        """The open session; one that failed in the model (its frames got model_error) is released here."""
        if self.stream is not None and self.stream.handle.error is not None:
            self._release(self.stream, "model_error")
            self.stream = None
        return self.stream

    def _live_stream(self, request: str) -> _Stream:
        stream = self._current_stream()
        if stream is None:
            raise ProtocolError("not_started", f"no session is running: send start before {request}")
        return stream

    # ---------------------------------------------------------------- session end

    async def _end_stream(self, why: str) -> None:
        """End the session, if any: its tail and `end` are queued after every earlier reply."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        if stream.handle.error is not None:
            self._release(stream, "model_error")
            return
        if self._gone:  # no one to send the tail to: stop computing this stream now
            stream.dropped_samples += stream.handle.abort()
            self._vanished = (stream, why)  # released once the replies already queued are drained
            return
        if stream.metrics_task is not None:
            stream.metrics_task.cancel()
        work = asyncio.ensure_future(self._close_handle(stream))
        await self._queue(_Reply(why, lambda tail: self._send_tail(stream, tail, why), work))

    async def _close_handle(self, stream: _Stream) -> tuple[np.ndarray, np.ndarray]:
        try:
            return await stream.handle.close()
        except Exception as error:
            self._release(stream, "model_error")
            raise self._model_error(error) from None

    async def _send_tail(self, stream: _Stream, tail: tuple[np.ndarray, np.ndarray], why: str) -> None:
        target, residual = tail  # the last L outputs: they answer no input frame
        await self._send(encode_output(target, residual, stream.format))
        stream.samples_out += len(target)
        self._release(stream, why)
        await self._send_json({
            "type": "end", "session": stream.id, "reason": why, "samples_in": stream.samples_in,
            "samples_out": stream.samples_out, "latency_samples": stream.handle.latency_samples,
            "metrics": self._metrics(stream, periodic=False),
        })

    def _release(self, stream: _Stream, why: str) -> None:
        if stream.metrics_task is not None:
            stream.metrics_task.cancel()
        if self.server.release(stream.id):
            metrics = stream.handle.metrics
            log.info("session ended", extra={"fields": {
                "connection": self.id, "session": stream.id, "reason": why, "samples_in": stream.samples_in,
                "samples_out": stream.samples_out, "samples_dropped": stream.dropped_samples,
                "samples_fed": getattr(getattr(stream.handle, "session", None), "samples_fed", None),
                "rtf": round(metrics.rtf, 4),
                "degraded_s": {name: round(metrics.degraded_s[level], 3)
                               for level, name in ((FEWER_STEPS, "fewer_steps"), (PASS_THROUGH, "pass_through"))},
            }})

    # ---------------------------------------------------------------- metrics

    def _metrics(self, stream: _Stream, periodic: bool) -> dict:
        metrics = stream.handle.metrics
        return {
            "type": "metrics", "session": stream.id, "periodic": periodic,
            "latency_samples": stream.handle.latency_samples, "latency_ms": metrics.latency_ms,
            "rtf": metrics.rtf, "compute_s": metrics.compute_s,
            "audio_in_s": metrics.audio_in_s, "audio_out_s": metrics.audio_out_s,
            "samples_in": stream.samples_in, "samples_out": stream.samples_out,
            "queue_hops": metrics.queue_depth, "level": stream_level(stream, self.server.batcher.level),
            "pacing": stream.format.pacing,
            "degraded_s": {"fewer_steps": metrics.degraded_s[FEWER_STEPS],
                           "pass_through": metrics.degraded_s[PASS_THROUGH]},
            "sessions": len(self.server.sessions),
            "quality": metrics.quality,  # the latest live Judge score (serve --quality-interval), else null
            "voice": metrics.voice,  # the live similarity to an enrolled voice (stream/voice_meter.py), else null
        }

    async def _push_metrics(self, stream: _Stream, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._queue(_Reply("metrics", lambda _: self._send_json(self._metrics(stream, periodic=True))))

    # ---------------------------------------------------------------- sending

    async def _queue(self, reply: _Reply) -> None:
        limit = OUTBOX_AUDIO_S * (self.stream.format.sample_rate if self.stream is not None else 48000)
        while reply.samples and self._outbox_samples > 0 and self._outbox_samples + reply.samples > limit:
            self._outbox_drained.clear()  # too much audio waits to be sent: stop reading until some leaves
            await self._outbox_drained.wait()
        self._outbox_samples += reply.samples
        await self._outbox.put(reply)

    async def _send_loop(self) -> None:
        while (reply := await self._outbox.get()) is not None:
            try:
                try:
                    result = await reply.work if reply.work is not None else None
                except ProtocolError:
                    raise
                except Exception as error:  # a frame's output: the model failed on the session
                    raise self._model_error(error) from None
                await reply.deliver(result)
            except ProtocolError as error:
                if not self._gone:  # after a hang-up, the aborted session's frames fail: no one to tell
                    await self._send_error(error.code, error.message, reply.request)
            finally:
                if reply.samples:
                    self._outbox_samples -= reply.samples
                    self._outbox_drained.set()

    async def _send_json_reply(self, request: str, message: dict) -> None:
        await self._queue(_Reply(request, lambda _: self._send_json(message)))

    async def _send_error_reply(self, code: str, message: str, request: str | None) -> None:
        await self._queue(_Reply(str(request), lambda _: self._send_error(code, message, request)))

    async def _send_error(self, code: str, message: str, request: str | None) -> None:
        self.server.metrics.errors[code] += 1
        log.info("error", extra={"fields": {**self.log_fields, "code": code, "request": request, "message": message}})
        await self._send_json({"type": "error", "code": code, "message": message, "request": request})

    async def _send_json(self, message: dict) -> None:
        await self._send(json.dumps(message))

    async def _send(self, data: str | bytes) -> None:
        if self._gone:
            return
        self._sending_since = time.monotonic()  # watched by _watch_sends (no timeout task per send)
        try:
            await self.ws.send(data)
        except ConnectionClosed:
            self._gone = True  # keep draining the queue: its work finishes and is dropped
        finally:
            self._sending_since = None

    async def _watch_sends(self) -> None:
        """Cut the connection off once a send has waited send_timeout_s (the client does not read)."""
        timeout = self.server.config.send_timeout_s
        while not self._gone:
            await asyncio.sleep(timeout / 4)
            started = self._sending_since
            if started is not None and time.monotonic() - started >= timeout:
                self._cut_off()

    def _cut_off(self) -> None:
        """A slow reader: a reply could not be written for send_timeout_s because the client does not read.
        Drop the connection (its session is aborted when the receive loop sees the close)."""
        self._gone = True
        timeout = self.server.config.send_timeout_s
        self.server.metrics.errors["slow_reader"] += 1
        log.warning("slow reader", extra={"fields": {
            **self.log_fields, "code": "slow_reader",
            "message": f"a reply could not be sent for {timeout:g} s: the client does not read; dropping it"}})
        if self.stream is not None:
            self.stream.dropped_samples += self.stream.handle.abort()
        self.ws.transport.abort()


def stream_level(stream: _Stream, server_level: int) -> int:
    """A stream's degradation level now: its own (the server's, for a batcher that does not keep one per
    stream); always 0 for a stream paced as fast as possible."""
    if stream.format.pacing != "live":
        return 0
    return getattr(stream.handle, "level", server_level)


def understood(handle: StreamHandle) -> dict | None:
    """How the model took the stream's prompt (docs/protocol.md, `started`), when it says."""
    session = getattr(handle, "session", None)
    return session.understood() if session is not None and hasattr(session, "understood") else None


def describe_prompt(prompt: Prompt) -> dict:
    """A prompt for the logs (the example by its length, not its samples)."""
    return {"text": prompt.text, "spans": [list(span) for span in prompt.spans],
            "example_samples": None if prompt.example is None else len(prompt.example)}

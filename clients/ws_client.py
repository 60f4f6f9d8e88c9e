"""Python client for the samstream WebSocket protocol ("samstream.v1", docs/protocol.md).

    async with await SeparationClient.connect("ws://127.0.0.1:8765") as client:
        started = await client.start(16000, text="dog barking")          # or spans=[("+", 3.2, 4.0)]
        await client.send_audio(frame)                                     # float32 mono in [-1, 1]
        output = await client.receive_audio()                              # output.target, output.residual
        await client.set_prompt(spans=[("-", 7.0, 8.0)])
        await client.enroll(3.0)          # the last 3 s of the input: "keep this voice"
        end = await client.flush()        # then receive_audio() returns the rest, the tail last, then None

The server answers requests in order, one reply each: a binary frame of the same length (or an error)
per audio frame, one JSON message per control message. A reader task sorts the replies: audio (and
errors about audio) into an audio queue, control replies to the call waiting for them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

PROTOCOL = "samstream.v1"
DTYPES = {"pcm16": np.dtype("<i2"), "float32": np.dtype("<f4")}
SERVER_ENDS = ("shutdown", "idle_timeout", "internal")  # `end` reasons that answer no request


class ServerError(Exception):
    """An `error` from the server (or a refused handshake): `code` is one of the protocol's stable codes."""

    def __init__(self, code: str, message: str, request: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request = request


@dataclass
class Output:
    """One frame of separated audio (float32); a channel the stream did not ask for is None."""

    target: np.ndarray | None
    residual: np.ndarray | None
    received_at: float  # time.perf_counter() when it arrived

    def __len__(self) -> int:
        return len(self.target if self.target is not None else self.residual)


def encode_audio(pcm: np.ndarray, encoding: str) -> bytes:
    """float32 [-1, 1] (or int16 for pcm16) mono samples as the protocol's little-endian bytes."""
    pcm = np.asarray(pcm)
    if encoding == "pcm16" and pcm.dtype != np.int16:
        pcm = np.clip(np.round(pcm * 32768.0), -32768, 32767)
    return pcm.astype(DTYPES[encoding]).tobytes()


def prompt_message(text: str | None = None, spans: Sequence[Sequence] = (), example: np.ndarray | None = None,
                   encoding: str = "pcm16") -> dict:
    """The JSON prompt: spans as [sign, start_s, end_s], the example as base64 PCM at the stream's rate."""
    prompt: dict[str, Any] = {}
    if text is not None:
        prompt["text"] = text
    if spans:
        prompt["spans"] = [[sign, float(start), float(end)] for sign, start, end in spans]
    if example is not None:
        prompt["example"] = base64.b64encode(encode_audio(example, encoding)).decode("ascii")
    return prompt


class SeparationClient:
    def __init__(self, websocket: ClientConnection) -> None:
        self.ws = websocket
        self.started: dict | None = None  # the server's `started` message
        self.last_metrics: dict | None = None  # the latest periodic metrics push
        self.end: dict | None = None  # the latest `end`
        self.in_flight = 0  # audio frames sent and not yet answered
        self._audio: asyncio.Queue[Output | ServerError | None] = asyncio.Queue()
        self._control: deque[asyncio.Future] = deque()  # callers waiting for control replies, in order
        self._closed: str | None = None  # the close code and reason, once closed
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, url: str = "ws://127.0.0.1:8765", *, token: str | None = None,
                      origin: str | None = None, open_timeout: float = 10.0) -> SeparationClient:
        """Connect; a refused handshake raises ServerError with the server's code (unauthorized, ...)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else None
        try:
            websocket = await connect(url, additional_headers=headers, origin=origin, open_timeout=open_timeout,
                                      max_size=None)
        except InvalidStatus as refused:
            raise refusal_error(refused) from None
        return cls(websocket)

    async def __aenter__(self) -> SeparationClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # ---------------------------------------------------------------- requests

    async def start(self, sample_rate: int, text: str | None = None, spans: Sequence[Sequence] = (),
                    example: np.ndarray | None = None, *, format: str = "pcm16", outputs: str = "both",
                    metrics_interval_s: float | None = None, pacing: str = "live") -> dict:
        """Open a session; returns `started` (latency_samples, session, ...). `pacing`: "live" (a source with a
        clock: the server may degrade the stream to keep up) or "as_fast_as_possible" (a file: never degraded,
        the server slows the sender down instead)."""
        message = {"type": "start", "protocol": PROTOCOL, "format": format, "sample_rate": sample_rate,
                   "outputs": outputs, "pacing": pacing, "prompt": prompt_message(text, spans, example, format)}
        if metrics_interval_s is not None:
            message["metrics_interval_s"] = metrics_interval_s
        self.started = await self.request(message)
        self.end = None
        return self.started

    async def send_audio(self, pcm: np.ndarray | bytes) -> None:
        """Send one frame (its reply is one `receive_audio()` item, of the same length); bytes go as they are."""
        self._check_open()
        encoding = self.started["format"] if self.started else "pcm16"
        self.in_flight += 1
        await self.ws.send(pcm if isinstance(pcm, bytes) else encode_audio(pcm, encoding))

    async def receive_audio(self) -> Output | None:
        """The next output frame, in send order (after a flush the tail comes last, then None).
        Raises ServerError when the server refused the matching frame (bad_frame, frame_too_large, ...)."""
        if self._closed is not None and self._audio.empty():
            return None
        item = await self._audio.get()
        if isinstance(item, ServerError):
            raise item
        return item

    async def set_prompt(self, text: str | None = None, spans: Sequence[Sequence] = (),
                         example: np.ndarray | None = None) -> None:
        encoding = self.started["format"] if self.started else "pcm16"
        await self.request({"type": "prompt", "prompt": prompt_message(text, spans, example, encoding)})

    async def enroll(self, seconds: float = 3.0, text: str | None = None) -> dict:
        """The last `seconds` (0.5-10) of this stream's input become the prompt: "keep this voice" (with `text`, e.g.
        "woman speaking", when given). Returns `enrolled` (seconds, from_s, to_s on the input's clock, understood);
        raises ServerError `not_enough_audio` before enough sounding input, `bad_message` for bad seconds."""
        message = {"type": "enroll", "seconds": seconds}
        if text is not None:
            message["text"] = text
        return await self.request(message)

    async def metrics(self) -> dict:
        return await self.request({"type": "metrics"})

    async def flush(self) -> dict:
        """End the session: returns `end` once the tail (latency_samples samples) is queued for receive_audio."""
        self.end = await self.request({"type": "flush"})
        return self.end

    async def stop(self) -> dict:
        """End the session and let the server close the connection."""
        self.end = await self.request({"type": "stop"})
        return self.end

    async def request(self, message: dict | str) -> dict:
        """Send a control message (a dict, or text sent as is); returns its reply, or raises ServerError."""
        self._check_open()
        future = asyncio.get_running_loop().create_future()
        self._control.append(future)
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))
        return await future

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ConnectionError(f"the connection is closed ({self._closed})")

    # ---------------------------------------------------------------- replies

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self._on_audio(message, time.perf_counter())
                else:
                    self._on_json(json.loads(message))
        except ConnectionClosed:
            pass
        finally:
            self._closed = f"{self.ws.close_code} {self.ws.close_reason or ''}".strip()
            error = ServerError("closed", f"the connection closed ({self._closed})")
            while self._control:
                future = self._control.popleft()
                if not future.done():
                    future.set_exception(error)
            self._audio.put_nowait(None)

    def _on_audio(self, data: bytes, now: float) -> None:
        started = self.started or {}
        samples = np.frombuffer(data, dtype=DTYPES[started.get("format", "pcm16")]).astype(np.float32)
        if started.get("format", "pcm16") == "pcm16":
            samples /= 32768.0
        outputs = started.get("outputs", "both")
        if outputs == "both":
            frames = samples.reshape(-1, 2)
            output = Output(frames[:, 0].copy(), frames[:, 1].copy(), now)
        elif outputs == "target":
            output = Output(samples, None, now)
        else:
            output = Output(None, samples, now)
        if self.in_flight:  # else it is the tail of a flush
            self.in_flight -= 1
        self._audio.put_nowait(output)

    def _on_json(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "metrics" and message.get("periodic"):
            self.last_metrics = message
        elif kind == "error" and message.get("request") == "audio":
            self.in_flight -= 1
            self._audio.put_nowait(ServerError(message["code"], message["message"], "audio"))
        elif kind == "error" and message.get("request") is None:  # about the connection: it closes next
            error = ServerError(message["code"], message["message"])
            self._audio.put_nowait(error)
            while self._control:
                self._control.popleft().set_exception(error)
        elif kind == "end" and message.get("reason") in SERVER_ENDS:  # not a reply: the server ended the session
            self.end = message
            self._audio.put_nowait(None)
        elif self._control:
            if kind == "end":
                self._audio.put_nowait(None)
            future = self._control.popleft()
            if kind == "error":
                future.set_exception(ServerError(message["code"], message["message"], message.get("request")))
            else:
                future.set_result(message)
        # Anything else is a message of an extension this client does not speak (e.g. WebRTC signalling).


def refusal_error(refused: InvalidStatus) -> ServerError:
    """The server's JSON refusal of a handshake (401 unauthorized, 403 origin_forbidden, ...)."""
    try:
        body = json.loads(refused.response.body)
        return ServerError(body["code"], body["message"], "handshake")
    except (ValueError, KeyError, TypeError):
        return ServerError("http_error", f"HTTP {refused.response.status_code}", "handshake")

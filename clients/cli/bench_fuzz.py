"""`samstream bench fuzz [--messages N] [--workers W] [--seed S] --json`: malformed input of every kind against
a real `samstream serve`, and proof that it harmed nothing.

It starts the server as its own process (a crash must be seen as one) and runs, in this order:
1. a reference client: a fixed signal streamed as fast as possible (never degraded), its output kept;
2. W fuzzing connections at once, each running scenarios of one kind after another until N messages were sent,
   while the reference client streams again beside them (its output must equal the first run up to float
   rounding: a batched step sums in another order);
3. the reference client once more, alone: its output must equal the first run bit for bit.

Kinds (`KINDS`): random bytes and JSON-less text, unreadable/non-object/nested-too-deep JSON, unknown and huge
message types, broken `start` messages (every field missing or wrong, wrong rates, bad prompts), truncated and
NaN/Inf and oversized audio frames inside a session, control messages without a session, prompt floods
(valid and broken prompt changes between audio frames), JSON near and beyond the message size limit, WebRTC
signalling junk, abrupt closes (a TCP reset in the middle of a frame), slow readers (audio sent, replies never
read: the server must cut them off) and bytes on the port that are not HTTP (the server must close the connection,
without a reply or with an HTTP 4xx).

Checked: 0 crashes (the server process lives, /health answers, no `internal` error), 0 hangs (every request
is answered in order within `--reply-timeout`, /health within 2 s throughout), every error code one of the
protocol's documented codes, 0 cross-session effects (the reference runs above). The process exits with
status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

KINDS = ("bytes_without_session", "not_json", "nested_json", "unknown_type", "bad_start", "wrong_rate",
         "bad_frames", "control_without_session", "prompt_flood", "huge_json", "oversized", "webrtc_junk",
         "abrupt_close", "slow_reader", "not_http")
REFERENCE_RATE = 16000
SPANS = [["+", 0.2, 0.6]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="random",
                        help="the server's model (default 'random': the tiny architecture untrained; fuzzing is "
                             "about the protocol, not the separation)")
    parser.add_argument("--messages", type=int, default=10000, help="malformed messages to send in all")
    parser.add_argument("--workers", type=int, default=6, help="fuzzing connections at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reply-timeout", type=float, default=20.0,
                        help="seconds a request may wait for its reply before it counts as a hang")
    parser.add_argument("--send-timeout", type=float, default=2.0,
                        help="the server's --send-timeout (how soon it cuts off a slow reader)")


# ------------------------------------------------------------------------------------------- raw client


class Closed(Exception):
    """The server closed the connection (code and reason in the message)."""


class RawClient:
    """A WebSocket client at the byte level (websockets' sans-I/O protocol over a bare TCP stream): it sends
    whatever it is given, reads replies only when asked (or never: a slow reader), and can vanish mid-frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.close_code: int | None = None

    @classmethod
    async def open(cls, port: int, timeout: float = 10.0, receive_buffer: int | None = None) -> RawClient:
        import socket

        from websockets.client import ClientProtocol
        from websockets.protocol import OPEN
        from websockets.uri import parse_uri

        sock = socket.socket()
        if receive_buffer is not None:  # before connecting: it sets the TCP window the server sees
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"), max_size=None)
        protocol.send_request(protocol.connect())
        client = cls(reader, writer, protocol)
        await client._flush()
        async with asyncio.timeout(timeout):
            while protocol.state != OPEN:
                data = await reader.read(65536)
                if not data:
                    raise Closed("the server closed the connection during the handshake")
                protocol.receive_data(data)
                if protocol.handshake_exc is not None:
                    raise Closed(f"handshake refused: {protocol.handshake_exc}")
        protocol.events_received()  # the handshake's response: replies come after it
        return client

    async def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.writer.write(chunk)
        await self.writer.drain()

    async def send(self, message: str | bytes | dict) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        await self._flush()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def replies(self, count: int, timeout: float) -> list:
        """The next `count` messages: dicts (JSON text) and bytes (audio). Raises Closed, TimeoutError."""
        from websockets.frames import Opcode

        out: list = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                for frame in self.protocol.events_received():
                    if frame.opcode == Opcode.TEXT:
                        out.append(json.loads(frame.data))
                    elif frame.opcode == Opcode.BINARY:
                        out.append(bytes(frame.data))
                    elif frame.opcode == Opcode.CLOSE:
                        self.close_code = self.protocol.close_rcvd.code if self.protocol.close_rcvd else None
                if len(out) >= count:
                    break
                if self.close_code is not None:
                    raise Closed(f"closed by the server ({self.close_code}) after {len(out)} of {count} replies")
                data = await self.reader.read(65536)
                if not data:
                    raise Closed(f"connection lost after {len(out)} of {count} replies")
                self.protocol.receive_data(data)
                await self._flush()  # pongs, close acknowledgements
        return out

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        try:
            self.protocol.send_close(1000)
            await self._flush()
        except Exception:
            pass
        self.writer.close()


# ------------------------------------------------------------------------------------------- scenarios


@dataclass
class Tally:
    messages: int = 0
    by_kind: Counter = field(default_factory=Counter)
    codes: Counter = field(default_factory=Counter)
    undocumented: Counter = field(default_factory=Counter)
    hangs: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    closes: Counter = field(default_factory=Counter)  # how the server ended connections it had to end


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("{}[]\":,0123456789abcdefxyz \\\n\t\u00e9\u2603") for _ in range(n))


def good_start(rate: int = REFERENCE_RATE, encoding: str = "float32", pacing: str = "live") -> dict:
    return {"type": "start", "protocol": "samstream.v1", "format": encoding, "sample_rate": rate,
            "outputs": "both", "pacing": pacing, "prompt": {"spans": SPANS}}


def broken_starts(rng: random.Random) -> list[dict]:
    """`start` messages that must be refused, one field broken at a time (or several)."""
    start = good_start()
    huge = "z" * rng.choice([100, 10_000, 500_000])
    junk = [None, True, -1, 1.5, "", huge, [], {}, [1, 2], {"a": 1}, "16000", 1e300, -0.0]
    out = []
    for key in ("protocol", "format", "outputs", "sample_rate", "pacing", "metrics_interval_s", "prompt"):
        broken = dict(start)
        valid = (None, 1.5) if key == "metrics_interval_s" else ()  # an interval of 1.5 s is fine, None is "none"
        broken[key] = rng.choice([value for value in junk if not any(value is v or value == v for v in valid)])
        out.append(broken)
        missing = {k: v for k, v in start.items() if k != key}
        if key in ("format", "sample_rate", "prompt"):
            out.append(missing)
    prompts = [{}, {"text": ""}, {"text": "   "}, {"text": 5}, {"spans": "x"}, {"spans": [["*", 1, 2]]},
               {"spans": [["+", 2, 1]]}, {"spans": [["+", "a", 2]]}, {"spans": [["+", float("nan"), 1]]},
               {"example": "%%%"}, {"example": base64.b64encode(b"abc").decode()}, {"colour": "red"},
               {"spans": [["+", 0, 1]] * 3, "junk": huge}]
    for prompt in prompts:
        out.append({**start, "prompt": prompt})
    return out


async def expect(client: RawClient, tally: Tally, sent: list[tuple[str, object]], timeout: float) -> list:
    """Read one reply per sent message and check it: `sent` holds (expected, message) with expected one of
    "error" (an error with a documented code), "audio:N" (N samples), "started", "json" (any JSON reply)."""
    from samstream.stream.server.ws import ERROR_CODES

    replies = await client.replies(len(sent), timeout)
    for (expected, _), reply in zip(sent, replies):
        if isinstance(reply, dict) and reply.get("type") == "error":
            tally.codes[reply["code"]] += 1
            if reply["code"] not in ERROR_CODES:
                tally.undocumented[reply["code"]] += 1
            if expected != "error" and expected != "json":
                tally.problems.append(f"expected {expected}, got error {reply['code']}: {reply['message'][:120]}")
        elif expected == "error":
            tally.problems.append(f"expected an error, got {str(reply)[:120]}")
        elif expected.startswith("audio:"):
            samples = int(expected.split(":")[1])
            if not isinstance(reply, bytes) or len(reply) != samples * 8:  # float32, target + residual
                tally.problems.append(f"expected {samples} samples of audio, got {str(reply)[:80]}")
    return replies


class Fuzzer:
    def __init__(self, port: int, rng: random.Random, tally: Tally, budget: int, args: argparse.Namespace) -> None:
        self.port, self.rng, self.tally, self.budget, self.args = port, rng, tally, budget, args

    def count(self, kind: str, messages: int) -> None:
        self.tally.messages += messages
        self.tally.by_kind[kind] += messages

    async def run(self, first: int = 0) -> None:
        """Kinds in shuffled rounds (worker i starts its first round at kind i), until the budget is spent: every
        kind runs at least once however small the budget."""
        order = list(KINDS[first:] + KINDS[:first])
        while self.tally.messages < self.budget or self.tally.by_kind.keys() < set(KINDS):
            if not order:
                order = list(KINDS)
                self.rng.shuffle(order)
            kind = order.pop(0)
            if self.tally.messages >= self.budget and self.tally.by_kind[kind]:
                continue  # over budget: only the kinds not run yet
            try:
                await getattr(self, kind)()
            except TimeoutError:
                self.tally.hangs.append(kind)
            except Closed as closed:
                if kind not in ("oversized", "abrupt_close", "slow_reader"):
                    self.tally.problems.append(f"{kind}: {closed}")
            except (ConnectionError, OSError) as error:
                if kind not in ("oversized", "abrupt_close", "slow_reader"):
                    self.tally.problems.append(f"{kind}: {type(error).__name__}: {error}")

    async def session_client(self, start: dict | None = None) -> RawClient:
        client = await RawClient.open(self.port)
        await client.send(start or good_start())
        (started,) = await client.replies(1, self.args.reply_timeout)
        if started.get("type") != "started":
            raise Closed(f"a good start was refused: {started}")
        return client

    async def batch(self, kind: str, messages: list[tuple[str, object]], client: RawClient | None = None) -> None:
        own = client is None
        client = client or await RawClient.open(self.port)
        try:
            for _, message in messages:
                await client.send(message)
            self.count(kind, len(messages))
            await expect(client, self.tally, messages, self.args.reply_timeout)
        finally:
            if own:
                await client.close()

    # -- the kinds ----------------------------------------------------------------------------------------

    async def bytes_without_session(self) -> None:
        rng = self.rng
        await self.batch("bytes_without_session",
                         [("error", rng.randbytes(rng.randint(0, 3000))) for _ in range(rng.randint(5, 40))])

    async def not_json(self) -> None:
        rng = self.rng
        texts = [random_text(rng, rng.randint(0, 200)), "[1,2,3]", '"start"', "null", "{}", '{"kind":"start"}',
                 '{"type": 7}', '{"type": null}', "{" * rng.randint(1, 50), '{"type": "start"', "\x00\x01"]
        await self.batch("not_json", [("error", rng.choice(texts)) for _ in range(rng.randint(5, 40))])

    async def nested_json(self) -> None:
        depth = self.rng.choice([900, 5000, 100_000])
        nests = ["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth,
                 json.dumps({"type": "start", "prompt": {"text": "x"}})[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"]
        await self.batch("nested_json", [("error", nest) for nest in nests])

    async def unknown_type(self) -> None:
        rng = self.rng
        types = ["teleport", "", " start", "START", "webrtc", random_text(rng, 30), "t" * rng.choice([100, 2**20])]
        await self.batch("unknown_type", [("error", {"type": rng.choice(types)}) for _ in range(rng.randint(3, 20))])

    async def bad_start(self) -> None:
        starts = broken_starts(self.rng)
        self.rng.shuffle(starts)
        await self.batch("bad_start", [("error", start) for start in starts])

    async def wrong_rate(self) -> None:
        rates = [0, -16000, 7999, 48001, 96000, 10**12, 16000.5, "16000", True, None, float("inf")]
        messages = []
        for rate in rates:
            start = good_start()
            start["sample_rate"] = rate
            messages.append(("error", json.dumps(start, allow_nan=True)))
        await self.batch("wrong_rate", messages)

    async def bad_frames(self) -> None:
        rng = self.rng
        client = await self.session_client()
        try:
            messages = []
            for _ in range(rng.randint(10, 60)):
                choice = rng.random()
                if choice < 0.4:
                    n = rng.randint(1, 800)
                    messages.append((f"audio:{n}", (0.1 * np.sin(np.arange(n))).astype("<f4").tobytes()))
                elif choice < 0.55:
                    messages.append(("error", rng.randbytes(rng.choice([1, 2, 3, 5, 7, 4001]))))  # not whole samples
                elif choice < 0.65:
                    messages.append(("error", b""))
                elif choice < 0.85:
                    bad = np.zeros(rng.randint(1, 500), "<f4")
                    bad[rng.randrange(len(bad))] = rng.choice([np.nan, np.inf, -np.inf])
                    messages.append(("error", bad.tobytes()))
                else:
                    messages.append(("error", np.zeros(REFERENCE_RATE + rng.randint(1, 1000), "<f4").tobytes()))
            messages.append(("error", good_start()))  # already_started
            await self.batch("bad_frames", messages, client)
            await client.send({"type": "flush"})
            self.count("bad_frames", 1)
            await client.replies(2, self.args.reply_timeout)  # the tail, then `end`
        finally:
            await client.close()

    async def control_without_session(self) -> None:
        rng = self.rng
        kinds = [("error", {"type": "prompt", "prompt": {"text": "x"}}), ("error", {"type": "flush"}),
                 ("error", {"type": "metrics"}), ("error", {"type": "webrtc_candidate", "candidate": None})]
        messages = [rng.choice(kinds) for _ in range(rng.randint(5, 30))]
        messages.append(("json", {"type": "stop"}))  # `end` with no session, then the close
        await self.batch("control_without_session", messages)

    async def prompt_flood(self) -> None:
        rng = self.rng
        client = await self.session_client()
        try:
            messages = []
            for index in range(rng.randint(20, 120)):
                if index % 5 == 0:
                    messages.append(("audio:320", np.zeros(320, "<f4").tobytes()))
                elif rng.random() < 0.6:
                    spans = [["+", round(rng.uniform(0, 5), 2), round(rng.uniform(5.1, 9), 2)]]
                    messages.append(("json", {"type": "prompt", "prompt": rng.choice(
                        [{"spans": spans}, {"text": "dog barking"}, {"spans": spans, "text": "speech"}])}))
                else:
                    messages.append(("error", {"type": "prompt", "prompt": rng.choice(
                        [None, {}, {"spans": [["?", 1, 2]]}, {"text": ""}, "text", {"example": "??"}])}))
            await self.batch("prompt_flood", messages, client)
        finally:
            client.abort()  # and vanish without a flush

    async def huge_json(self) -> None:
        size = self.rng.choice([2**20, 2**21 - 4096])
        filler = "y" * size
        messages = [("error", {"type": "start", "format": "float32", "sample_rate": 16000, "prompt": {"text": filler}}),
                    ("error", {"type": "unknown" + filler[:1000], "data": filler})]
        await self.batch("huge_json", messages[:1] if size > 2**20 else messages)

    async def oversized(self) -> None:
        client = await RawClient.open(self.port)
        try:
            await client.send(b"\x00" * (2**21 + self.rng.randint(1, 4096)))  # beyond --max-message-bytes
            self.count("oversized", 1)
            try:
                await client.replies(1, self.args.reply_timeout)
            except Closed:
                self.tally.closes[f"oversized:{client.close_code}"] += 1
        finally:
            client.abort()

    async def webrtc_junk(self) -> None:
        rng = self.rng
        offers = [{"type": "webrtc_offer"}, {"type": "webrtc_offer", "offer": "sdp"},
                  {"type": "webrtc_offer", "offer": {"type": "offer", "sdp": random_text(rng, 300)}, "prompt": {"text": "x"}},
                  {"type": "webrtc_offer", "offer": {"type": "offer", "sdp": "v=0\r\n"}, "prompt": 5},
                  {"type": "webrtc_offer", "offer": {"type": "offer", "sdp": "v=0\r\n"}, "prompt": {"spans": [["+", 1, 2]]},
                   "output": "loud"},
                  {"type": "webrtc_candidate", "candidate": {"candidate": "candidate:garbage"}}]
        await self.batch("webrtc_junk", [("error", rng.choice(offers)) for _ in range(rng.randint(2, 8))])

    async def abrupt_close(self) -> None:
        rng = self.rng
        client = await self.session_client(good_start(pacing=rng.choice(["live", "as_fast_as_possible"])))
        for _ in range(rng.randint(1, 20)):
            await client.send(np.zeros(rng.randint(1, 1600), "<f4").tobytes())
        self.count("abrupt_close", 1)
        client.protocol.send_binary(np.zeros(8000, "<f4").tobytes())
        data = b"".join(client.protocol.data_to_send())
        client.writer.write(data[: len(data) // 2])  # half a frame, then a TCP reset
        client.abort()

    async def slow_reader(self) -> None:
        client = await RawClient.open(self.port, receive_buffer=4096)
        await client.send(good_start(48000, pacing="as_fast_as_possible"))
        frame = np.zeros(48000, "<f4").tobytes()  # 1 s frames: large replies fill the socket buffers quickly
        deadline = time.monotonic() + 4 * self.args.send_timeout + 30
        try:
            while time.monotonic() < deadline:
                async with asyncio.timeout(2 * self.args.send_timeout + 5):  # the server stops reading: we wait
                    await client.send(frame)
                self.count("slow_reader", 1)
            self.tally.problems.append("slow_reader: never cut off")
        except (TimeoutError, ConnectionError, OSError):
            # Either the server stopped reading (flow control: our send waits) or it cut us off; wait for the cut.
            try:
                async with asyncio.timeout(2 * self.args.send_timeout + 10):
                    while await client.reader.read(2**16):
                        pass
                self.tally.closes["slow_reader_cut"] += 1
            except (ConnectionError, OSError):
                self.tally.closes["slow_reader_cut"] += 1
            except TimeoutError:
                self.tally.problems.append("slow_reader: the server neither read nor cut the connection")
        finally:
            client.abort()

    async def not_http(self) -> None:
        rng = self.rng
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            junk = rng.choice([b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(40) + b"\r\n\r\n",
                               rng.randbytes(200).replace(b"\n", b"") + b"\r\n\r\n", b"HELLO\r\n\r\n",
                               b"GET / HTTP/9.9\r\n\r\n", b"GET /\r\n\r\n"])
            writer.write(junk)
            await writer.drain()
            self.count("not_http", 1)
            try:
                async with asyncio.timeout(self.args.reply_timeout):  # the connection must close: no hang
                    answer = await reader.read()
            except ConnectionResetError:
                answer = b""
            if not answer:  # websockets closes a connection whose bytes are not HTTP without a reply
                self.tally.closes["not_http:closed"] += 1
            elif answer.startswith(b"HTTP/1.1 4"):  # a line too long: 414, headers too large: 431
                self.tally.closes[f"not_http:{answer.split(b' ', 2)[1].decode()}"] += 1
            else:
                self.tally.problems.append(f"not_http: answered {answer[:60]!r}")
        finally:
            writer.close()


# ------------------------------------------------------------------------------------------- reference


def reference_signal(seconds: float = 3.0, seed: int = 11) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * REFERENCE_RATE)) / REFERENCE_RATE
    x = (0.3 * np.sin(2 * np.pi * 330 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0) + 0.05 * rng.standard_normal(t.size))
    sizes, start = [], 0
    while start < t.size:
        sizes.append(int(rng.integers(1, 2400)))
        start += sizes[-1]
    return x.astype(np.float32), sizes


async def reference_run(url: str) -> np.ndarray:
    """The reference client: the fixed signal in jittery frames, paced as fast as possible: [2, n + L]."""
    from samstream.clients.ws_client import SeparationClient

    x, sizes = reference_signal()
    outputs = []
    async with await SeparationClient.connect(url) as client:
        await client.start(REFERENCE_RATE, spans=SPANS, format="float32", pacing="as_fast_as_possible")

        async def receive() -> None:
            while (output := await client.receive_audio()) is not None:
                outputs.append(output)

        receiver = asyncio.create_task(receive())
        start = 0
        for size in sizes:
            while client.in_flight >= 16:
                await asyncio.sleep(0.002)
            await client.send_audio(x[start : start + size])
            start += size
        await client.flush()
        await receiver
    return np.stack([np.concatenate([o.target for o in outputs]), np.concatenate([o.residual for o in outputs])])


async def health_watch(port: int, stop: asyncio.Event, tally: Tally) -> int:
    """GET /health every 0.5 s; each must answer within 2 s. Returns how many answered."""
    answered = 0
    while not stop.is_set():
        try:
            async with asyncio.timeout(2.0):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                answer = await reader.read()
                writer.close()
            if b" 200 " not in answer.split(b"\r\n", 1)[0]:
                tally.problems.append(f"/health answered {answer[:60]!r}")
            answered += 1
        except (TimeoutError, OSError) as error:
            tally.hangs.append(f"/health: {type(error).__name__}")
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    return answered


async def until_idle(port: int, timeout: float) -> None:
    """Until the server's /health reports no session (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = await reader.read()
        writer.close()
        if json.loads(answer.partition(b"\r\n\r\n")[2]).get("sessions") == 0:
            return
        await asyncio.sleep(0.2)


async def fuzz(port: int, args: argparse.Namespace) -> dict:
    url = f"ws://127.0.0.1:{port}"
    tally = Tally()
    before = await reference_run(url)
    stop = asyncio.Event()
    watcher = asyncio.create_task(health_watch(port, stop, tally))
    during: list[np.ndarray] = []

    async def reference_beside() -> None:
        while not stop.is_set():
            during.append(await reference_run(url))

    beside = asyncio.create_task(reference_beside())
    fuzzers = [Fuzzer(port, random.Random(args.seed * 1000 + i), tally, args.messages, args) for i in range(args.workers)]
    await asyncio.gather(*(f.run(i * len(KINDS) // len(fuzzers)) for i, f in enumerate(fuzzers)))
    stop.set()
    await beside
    health_checks = await watcher
    await until_idle(port, timeout=60.0)  # sessions of vanished fuzzers end; then the reference runs alone
    after = await reference_run(url)
    diffs = [float(np.abs(run - before).max()) if run.shape == before.shape else math.inf for run in during]
    return {"tally": tally, "before": before, "after": after, "during_max_abs_diff": max(diffs, default=0.0),
            "during_runs": len(during), "health_checks": health_checks}


def run(args: argparse.Namespace) -> int:
    import os
    import urllib.request

    from samstream.clients.cli.bench_e2e import start_server, stop_server
    from samstream.stream.server.ws import ERROR_CODES

    began = time.perf_counter()
    process, url, log_path = start_server(args.model, 1, 16, extra=("--send-timeout", str(args.send_timeout)))
    port = int(url.rsplit(":", 1)[1])
    try:
        outcome = asyncio.run(fuzz(port, args))
        alive = process.poll() is None
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode() if alive else ""
    finally:
        stop_server(process)
    tally: Tally = outcome["tally"]
    internal = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith('samstream_errors_total{code="internal"}'))
    with open(log_path) as log:
        tracebacks = sum(1 for line in log if '"exception"' in line)
    identical = bool(np.array_equal(outcome["before"], outcome["after"]))
    result = {
        "model": args.model, "messages": tally.messages, "workers": args.workers, "seed": args.seed,
        "by_kind": dict(sorted(tally.by_kind.items())), "error_codes": dict(sorted(tally.codes.items())),
        "undocumented_codes": dict(tally.undocumented), "server_closes": dict(sorted(tally.closes.items())),
        "crashes": 0 if alive and not internal else 1, "internal_errors": int(internal),
        "server_tracebacks": tracebacks, "hangs": len(tally.hangs), "hang_kinds": sorted(set(tally.hangs)),
        "problems": tally.problems[:20], "problem_count": len(tally.problems),
        "health_checks": outcome["health_checks"],
        "reference_bit_identical_after": identical, "reference_runs_during": outcome["during_runs"],
        "reference_max_abs_diff_during": outcome["during_max_abs_diff"],
        "seconds": round(time.perf_counter() - began, 1), "server_log": log_path,
    }
    missing_kinds = [kind for kind in KINDS if not tally.by_kind[kind]]
    ok = (alive and not internal and not tally.hangs and not tally.undocumented and not tally.problems
          and identical and outcome["during_max_abs_diff"] <= 1e-4 and not missing_kinds)
    result["missing_kinds"] = missing_kinds
    result["ok"] = bool(ok)
    print(f"fuzz: {tally.messages} malformed messages over {len(tally.by_kind)} kinds, {args.workers} connections, "
          f"{result['seconds']} s; crashes {result['crashes']}, hangs {result['hangs']}, problems "
          f"{len(tally.problems)}, undocumented codes {sum(tally.undocumented.values())}; reference client "
          f"{'bit-identical' if identical else 'DIFFERENT'} after, max |diff| "
          f"{outcome['during_max_abs_diff']:.2e} during ({outcome['during_runs']} runs)")
    for problem in tally.problems[:10]:
        print(f"  problem: {problem}")
    assert set(result["error_codes"]) <= ERROR_CODES | set(tally.undocumented)
    if args.json:
        print(json.dumps(result))
    if not ok:
        print(f"fuzz: FAILED (server log: {log_path})")
    os.environ.get("SAMSTREAM_KEEP_LOG") or (ok and os.unlink(log_path))
    return 0 if ok else 1

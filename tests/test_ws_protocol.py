"""WebSocket protocol samstream.v1: a real server on an ephemeral loopback port, driven by real clients, in
front of a random-weight embedded model. Exact sample accounting, output equal to the in-process session,
every error code, isolation of a misbehaving or vanished client, prompt changes, graceful shutdown.

Helpers here are reused by test_server_ops.py and test_ws_client.py."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect

from samstream.clients.ws_client import SeparationClient, ServerError
from samstream.stream.processor import Prompt
from samstream.stream.server.app import SeparationServer
from samstream.stream.server.ops import ServerConfig
from samstream.stream.server.ws import Connection, ProtocolError
from samstream.stream.session import StreamSession

SPANS = (("+", 0.1, 0.4),)
EXPLODE = ("+", 999.0, 999.5)  # a span that makes FlakyProcessor fail


@asynccontextmanager
async def running_server(processor, model_name: str = "random", **config):
    """A server on a free loopback port. It never degrades (exactness tests must not depend on machine load)."""
    server = SeparationServer(processor, ServerConfig(port=0, **config), model_name=model_name,
                              realtime_budget_s=math.inf)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def url(server: SeparationServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


def mixture(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    return (tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def split(x: np.ndarray, seed: int = 0, largest: int = 1500) -> list[np.ndarray]:
    """Frames of jittery sizes, as a network delivers them."""
    rng = np.random.default_rng(seed)
    frames, start = [], 0
    while start < len(x):
        size = int(rng.integers(1, largest))
        frames.append(x[start : start + size])
        start += size
    return frames


def in_process(processor, rate: int, prompt: Prompt, frames: list[np.ndarray]) -> np.ndarray:
    """The same stream through an in-process StreamSession: [2, samples + L]."""
    session = StreamSession(processor, rate, prompt)
    parts = [np.stack(session.push(frame)) for frame in frames] + [np.stack(session.flush())]
    return np.concatenate(parts, axis=1)


async def stream_frames(client: SeparationClient, frames: list[np.ndarray],
                        window: int = 16) -> tuple[np.ndarray, dict]:
    """Send frames (at most `window` unanswered), flush; returns the outputs [2, n] (tail included) and `end`."""
    outputs = []

    async def receive() -> None:
        while (output := await client.receive_audio()) is not None:
            outputs.append(output)

    receiver = asyncio.create_task(receive())
    for frame in frames:
        while client.in_flight >= window:
            await asyncio.sleep(0.001)
        await client.send_audio(frame)
    end = await client.flush()
    await receiver
    return stack(outputs), end


def stack(outputs) -> np.ndarray:
    return np.stack([np.concatenate([o.target for o in outputs]), np.concatenate([o.residual for o in outputs])])


def assert_batched_equal(out: np.ndarray, expected: np.ndarray) -> None:
    """Equal to the in-process run up to float rounding: batched with other sessions, the model's matrix
    products sum in another order (a single session is bit-exact, see the first test)."""
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


async def error_of(awaitable) -> str:
    with pytest.raises(ServerError) as raised:
        await awaitable
    return raised.value.code


# ---------------------------------------------------------------------------------------------- happy path


async def test_stream_equals_in_process_session_with_exact_accounting(processor):
    rate = 16000
    x = mixture(1.2, rate)
    frames = split(x)
    expected = in_process(processor, rate, Prompt(spans=SPANS), frames)
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            started = await client.start(rate, spans=SPANS, format="float32")
            out, end = await stream_frames(client, frames)
    latency = started["latency_samples"]
    assert started["protocol"] == "samstream.v1" and started["model"] == "random"
    assert started["latency_ms"] == pytest.approx(1000 * latency / rate)
    assert started["hop"] == processor.hop_samples and started["channels"] == 2
    assert end == {**end, "reason": "flush", "samples_in": len(x), "samples_out": len(x) + latency,
                   "latency_samples": latency}
    assert out.shape == expected.shape == (2, len(x) + latency)
    np.testing.assert_array_equal(out, expected)  # float32 on the wire: bit for bit
    assert not out[:, :latency].any()  # the pre-roll


async def test_pcm16_one_output_other_rate_and_example_prompt(processor):
    rate = 48000
    x = mixture(0.8, rate, seed=1)
    frames = [x[i : i + 960] for i in range(0, len(x), 960)]
    example = mixture(0.5, rate, seed=2)
    wire = [np.round(f * 32768).clip(-32768, 32767) / 32768 for f in frames]  # what pcm16 carries
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            started = await client.start(rate, spans=SPANS, example=example, format="pcm16", outputs="residual")
            outputs = []
            for frame in frames:
                await client.send_audio(frame)
                output = await client.receive_audio()
                assert output.target is None and len(output.residual) == len(frame)
                outputs.append(output.residual)
            end = await client.flush()
            tail = await client.receive_audio()
            assert await client.receive_audio() is None
    latency = started["latency_samples"]
    assert started["channels"] == 1 and len(tail.residual) == latency
    assert end["samples_in"] == len(x) and end["samples_out"] == len(x) + latency
    # The server resampled the example (base64 pcm16 at 48 kHz) to the model rate, as parse_prompt does.
    import soxr

    example16 = np.round(example * 32768).clip(-32768, 32767).astype(np.float32) / 32768
    prompt = Prompt(spans=SPANS, example=soxr.resample(example16, rate, 16000).astype(np.float32))
    expected = in_process(processor, rate, prompt, [f.astype(np.float32) for f in wire])[1]
    np.testing.assert_allclose(np.concatenate(outputs + [tail.residual]), expected, atol=1.5 / 32768)


async def test_sixteen_concurrent_clients_exact_accounting(processor):
    rates = [8000, 16000, 22050, 44100, 48000, 16000, 32000, 11025] * 2
    signals = [mixture(0.6, rate, seed=i) for i, rate in enumerate(rates)]
    frames = [split(x, seed=i, largest=int(0.05 * rates[i])) for i, x in enumerate(signals)]
    spans = [(("+", 0.05 * i, 0.05 * i + 0.3),) for i in range(16)]
    expected = [in_process(processor, r, Prompt(spans=s), f) for r, s, f in zip(rates, spans, frames)]
    async with running_server(processor, max_sessions=16) as server:

        async def one(i: int):
            async with await SeparationClient.connect(url(server)) as client:
                started = await client.start(rates[i], spans=spans[i], format="float32")
                out, end = await stream_frames(client, frames[i])
                return started, out, end

        results = await asyncio.gather(*(one(i) for i in range(16)))
        assert not server.sessions
    for i, (started, out, end) in enumerate(results):
        n, latency = len(signals[i]), started["latency_samples"]
        assert end["samples_in"] == n and end["samples_out"] == n + latency
        assert out.shape == (2, n + latency)
        assert_batched_equal(out, expected[i])


async def test_prompt_change_mid_stream(processor):
    rate = 16000
    x = mixture(2.0, rate, seed=3)
    frames = [x[i : i + 1600] for i in range(0, len(x), 1600)]
    only_first = in_process(processor, rate, Prompt(spans=SPANS), frames)
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            started = await client.start(rate, spans=SPANS, format="float32")
            outputs = []
            for index, frame in enumerate(frames):
                if index == 10:  # at 1.0 s: a bad prompt is refused, the stream goes on with the old one
                    assert await error_of(client.set_prompt(spans=[("+", 2.0, 1.0)])) == "bad_prompt"
                    await client.set_prompt(spans=[("-", 0.1, 0.4)], example=mixture(0.3, rate, seed=4))
                await client.send_audio(frame)
                outputs.append(await client.receive_audio())
            await client.flush()
            outputs.append(await client.receive_audio())
    out = stack(outputs)[:, started["latency_samples"] :]
    before, after = slice(0, int(0.8 * rate)), slice(int(1.3 * rate), len(x))
    reference = only_first[:, started["latency_samples"] :]
    np.testing.assert_array_equal(out[:, before], reference[:, before])
    # The stream is deterministic (bit-exact above), so any difference is the new prompt at work; an
    # untrained model responds to prompts only weakly, hence the small threshold.
    assert np.abs(out[:, after] - reference[:, after]).max() > 1e-6


async def test_metrics_on_request_and_pushed(processor):
    rate = 16000
    x = mixture(0.6, rate)
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            await client.start(rate, spans=SPANS, metrics_interval_s=0.1)
            for i in range(0, len(x), 1600):  # real-time pace, so pushes happen meanwhile
                await client.send_audio(x[i : i + 1600])
                await client.receive_audio()
                await asyncio.sleep(0.1)
            metrics = await client.metrics()
            await client.flush()
    assert metrics["periodic"] is False and metrics["samples_in"] == len(x)
    assert metrics["rtf"] > 0 and metrics["audio_in_s"] == pytest.approx(0.6)
    assert set(metrics["degraded_s"]) == {"fewer_steps", "pass_through"} and metrics["queue_hops"] >= 0
    assert metrics["latency_ms"] > 0 and metrics["sessions"] == 1
    assert client.last_metrics is not None and client.last_metrics["periodic"] is True


# ---------------------------------------------------------------------------------------------- errors


async def test_control_and_frame_errors_leave_the_connection_usable(processor):
    rate = 16000
    start = {"type": "start", "format": "float32", "sample_rate": rate, "prompt": {"spans": [list(SPANS[0])]}}
    refused_starts = [
        ({**start, "protocol": "samstream.v0"}, "unsupported_protocol"),
        ({**start, "format": "mp3"}, "bad_format"),
        ({**start, "outputs": "stereo"}, "bad_format"),
        ({**start, "sample_rate": 4000}, "bad_sample_rate"),
        ({**start, "sample_rate": 96000}, "bad_sample_rate"),
        ({**start, "sample_rate": "16000"}, "bad_sample_rate"),
        ({**start, "metrics_interval_s": 0}, "bad_message"),
        ({k: v for k, v in start.items() if k != "prompt"}, "bad_prompt"),
        ({**start, "prompt": {}}, "bad_prompt"),
        ({**start, "prompt": {"text": "  "}}, "bad_prompt"),
        ({**start, "prompt": {"spans": [["*", 1, 2]]}}, "bad_prompt"),
        ({**start, "prompt": {"spans": "+:1-2"}}, "bad_prompt"),
        ({**start, "prompt": {"example": "not base64!"}}, "bad_prompt"),
        ({**start, "prompt": {"example": base64.b64encode(b"abc").decode()}}, "bad_prompt"),
        ({**start, "prompt": {"colour": "red"}}, "bad_prompt"),
    ]
    x = mixture(0.5, rate)
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as client:
            assert await error_of(client.request("{not json")) == "bad_json"
            assert await error_of(client.request("[1, 2]")) == "bad_json"
            assert await error_of(client.request('{"kind": "start"}')) == "bad_json"
            assert await error_of(client.request({"type": "teleport"})) == "unknown_type"
            for kind in ("prompt", "flush", "metrics"):
                assert await error_of(client.request({"type": kind, "prompt": {"text": "x"}})) == "not_started"
            await client.send_audio(x[:160])
            assert await error_of(client.receive_audio()) == "not_started"
            for message, code in refused_starts:
                assert await error_of(client.request(message)) == code, message
            assert not server.sessions

            await client.start(rate, spans=SPANS, format="float32")
            assert await error_of(client.request(start)) == "already_started"
            sent = []
            for index, frame in enumerate(x[i : i + 800] for i in range(0, len(x), 800)):
                await client.send_audio(frame)
                sent.append(frame)
                if index == 1:
                    for bad, code in [(b"\x00\x00\x80", "bad_frame"), (b"", "bad_frame"),
                                      (np.full(10, np.nan, np.float32).tobytes(), "bad_frame"),
                                      (np.zeros(rate + 1, np.float32).tobytes(), "frame_too_large")]:
                        await client.send_audio(bad)
            outputs = []
            for _ in range(len(sent) + 4):
                try:
                    outputs.append(await client.receive_audio())
                except ServerError as error:
                    outputs.append(error.code)
            end = await client.flush()
            tail = await client.receive_audio()
    codes = [o for o in outputs if isinstance(o, str)]
    assert codes == ["bad_frame", "bad_frame", "bad_frame", "frame_too_large"]
    assert outputs[2:6] == codes  # each refusal answers its own frame, in order
    audio = [o for o in outputs if not isinstance(o, str)]
    assert [len(o) for o in audio] == [len(f) for f in sent]
    expected = in_process(processor, rate, Prompt(spans=SPANS), sent)
    np.testing.assert_array_equal(np.concatenate([stack(audio), stack([tail])], axis=1), expected)
    assert end["samples_in"] == len(x)


async def test_error_messages_say_what_is_missing_and_never_echo_a_huge_value(processor):
    start = {"type": "start", "format": "float32", "sample_rate": 16000, "prompt": {"spans": [list(SPANS[0])]}}
    async with running_server(processor) as server:
        async with connect(url(server), max_size=None) as ws:

            async def reply(message) -> dict:
                await ws.send(message if isinstance(message, str) else json.dumps(message))
                return json.loads(await ws.recv())

            missing = await reply({k: v for k, v in start.items() if k != "format"})
            assert missing["code"] == "bad_format" and "missing 'format'" in missing["message"]
            assert "None" not in missing["message"]
            missing = await reply({k: v for k, v in start.items() if k != "sample_rate"})
            assert missing["code"] == "bad_sample_rate" and "missing 'sample_rate'" in missing["message"]
            missing = await reply({k: v for k, v in start.items() if k != "prompt"})
            assert missing["code"] == "bad_prompt" and "'prompt'" in missing["message"]
            pacing = await reply({**start, "pacing": "turbo"})
            assert pacing["code"] == "bad_message" and "as_fast_as_possible" in pacing["message"]
            huge = "x" * 2**20  # a 1 MiB type, rate, text: the errors quote at most a few dozen characters
            for message, code in [({"type": huge}, "unknown_type"), ({**start, "sample_rate": huge}, "bad_sample_rate"),
                                  ({**start, "prompt": {"text": 7, "x": huge}}, "bad_prompt"),
                                  ({**start, "prompt": {"spans": [[huge, 1, 2]]}}, "bad_prompt")]:
                error = await reply(message)
                assert error["code"] == code
                assert len(json.dumps(error)) < 600, error["message"][:200]
            nested = await reply("[" * 100_000 + "]" * 100_000)  # deeper than Python's parser goes
            assert nested["code"] == "bad_json" and "nested" in nested["message"]
            assert (await reply(start))["type"] == "started"  # the connection is still fine
    assert server.metrics.errors["internal"] == 0


async def test_a_client_that_does_not_read_is_cut_off_and_others_go_on(processor):
    """A slow reader sends audio and never reads: the server holds at most OUTBOX_AUDIO_S of its replies,
    stops reading it, and drops it once a reply has waited send_timeout_s; another client meanwhile gets
    exactly its separation."""
    from samstream.clients.cli.bench_fuzz import RawClient
    from samstream.stream.server.ws import OUTBOX_AUDIO_S

    rate = 48000
    frame = np.zeros(rate, np.float32).tobytes()  # 1 s frames: 384 kB replies fill the socket buffers fast
    x = mixture(2.0, 16000)
    frames = [x[i : i + 320] for i in range(0, len(x), 320)]
    expected = in_process(processor, 16000, Prompt(spans=SPANS), frames)
    async with running_server(processor, send_timeout_s=1.0) as server:
        slow = await RawClient.open(server.port, receive_buffer=4096)  # it never reads a reply
        await slow.send({"type": "start", "format": "float32", "sample_rate": rate, "pacing": "as_fast_as_possible",
                         "prompt": {"spans": [list(SPANS[0])]}})

        async def flood() -> None:
            try:
                for _ in range(200):
                    await slow.send(frame)  # waits once the server stops reading
            except (ConnectionError, OSError):
                pass

        flooding = asyncio.ensure_future(flood())
        async with await SeparationClient.connect(url(server)) as client:
            await client.start(16000, spans=SPANS, format="float32")
            out, end = await stream_frames(client, frames, window=4)
        held = []
        for _ in range(400):  # the slow reader's connection is dropped within send_timeout_s of stalling
            held.append(max((c._outbox_samples for c in server.connections), default=0))
            if server.metrics.errors["slow_reader"] and not server.sessions:
                break
            await asyncio.sleep(0.05)
        flooding.cancel()
        slow.abort()
        assert server.metrics.errors["slow_reader"] == 1
        assert not server.sessions  # its session was dropped with it
        assert max(held) <= OUTBOX_AUDIO_S * rate + rate  # at most OUTBOX_AUDIO_S of its audio (plus a frame)
    assert_batched_equal(out, expected)  # batched with the slow reader's hops for a while
    assert end["samples_in"] == len(x)


@dataclass
class TaggedState:
    inner: Any
    explode: bool


class FlakyProcessor:
    """The real processor, plus a gate (cleared: the model stalls) and failure on the EXPLODE span."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sample_rate, self.hop_samples = inner.sample_rate, inner.hop_samples
        self.delay_samples, self.max_steps = inner.delay_samples, inner.max_steps
        self.gate = threading.Event()
        self.gate.set()

    def init_state(self, prompt: Prompt) -> TaggedState:
        return TaggedState(self.inner.init_state(prompt), EXPLODE in prompt.spans)

    def set_prompt(self, state: TaggedState, prompt: Prompt) -> None:
        self.inner.set_prompt(state.inner, prompt)
        state.explode = EXPLODE in prompt.spans

    def process(self, states: list[TaggedState], hops: np.ndarray, steps: int) -> np.ndarray:
        self.gate.wait()
        if any(state.explode for state in states):
            raise RuntimeError("exploded")
        return self.inner.process([state.inner for state in states], hops, steps)

    def flush_hops(self) -> int:
        return self.inner.flush_hops()


async def test_model_error_fails_only_that_session(processor):
    rate = 16000
    x = mixture(1.0, rate)
    frames = [x[i : i + 800] for i in range(0, len(x), 800)]
    expected = in_process(processor, rate, Prompt(spans=SPANS), frames)
    async with running_server(FlakyProcessor(processor)) as server:
        async with await SeparationClient.connect(url(server)) as doomed, \
                await SeparationClient.connect(url(server)) as healthy:
            await doomed.start(rate, spans=[EXPLODE], format="float32")
            await healthy.start(rate, spans=SPANS, format="float32")
            streamed = asyncio.create_task(stream_frames(healthy, frames))
            codes = []
            for frame in frames[:4]:
                await doomed.send_audio(frame)
            for _ in range(4):
                codes.append(await error_of(doomed.receive_audio()))
            # Frames queued before the failure get model_error, frames that arrive after it not_started.
            assert codes[0] == "model_error" and set(codes) <= {"model_error", "not_started"}
            await doomed.send_audio(frames[0])  # the session is over
            assert await error_of(doomed.receive_audio()) == "not_started"
            out, end = await streamed
            await doomed.start(rate, spans=SPANS)  # a new session on the same connection works
            await doomed.flush()
    assert_batched_equal(out, expected)
    assert end["samples_in"] == len(x)
    assert server.metrics.errors["model_error"] == codes.count("model_error")


async def test_a_full_backlog_stops_reading_instead_of_refusing_frames(processor):
    """Flow control: while the model stalls, the server reads frames only until the session's backlog (2 s) is
    full, then stops reading (TCP holds the rest); once the model moves again every frame is answered, in
    order, with nothing refused, dropped or degraded."""
    rate = 16000
    x = mixture(3.0, rate)
    frames = [x[i : i + 1600] for i in range(0, len(x), 1600)]
    flaky = FlakyProcessor(processor)
    expected = in_process(processor, rate, Prompt(spans=SPANS), frames)
    async with running_server(flaky) as server:
        for pacing in ("live", "as_fast_as_possible"):
            async with await SeparationClient.connect(url(server)) as client:
                started = await client.start(rate, spans=SPANS, format="float32", pacing=pacing)
                assert started["pacing"] == pacing
                flaky.gate.clear()  # the model stalls: 3 s of audio are sent, the backlog holds 2 s
                try:
                    sending = asyncio.gather(*[client.send_audio(frame) for frame in frames])
                    (connection,) = server.connections
                    session = connection.stream.handle.session
                    for _ in range(400):  # the server has read up to the backlog's limit, then stopped
                        if not session.has_room(1600):
                            break
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.2)
                    assert 1.9 <= session.metrics.audio_in_s <= 2.1
                finally:
                    flaky.gate.set()
                await sending
                out, end = await stream_frames(client, [])
                replies = out
            assert end["samples_in"] == len(x) and end["samples_out"] == len(x) + started["latency_samples"]
            assert end["metrics"]["degraded_s"] == {"fewer_steps": 0.0, "pass_through": 0.0}
            np.testing.assert_array_equal(replies, expected)
    assert not server.metrics.errors


async def test_session_limit(processor):
    async with running_server(processor, max_sessions=2) as server:
        async with await SeparationClient.connect(url(server)) as a, \
                await SeparationClient.connect(url(server)) as b, \
                await SeparationClient.connect(url(server)) as c:
            await a.start(16000, spans=SPANS)
            await b.start(16000, spans=SPANS)
            assert await error_of(c.start(16000, spans=SPANS)) == "too_many_sessions"
            await a.flush()
            await c.start(16000, spans=SPANS)
            assert len(server.sessions) == 2


async def test_abrupt_disconnect_leaves_other_clients_unaffected(processor):
    rate = 16000
    x = mixture(1.0, rate, seed=5)
    frames = split(x, seed=5)
    expected = in_process(processor, rate, Prompt(spans=SPANS), frames)
    async with running_server(processor) as server:
        clients = [await SeparationClient.connect(url(server)) for _ in range(3)]
        for client in clients:
            await client.start(rate, spans=SPANS, format="float32")
        vanishing = clients[0]
        for frame in frames[:5]:
            await vanishing.send_audio(frame)
        healthy = asyncio.gather(*(stream_frames(client, frames) for client in clients[1:]))
        vanishing.ws.transport.abort()  # mid-stream, no close frame
        results = await healthy
        for client in clients:
            await client.close()
        for _ in range(1000):  # the vanished session is aborted: released without computing its queue
            if not server.sessions and not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.sessions and not server.connections and server.metrics.connections == 0
    for out, end in results:
        assert_batched_equal(out, expected)
        assert end["samples_in"] == len(x)


async def test_oversized_message_closes_only_that_connection(processor):
    async with running_server(processor, max_message_bytes=65536) as server:
        async with await SeparationClient.connect(url(server)) as big, \
                await SeparationClient.connect(url(server)) as other:
            await big.start(16000, spans=SPANS, format="float32")
            await other.start(16000, spans=SPANS, format="float32")
            await big.send_audio(np.zeros(20000, np.float32))  # 80 kB > 64 KiB
            assert await big.receive_audio() is None  # closed by the server
            assert big.ws.close_code == 1009
            out, end = await stream_frames(other, [mixture(0.3, 16000)])
            assert end["samples_in"] == 4800


async def test_idle_timeout_flushes_then_closes(processor):
    async with running_server(processor, idle_timeout_s=0.3) as server:
        async with await SeparationClient.connect(url(server)) as client:
            started = await client.start(16000, spans=SPANS)
            await client.send_audio(mixture(0.1, 16000))
            assert len(await client.receive_audio()) == 1600
            tail = await client.receive_audio()  # nothing more is sent: the server ends the session
            assert len(tail) == started["latency_samples"]
            assert await client.receive_audio() is None
            assert client.end["reason"] == "idle_timeout" and client.end["samples_in"] == 1600
            assert await error_of(client.receive_audio()) == "idle_timeout"
            await asyncio.wait_for(client.ws.wait_closed(), 10)
            assert client.ws.close_code == 1008
        async with await SeparationClient.connect(url(server)) as client:  # no session at all
            assert await error_of(client.receive_audio()) == "idle_timeout"
        assert server.metrics.errors["idle_timeout"] == 2


async def test_internal_error_closes_only_that_connection(processor, monkeypatch):
    async def broken(connection, message):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Connection, "_on_metrics", broken)
    async with running_server(processor) as server:
        async with await SeparationClient.connect(url(server)) as victim, \
                await SeparationClient.connect(url(server)) as other:
            await victim.start(16000, spans=SPANS)
            await other.start(16000, spans=SPANS, format="float32")
            assert await error_of(victim.metrics()) == "internal"
            await asyncio.wait_for(victim.ws.wait_closed(), 10)
            assert victim.ws.close_code == 1011
            out, end = await stream_frames(other, [mixture(0.3, 16000)])
            assert end["samples_in"] == 4800
        for _ in range(400):
            if not server.sessions:
                break
            await asyncio.sleep(0.01)
        assert not server.sessions


async def test_registered_message_handler_and_cleanup(processor):
    cleaned = asyncio.Event()

    async def echo(connection: Connection, message: dict) -> None:
        if message.get("refuse"):
            raise ProtocolError("bad_message", "refused on request")
        connection.add_cleanup(lambda: asyncio.sleep(0, cleaned.set()))
        await connection.send_message({"type": "echoed", "payload": message["payload"]})

    async with running_server(processor) as server:
        server.register_message_handler("echo", echo)
        with pytest.raises(ValueError):
            server.register_message_handler("start", echo)
        async with await SeparationClient.connect(url(server)) as client:
            reply = await client.request({"type": "echo", "payload": [1, 2]})
            assert reply == {"type": "echoed", "payload": [1, 2]}
            assert await error_of(client.request({"type": "echo", "refuse": True})) == "bad_message"
        await asyncio.wait_for(cleaned.wait(), 10)


async def test_graceful_shutdown_flushes_every_session(processor):
    rate = 16000
    x = mixture(0.7, rate, seed=6)
    frames = [x[i : i + 700] for i in range(0, len(x), 700)]
    expected = in_process(processor, rate, Prompt(spans=SPANS), frames)
    server = SeparationServer(processor, ServerConfig(port=0), model_name="random", realtime_budget_s=math.inf)
    await server.start()
    clients = [await SeparationClient.connect(url(server)) for _ in range(2)]
    outputs = [[], []]
    for client in clients:
        started = await client.start(rate, spans=SPANS, format="float32")
        for frame in frames:
            await client.send_audio(frame)
    for client, out in zip(clients, outputs):
        for _ in frames:  # every frame answered: the server has read them all
            out.append(await client.receive_audio())
    await server.shutdown()
    for client, out in zip(clients, outputs):
        while (output := await client.receive_audio()) is not None:
            out.append(output)
        assert client.end["reason"] == "shutdown" and client.end["samples_in"] == len(x)
        assert client.end["samples_out"] == len(x) + started["latency_samples"]
        assert_batched_equal(stack(out), expected)
        await asyncio.wait_for(client.ws.wait_closed(), 10)
        assert client.ws.close_code == 1001
    with pytest.raises(OSError):
        await connect(url(server))


async def test_wire_format_by_hand(processor):
    """The protocol without the client library: raw JSON and bytes, as docs/protocol.md shows them."""
    async with running_server(processor) as server:
        async with connect(url(server)) as ws:
            await ws.send(json.dumps({"type": "start", "format": "pcm16", "sample_rate": 8000,
                                      "prompt": {"spans": [["+", 0.1, 0.4]]}, "outputs": "both"}))
            started = json.loads(await ws.recv())
            assert started["type"] == "started" and started["sample_rate"] == 8000
            await ws.send(np.zeros(160, "<i2").tobytes())
            reply = await ws.recv()
            assert isinstance(reply, bytes) and len(reply) == 160 * 2 * 2  # 2 channels of int16
            await ws.send(json.dumps({"type": "stop"}))
            tail = await ws.recv()
            assert len(tail) == started["latency_samples"] * 2 * 2
            end = json.loads(await ws.recv())
            assert end["type"] == "end" and end["reason"] == "stop"
            assert (end["samples_in"], end["samples_out"]) == (160, 160 + started["latency_samples"])
            await ws.wait_closed()
            assert ws.close_code == 1000


async def test_shutdown_grace_period_drops_connections_that_do_not_finish(processor):
    server = SeparationServer(processor, ServerConfig(port=0, shutdown_grace_s=0), model_name="random")
    await server.start()
    async with await SeparationClient.connect(url(server)) as client:
        await client.start(16000, spans=SPANS)
        await client.send_audio(mixture(0.2, 16000))
        await server.shutdown()  # no time to flush: the connection is cut
        await asyncio.wait_for(client.ws.wait_closed(), 10)
    assert client.ws.close_code in (1001, 1006) and not server.sessions and not server.connections

"""The model worker of the Ray Serve deployment (stream/cluster/worker.py), driven directly, without Ray: calls
applied in their numbered order whatever order they arrive in, the session held by its `open` call, the
answers for unknown sessions, full replicas and aborts, and the figures replicas report to routers."""

from __future__ import annotations

import asyncio
import math

import numpy as np

from samstream.stream.cluster.boundary import FULL, LOST, SessionInfo, Snapshot
from samstream.stream.cluster.worker import SessionWorker
from samstream.stream.processor import Prompt
from test_ws_protocol import SPANS, assert_batched_equal, in_process, mixture, split

RATE = 16000


def worker(processor, **options) -> SessionWorker:
    return SessionWorker("random", processor=processor, threads=0, realtime_budget_s=math.inf, warmup=False,
                         **options)


async def test_calls_apply_in_their_numbered_order_whatever_order_they_arrive_in(processor):
    frames = split(mixture(1.0, RATE, seed=3), seed=3, largest=900)
    expected = in_process(processor, RATE, Prompt(spans=SPANS), frames)
    replica = worker(processor)
    held = replica.open("s1", Prompt(spans=SPANS), RATE, True, "front-a")
    status, fields = await held.__anext__()
    info = SessionInfo(**fields)
    assert status == "ok" and info.latency_samples == expected.shape[1] - sum(map(len, frames))
    assert info.live and info.backlog_samples >= RATE  # 2 s of audio by default
    # Every push at once, the last first, half of them in calls that carry several frames (push_many, as a
    # front sends them under load): each waits for its turn.
    numbered = list(enumerate(frames))
    singles = [replica.push("s1", seq, frame) for seq, frame in reversed(numbered[::2])]
    many = [replica.push_many([("s1", seq, frame) for seq, frame in reversed(numbered[1::2][i : i + 3])])
            for i in range(0, len(numbered[1::2]), 3)]
    answers = await asyncio.gather(*singles, *many)
    by_seq = dict(zip([seq for seq, _ in reversed(numbered[::2])], answers[: len(singles)]))
    for call, answered in zip(range(0, len(numbered[1::2]), 3), answers[len(singles):]):
        by_seq.update(zip([seq for seq, _ in reversed(numbered[1::2][call : call + 3])], answered))
    replies = [by_seq[seq] for seq in range(len(frames))]
    assert all(reply[0] == "ok" and len(reply[1]) == len(frame) for reply, frame in zip(replies, frames))
    status, target, residual, snapshot = await replica.close("s1", len(frames))
    out = np.concatenate([np.stack(reply[1:3]) for reply in replies] + [np.stack([target, residual])], axis=1)
    assert_batched_equal(out, expected)
    assert isinstance(snapshot, Snapshot) and snapshot.audio_in_s == sum(map(len, frames)) / RATE
    assert [item async for item in held] == []  # the open call ends with the session
    assert replica.sessions == 0
    stats = replica.record_routing_stats()
    assert stats["sessions"] == 0 and stats["frames"] == len(frames) and stats["opened"] == 1


async def test_unknown_sessions_full_replicas_and_aborts(processor):
    replica = worker(processor, max_sessions=1)
    frame = mixture(0.1, RATE)
    assert (await replica.push("nobody", 0, frame))[:2] == ("error", LOST)
    first = replica.open("a", Prompt(spans=SPANS), RATE, True, "front-a")
    assert (await first.__anext__())[0] == "ok"
    second = replica.open("b", Prompt(spans=SPANS), RATE, True, "front-b")
    assert (await second.__anext__())[:2] == ("error", FULL)
    stats = replica.record_routing_stats()
    assert stats["sessions"] == 1 and stats["sessions_by_front"] == {"front-a": 1}
    # A push waiting for an earlier call that never comes is answered once the session is aborted.
    stranded = asyncio.ensure_future(replica.push("a", 5, frame))
    await asyncio.sleep(0.05)
    assert not stranded.done()
    assert await replica.abort("a") == ("ok", 0)
    assert (await stranded)[:2] == ("error", LOST)
    assert [item async for item in first] == []
    assert await replica.abort("a") == ("ok", 0)  # twice is harmless


async def test_a_cancelled_open_call_aborts_its_session(processor):
    """The front went away (its call was cancelled): the replica does not keep the session."""
    replica = worker(processor)
    held = replica.open("s", Prompt(spans=SPANS), RATE, True, "front-a")
    await held.__anext__()
    waiting = asyncio.ensure_future(held.__anext__())
    await asyncio.sleep(0.05)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert replica.sessions == 0


def test_the_remote_handle_offers_what_the_servers_use_of_a_local_one():
    """The Ray front serves through RemoteStreamHandle exactly as through StreamHandle: every public method and
    property of StreamHandle, and every `handle.session.X` the servers read, exists on the stand-in."""
    import inspect
    import re
    from dataclasses import fields
    from pathlib import Path

    from samstream.stream.batcher import StreamHandle
    from samstream.stream.cluster.front import RemoteSession, RemoteStreamHandle

    public = {name for name in dir(StreamHandle) if not name.startswith("_")}
    instance = set(re.findall(r"self\.(\w+)(?:: [^=]+)? = ", inspect.getsource(RemoteStreamHandle.__init__)))
    assert public - set(dir(RemoteStreamHandle)) - instance == set()
    servers = Path(__file__).resolve().parents[1] / "stream" / "server"
    read = {name for path in servers.glob("*.py") for name in re.findall(r"handle\.session\.(\w+)", path.read_text())}
    assert read - {field.name for field in fields(RemoteSession)} == set()

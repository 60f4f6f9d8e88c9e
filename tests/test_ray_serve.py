"""Scale-out on Ray Serve (stream/cluster/, docs/scaling.md) on a real local Ray cluster bound to 127.0.0.1,
started once for this module: two replicas of the model worker behind a samstream front. What of the cluster
listens or connects beyond loopback (only each replica's inter-deployment gRPC listener, which Ray 2.60 binds to
[::]); eight WebSocket clients with exact sample accounting and the single-process server's outputs, sessions
spread over both replicas, a replica removed by Serve finishing its sessions, a replica killed mid-stream ending
exactly its sessions with the documented error while the others stay exact, and a new session afterwards."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import re
import signal
import sys
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from samstream.stream.cluster import loopback

# Ray reads its loopback setting once, when it is imported (stream/cluster/loopback.py): this module imports
# ray below (and its first test before the cluster starts), so the setting goes into the environment first.
loopback.enter_loopback_mode()
pytest.importorskip("ray.serve", reason="Ray Serve is an optional extra: bash install.sh test installs it")

from samstream.clients.ws_client import SeparationClient, ServerError  # noqa: E402
from samstream.stream.cluster import deploy  # noqa: E402
from samstream.stream.cluster.front import ClusterBatcher  # noqa: E402
from samstream.stream.server.app import SeparationServer  # noqa: E402
from samstream.stream.server.ops import ServerConfig  # noqa: E402
from test_ws_protocol import SPANS, assert_batched_equal, mixture, running_server, split, stream_frames, url  # noqa: E402

RATE = 16000
# The replicas run the embedded architecture with seed-0 random weights: the conftest `processor` fixture.
OPTIONS = deploy.WorkerOptions(model="random", replicas=2, realtime_budget_s=math.inf, warmup=False,
                               max_sessions=16, drain_timeout_s=60.0, stats_period_s=0.5)


@pytest.fixture(scope="module")
def cluster():
    deploy.start_local_ray(num_cpus=2)
    try:
        deploy.deploy(OPTIONS)
        yield
    finally:
        deploy.stop_local_ray()


@asynccontextmanager
async def front(**config):
    """A samstream front (the WebSocket server) in front of the deployment, on a free loopback port."""
    batcher = await ClusterBatcher.connect(timeout_s=120)
    server = SeparationServer(batcher.processor, ServerConfig(port=0, **config), model_name=batcher.model_name,
                              batcher=batcher)
    server.health_sources.append(batcher.health)
    server.metrics_sources.append(batcher.render_metrics)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


async def wait_for_replicas(count: int, timeout_s: float = 120.0) -> None:
    batcher = await ClusterBatcher.connect(timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    while len(batcher.sessions_book().replicas()) != count:
        assert time.monotonic() < deadline, f"the deployment did not reach {count} replicas"
        await asyncio.sleep(0.2)


async def run_clients(address: str, streams: list[list[np.ndarray]]) -> list[tuple[dict, np.ndarray, dict]]:
    async def one(frames):
        async with await SeparationClient.connect(address) as client:
            started = await client.start(RATE, spans=SPANS, format="float32")
            out, end = await stream_frames(client, frames)
            return started, out, end

    return await asyncio.gather(*(one(frames) for frames in streams))


async def http_get(server: SeparationServer, path: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as response:
            return response.read().decode()

    return await asyncio.to_thread(get)  # the server answers on this event loop


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


LISTEN, ESTABLISHED = "0A", "01"  # TCP states as /proc/net/tcp writes them


def proc_address(field: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """An address of /proc/net/tcp{,6} (hex, each 32-bit word little-endian) as (IP, port); an IPv4-mapped
    IPv6 address as its IPv4 address."""
    host, port = field.split(":")
    raw = bytes.fromhex(host)
    ip = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(port, 16)


def tcp_sockets(pids: list[int]) -> list[tuple[int, str, tuple, tuple]]:
    """(pid, state, local (IP, port), remote (IP, port)) of every TCP socket the processes hold."""
    table: dict[str, tuple[str, tuple, tuple]] = {}  # socket inode -> state, local, remote
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            table[fields[9]] = (fields[3], proc_address(fields[1]), proc_address(fields[2]))
    found = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # the process ended
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:  # closed since (e.g. the descriptor that listed /proc/self/fd)
                continue
            match = re.fullmatch(r"socket:\[(\d+)\]", link)
            if match and match.group(1) in table:
                found.append((pid, *table[match.group(1)]))
    return found


def connections_beyond_loopback(pids: list[int]) -> list[tuple[int, tuple, tuple]]:
    return [(pid, local, remote) for pid, state, local, remote in tcp_sockets(pids)
            if state == ESTABLISHED and not (local[0].is_loopback and remote[0].is_loopback)]


async def replica_pids() -> dict[str, int]:
    """Serve replica id -> the process of that replica (each replica says it: SessionWorker.describe)."""
    await wait_for_replicas(OPTIONS.replicas)
    batcher = await ClusterBatcher.connect(timeout_s=120)
    return {uid: (await batcher._rpc(uid, "describe").remote())["pid"] for uid in batcher.sessions_book().replicas()}


# ---------------------------------------------------------------------------------------------- tests


def test_the_serve_run_config_builds_the_application():
    """deploy/samstream-serve.yaml is a valid `serve run`/`serve deploy` config for the builder it names."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "samstream-serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert str(schema.proxy_location).endswith("Disabled")
    app_config = schema.applications[0]
    assert app_config.import_path == "samstream.stream.cluster.deploy:build_app"
    app = deploy.build_app(app_config.args)
    bound = app._bound_deployment
    assert bound.name == app_config.deployments[0].name == "SessionWorker"
    assert bound._deployment_config.request_router_config.request_router_class.endswith("SessionAffinityRouter")
    assert bound.ray_actor_options["num_cpus"] == app_config.args["threads"]
    with pytest.raises(ValueError, match="unknown samstream deployment args"):
        deploy.build_app({"replica": 2})


def test_a_local_cluster_is_refused_when_ray_was_imported_without_the_loopback_setting(monkeypatch):
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, on import: too late to set it then, and samstream changes
    nothing inside Ray, so it refuses to start a cluster that would listen on the outward address."""
    assert "ray" in sys.modules
    monkeypatch.delenv(loopback.CLUSTER_VAR)
    with pytest.raises(RuntimeError, match="ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set"):
        deploy.start_local_ray(num_cpus=1)
    assert loopback.CLUSTER_VAR not in os.environ  # nothing changed


async def test_the_cluster_listens_on_loopback_only_but_for_serves_grpc_listener(cluster):
    """Every listening socket of the cluster's processes (this driver, GCS, raylet, agents, workers, the Serve
    controller, the replicas) is on loopback, except one per replica: Serve's inter-deployment gRPC server, which
    Ray 2.60 binds to [::]:0 with no option to change it (docs/scaling.md: firewall it; samstream does not patch
    Ray). Nothing else may listen beyond loopback, and no connection of theirs goes beyond it."""
    replicas = await replica_pids()
    assert len(set(replicas.values())) == OPTIONS.replicas, replicas
    pids = [os.getpid(), *descendants(os.getpid())]
    assert set(replicas.values()) <= set(pids), (replicas, pids)
    listening = [(pid, local) for pid, state, local, _ in tcp_sockets(pids) if state == LISTEN]
    assert len({pid for pid, _ in listening}) >= 4, listening  # GCS, raylet, agents, replicas, the controller
    beyond = [(pid, local) for pid, local in listening if not local[0].is_loopback]
    for uid, pid in replicas.items():
        grpc = [local for owner, local in beyond if owner == pid]
        assert len(grpc) == 1 and grpc[0][0] == ipaddress.IPv6Address("::"), \
            f"replica {uid} (pid {pid}): expected Serve's one gRPC listener on [::], found {grpc}"
    others = [(pid, local) for pid, local in beyond if pid not in replicas.values()]
    assert not others, f"cluster processes listening beyond loopback: {others}"
    assert not connections_beyond_loopback(pids)


async def test_eight_clients_through_the_front_equal_the_single_process_server(cluster, processor):
    streams = [split(mixture(1.0, RATE, seed=seed), seed=seed, largest=1200) for seed in range(8)]
    async with running_server(processor) as single:
        expected = await run_clients(url(single), streams)
    async with front() as server:
        got = await run_clients(url(server), streams)
        health = json.loads(await http_get(server, "/health"))
        metrics = await http_get(server, "/metrics")
        started = {uid: figures.sessions_started for uid, figures in server.batcher.figures.items()}
        outboxes = list(server.batcher._outboxes.values())
        # With sessions running on every replica, every connection of the cluster's processes is still on loopback.
        assert not connections_beyond_loopback([os.getpid(), *descendants(os.getpid())])
    # Every frame went to a replica once; under load several shared a call.
    assert sum(box.frames_sent for box in outboxes) == sum(len(frames) for frames in streams)
    assert sum(box.calls_sent for box in outboxes) <= sum(box.frames_sent for box in outboxes)
    assert sorted(started.values()) == [4, 4], started  # spread over both replicas
    assert set(health["cluster"]["replicas"]) == set(started)
    for frames, (started_single, out_single, _), (started_ray, out, end) in zip(streams, expected, got):
        samples = sum(len(frame) for frame in frames)
        latency = started_ray["latency_samples"]
        assert latency == started_single["latency_samples"]
        assert end["samples_in"] == samples and end["samples_out"] == samples + latency
        assert out.shape == (2, samples + latency)
        assert_batched_equal(out, out_single)
    for uid in started:
        assert f'samstream_front_sessions_started_total{{replica="{uid}"}} 4' in metrics
        assert f'samstream_replica_up{{replica="{uid}"}} 1' in metrics
    assert "samstream_front_ray_overhead_seconds_count" in metrics and "samstream_front_push_calls_total" in metrics
    assert "samstream_replica_frame_seconds_bucket" in metrics


async def test_replicas_removed_by_serve_finish_their_sessions(cluster, processor):
    """A redeploy replaces the replicas one by one: each one Serve removes takes no new session but finishes
    those it holds (tail + end, exact); Serve waits for them before it goes on."""
    x = mixture(1.6, RATE, seed=11)
    frames = [x[i : i + 640] for i in range(0, len(x), 640)]
    half = len(frames) // 2
    async with running_server(processor) as single:
        expected = (await run_clients(url(single), [frames]))[0][1]
    async with front(idle_timeout_s=300.0) as server:
        book = server.batcher.sessions_book()
        clients, replica_of, outputs = [], [], []
        for _ in range(2):
            client = await SeparationClient.connect(url(server))
            started = await client.start(RATE, spans=SPANS, format="float32")
            clients.append(client)
            replica_of.append(server.sessions[started["session"]].replica)
            outputs.append([])
        assert len(set(replica_of)) == 2
        for client, out in zip(clients, outputs):
            for frame in frames[:half]:
                await client.send_audio(frame)
            for _ in frames[:half]:
                out.append(await client.receive_audio())
        redeploy = asyncio.ensure_future(asyncio.to_thread(deploy.deploy, OPTIONS))  # a new version
        unfinished = list(range(2))
        deadline = time.monotonic() + 120
        while unfinished:
            draining = [i for i in unfinished if replica_of[i] in book.lingering()]
            if not draining:
                assert time.monotonic() < deadline and not redeploy.done(), "no replica was removed"
                await asyncio.sleep(0.1)
                continue
            i = draining[0]
            metrics = await http_get(server, "/metrics")
            assert f'samstream_replica_up{{replica="{replica_of[i]}"}} 0' in metrics
            newcomer = await SeparationClient.connect(url(server))
            started = await newcomer.start(RATE, spans=SPANS, format="float32")
            assert server.sessions[started["session"]].replica != replica_of[i]  # never on a draining replica
            await newcomer.flush()
            await newcomer.close()
            client, out = clients[i], outputs[i]
            for frame in frames[half:]:
                await client.send_audio(frame)
            end = await client.flush()
            while (output := await client.receive_audio()) is not None:
                out.append(output)
            assert end["reason"] == "flush" and end["samples_out"] == len(x) + end["latency_samples"]
            assert_batched_equal(np.stack([np.concatenate([o.target for o in out]),
                                           np.concatenate([o.residual for o in out])]), expected)
            await client.close()
            unfinished.remove(i)
        await redeploy  # Serve went on once the removed replicas' sessions had ended
        assert server.batcher.figures[replica_of[0]].sessions_lost == 0
        assert not set(replica_of) & set(book.replicas())
    await wait_for_replicas(2)


async def test_a_dying_replica_ends_exactly_its_sessions(cluster, processor):
    x = mixture(1.6, RATE, seed=5)
    frames = [x[i : i + 800] for i in range(0, len(x), 800)]
    half = len(frames) // 2
    async with running_server(processor) as single:
        expected = (await run_clients(url(single), [frames]))[0][1]
    await wait_for_replicas(2)
    async with front() as server:
        batcher = server.batcher
        clients = [await SeparationClient.connect(url(server)) for _ in range(4)]
        replica_of = []
        for client in clients:
            started = await client.start(RATE, spans=SPANS, format="float32")
            replica_of.append(server.sessions[started["session"]].replica)
        victim = replica_of[0]
        assert replica_of.count(victim) == 2
        received = [[] for _ in clients]
        for client, out in zip(clients, received):
            for frame in frames[:half]:
                await client.send_audio(frame)
            for _ in frames[:half]:
                out.append(await client.receive_audio())
        pid = (await batcher._rpc(victim, "describe").remote())["pid"]
        os.kill(pid, signal.SIGKILL)
        for client, out, replica in zip(clients, received, replica_of):
            for frame in frames[half:]:
                await client.send_audio(frame)
            if replica != victim:  # the other replica's sessions go on, exact
                end = await client.flush()
                while (output := await client.receive_audio()) is not None:
                    out.append(output)
                assert end["samples_out"] == len(x) + end["latency_samples"]
                assert_batched_equal(np.stack([np.concatenate([o.target for o in out]),
                                               np.concatenate([o.residual for o in out])]), expected)
                continue
            errors = []
            for _ in frames[half:]:
                try:
                    out.append(await client.receive_audio())
                except ServerError as error:
                    errors.append(error)
            # The first frame the session could not answer says why and how far it got; later ones find no session.
            assert errors and errors[0].code == "model_error" and "replica_lost" in errors[0].message, errors
            assert {error.code for error in errors[1:]} <= {"model_error", "not_started"}
            answered = int(re.search(r"(\d+) input samples of the session had been answered", errors[0].message)[1])
            assert answered == sum(len(o) for o in out)  # what the client got is what the message accounts for
            with pytest.raises(ServerError) as flushed:
                await client.flush()
            assert flushed.value.code == "not_started"
        metrics = await http_get(server, "/metrics")
        assert f'samstream_front_sessions_lost_total{{replica="{victim}"}} 2' in metrics
        # A new session lands on a live replica and is exact.
        (started, out, end), = await run_clients(url(server), [frames])
        assert end["samples_out"] == len(x) + started["latency_samples"]
        assert_batched_equal(out, expected)
        for client in clients:
            await client.close()
        assert victim not in batcher.sessions_book().replicas()

"""`samstream bench e2e --ray`: what serving through Ray Serve replicas costs and holds, side by side with the
single-process server, in one run on this machine (docs/scaling.md).

For each configuration -- the single-process `samstream serve`, then `samstream serve --ray --replicas N` for
each N of `--replicas` (each starts its own local Ray cluster on loopback) -- it measures, with the
WebSocket leg of `bench e2e` (real-time clients on loopback, same definitions):
- one stream's end-to-end latency, first sample, p50 and p95: the Ray configurations' minus the single
  process's is what the Ray hop adds;
- the front's own figure for the hop: what each frame's round trip to its replica took beyond the replica's
  own time (`samstream_front_ray_overhead_seconds` in the front's /metrics: mean, and the share under 5 / 10 ms);
- real-time streams held (the capacity ramp of `bench e2e`);
- memory: resident sets of the server process and all its descendants (front, Ray's GCS, raylet, agents,
  Serve controller, replicas), in steady state after the ramp;
- CPU: milliseconds of CPU per second of audio, by process kind, for the single stream and over the whole
  ramp (the front's share is what sizes the fronts: it moves bytes only; the replicas' includes the model;
  under load a front sends the frames of many streams in one call, so the share per stream drops).
The clients, the front and the replicas all share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray Serve (--ray)")
    group.add_argument("--ray", action="store_true",
                       help="compare the single-process server with `serve --ray` at each --replicas count (WebSocket "
                            "leg only; starts local Ray clusters bound to 127.0.0.1)")
    group.add_argument("--replicas", default="1,2",
                       help="replica counts to measure with --ray, comma-separated (default 1,2)")


def run(args: argparse.Namespace, e2e) -> int:
    """`e2e` is the bench_e2e module (which calls this): its server start and WebSocket leg are reused (passed
    in rather than imported, so that the two modules do not import each other)."""
    from samstream.model.embedded import shipped_weights

    start_server, ws_leg = e2e.start_server, e2e.ws_leg

    try:
        counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise SystemExit(f"samstream bench e2e: error: --replicas takes counts of 1 or more, e.g. 1,2 (got {args.replicas!r})")
    model = args.model
    if model == "auto":
        model = "tiny" if shipped_weights().is_file() else "random"
    result: dict = {"model": model, "threads": args.threads, "legs": ["ws"], "ray": True, "configs": {}}
    configs = [("single", ())] + [(f"ray_{n}", ("--ray", "--replicas", str(n), "--replica-sessions",
                                                str(max(1, args.max_streams)))) for n in counts]
    for name, extra in configs:
        print(f"--- {name}: samstream serve {' '.join(extra)}", flush=True)
        started = time.monotonic()
        process, url, log = start_server(model, args.threads, max(1, args.max_streams), extra)
        figures = {"start_s": round(time.monotonic() - started, 1)}
        try:
            warm_up(url, args, e2e)  # a first session pays one-off costs (lazy loading, JIT) in every configuration
            one = argparse.Namespace(**{**vars(args), "max_streams": 0})
            before = cpu_seconds(process.pid)
            figures.update(ws_leg(one, url))  # one stream first: latency without load
            after = cpu_seconds(process.pid)
            figures["cpu_ms_per_audio_s"] = {kind: round(1000 * (after.get(kind, 0.0) - spent) / args.seconds, 1)
                                             for kind, spent in before.items()}
            if extra:
                figures.update(hop_overhead(url))
            if args.max_streams:
                before = cpu_seconds(process.pid)
                ramp = ws_leg(args, url)
                after = cpu_seconds(process.pid)
                figures.update({key: ramp[key] for key in ("max_realtime_ws_streams", "p95_limit_ms", "ramp")})
                # Over the whole ramp (its single-stream run included), per second of audio streamed.
                audio_s = args.seconds + args.ramp_seconds * sum(step["streams"] for step in ramp["ramp"])
                figures["ramp_cpu_ms_per_audio_s"] = {kind: round(1000 * (after.get(kind, 0.0) - spent) / audio_s, 1)
                                                      for kind, spent in before.items()}
            figures["memory_mb"] = memory_mb(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
        figures["log"] = log
        result["configs"][name] = figures
    single = result["configs"]["single"]
    for name, figures in result["configs"].items():
        if name != "single":
            figures["added_ms_p50"] = round(figures["ws_latency_ms_p50"] - single["ws_latency_ms_p50"], 2)
            figures["added_ms_p95"] = round(figures["ws_latency_ms_p95"] - single["ws_latency_ms_p95"], 2)
    print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0


def warm_up(url: str, args: argparse.Namespace, e2e) -> None:
    import asyncio

    frame = max(1, round(args.frame_ms * args.rate / 1000))
    asyncio.run(e2e.stream_realtime(url, e2e.noise(1.0, args.rate, seed=99), args.rate, frame))


def hop_overhead(url: str) -> dict:
    """The front's histogram of what the Ray hop added to each frame (all replicas)."""
    text = urllib.request.urlopen("http" + url.removeprefix("ws") + "/metrics", timeout=10).read().decode()
    buckets: dict[str, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        match = re.match(r'samstream_front_ray_overhead_seconds_(bucket|sum|count)\{([^}]*)\} (\S+)', line)
        if not match:
            continue
        kind, labels, value = match.group(1), match.group(2), float(match.group(3))
        if kind == "bucket":
            le = re.search(r'le="([^"]+)"', labels).group(1)
            buckets[le] = buckets.get(le, 0.0) + value
        elif kind == "sum":
            total += value
        else:
            count += value
    if not count:
        return {}
    return {"ray_overhead_ms_mean": round(1000 * total / count, 2),
            "ray_overhead_share_under_5ms": round(buckets.get("0.005", 0.0) / count, 3),
            "ray_overhead_share_under_10ms": round(buckets.get("0.01", 0.0) / count, 3),
            "ray_overhead_frames": int(count)}


def family(pid: int) -> dict[int, str]:
    """A process and its descendants, each with its kind: front (the server process itself), replica,
    serve_controller or ray (GCS, raylet, agents, idle workers)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                names[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    members, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in members:
                members.add(child)
                todo.append(child)
    return {member: ("front" if member == pid else "replica" if "ServeReplica" in names.get(member, "")
                     else "serve_controller" if "ServeController" in names.get(member, "") else "ray")
            for member in members}


def memory_mb(pid: int) -> dict:
    """Resident memory (MiB) of a process and its descendants, by kind."""
    kinds: dict[str, float] = {}
    for member, kind in family(pid).items():
        try:
            rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{member}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        kinds[kind] = kinds.get(kind, 0.0) + rss_kb / 1024
        if kind == "replica":
            kinds["replicas"] = kinds.get("replicas", 0) + 1
    kinds["total"] = sum(value for key, value in kinds.items() if key != "replicas")
    return {key: round(value, 1) for key, value in kinds.items()}


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (user + system, s) of a process and its descendants so far, by kind."""
    tick = os.sysconf("SC_CLK_TCK")
    kinds: dict[str, float] = {}
    for member, kind in family(pid).items():
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kinds[kind] = kinds.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return kinds


def print_table(result: dict) -> None:
    print("\nconfiguration | p50 ms | p95 ms | added p50/p95 ms | Ray hop mean ms | streams held | memory MiB")
    for name, f in result["configs"].items():
        added = f"{f.get('added_ms_p50', 0):+.1f} / {f.get('added_ms_p95', 0):+.1f}" if name != "single" else "-"
        hop = f"{f['ray_overhead_ms_mean']:.1f}" if "ray_overhead_ms_mean" in f else "-"
        print(f"{name} | {f['ws_latency_ms_p50']:.1f} | {f['ws_latency_ms_p95']:.1f} | {added} | {hop} | "
              f"{f.get('max_realtime_ws_streams')} | {f['memory_mb']['total']:.0f}")

"""`samstream bench soak --minutes M --streams N --json`: N live WebSocket streams against a real `samstream
serve` for M minutes, with clients coming and going, to show that nothing accumulates.

Each of the N slots runs one client after another: it connects, starts a live session (16 kHz pcm16, 20 ms
frames at real-time pace, white noise), streams for a random 10-40 s (`--session-s`), then ends it with a
flush, or, one time in `--abrupt-every`, vanishes (a TCP reset with frames in flight). Measured:
- the server's resident memory (VmRSS of its process) every `--sample-s` seconds, and its slope (least
  squares over the samples after the first `--warmup-s`, in MB per hour);
- sample accounting of every session: a flushed one got one output sample per input sample plus the tail
  (samples_out = samples_in + L, and the server's `end` agrees); for a vanished one the server's log line
  `session ended` must account for every sample it read (samples_in + samples_dropped = samples_fed);
- per-sample latency (capture of input n to arrival of output n + L, as `bench e2e` defines it), p50 and p95
  per minute of the run;
- degraded seconds (fewer steps, pass-through) and any error reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np

RATE = 16000
WARMUP_S = 1.0  # the first second of each session is not steady state (as in bench e2e)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the run")
    parser.add_argument("--streams", type=int, default=16, help="live streams at once")
    parser.add_argument("--model", default="auto",
                        help="the server's model: 'auto' (tiny if its weights exist, else random), 'tiny', "
                             "'random', or a SAM Audio checkpoint directory")
    parser.add_argument("--no-speech-expert", action="store_true",
                        help="default model: its networks alone (what holds many streams on a small machine)")
    parser.add_argument("--frame-ms", type=float, default=20.0, help="audio per frame")
    parser.add_argument("--session-s", type=float, nargs=2, default=(10.0, 40.0), metavar=("MIN", "MAX"),
                        help="how long each client streams before it leaves (uniform between MIN and MAX)")
    parser.add_argument("--abrupt-every", type=int, default=5,
                        help="one client in this many vanishes without a flush (0: none)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="how often the server's memory is read")
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="memory samples before this are left out of the slope (allocators settle)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--seed", type=int, default=0)


@dataclass
class SessionRecord:
    session: str
    sent: int  # samples sent
    received: int  # samples of replies received, tail included
    latency: int  # L
    abrupt: bool
    end: dict | None
    errors: list[str] = field(default_factory=list)


@dataclass
class Soak:
    began: float
    records: list[SessionRecord] = field(default_factory=list)
    delays: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (seconds into the run, delays)


async def one_client(url: str, seconds: float, abrupt: bool, frame: int, seed: int, soak: Soak) -> None:
    from samstream.clients.ws_client import SeparationClient, ServerError
    from samstream.clients.cli.bench_e2e import noise, sample_delays

    audio = noise(seconds, RATE, seed)
    client = await SeparationClient.connect(url)
    started = await client.start(RATE, spans=[("+", 0.5, 1.5)], format="pcm16", pacing="live")
    latency = started["latency_samples"]
    record = SessionRecord(started["session"], 0, 0, latency, abrupt, None)
    outputs = []

    async def receive() -> None:
        while True:
            try:
                output = await client.receive_audio()
            except ServerError as error:
                record.errors.append(error.code)
                continue
            if output is None:
                return
            outputs.append(output)

    receiver = asyncio.create_task(receive())
    begin = time.perf_counter()
    try:
        for first in range(0, len(audio), frame):
            piece = audio[first : first + frame]
            await asyncio.sleep(max(0.0, begin + (first + len(piece)) / RATE - time.perf_counter()))
            await client.send_audio(piece)
            record.sent += len(piece)
        if abrupt:
            await asyncio.sleep(0.05)  # frames in flight, then a reset
            client.ws.transport.abort()
            receiver.cancel()
        else:
            record.end = await client.flush()
            await receiver
            await client.close()
    except Exception as error:  # reported, not fatal: the soak goes on
        record.errors.append(f"{type(error).__name__}: {error}")
        receiver.cancel()
        client.ws.transport.abort()
    record.received = sum(len(o) for o in outputs)
    soak.records.append(record)
    if not abrupt and outputs:
        count = min(record.sent, record.received - latency) - latency
        delays = sample_delays([len(o) for o in outputs], [o.received_at for o in outputs], latency, count,
                               begin, RATE)
        soak.delays.append((begin - soak.began, delays[round(WARMUP_S * RATE) :]))


async def slot(url: str, index: int, deadline: float, args: argparse.Namespace, soak: Soak) -> None:
    rng = random.Random(args.seed * 1000 + index)
    frame = max(1, round(args.frame_ms * RATE / 1000))
    count = 0
    await asyncio.sleep(index * args.frame_ms / 1000 / max(1, args.streams))  # spread the frames in time
    while time.perf_counter() < deadline:
        seconds = min(rng.uniform(*args.session_s), max(1.0, deadline - time.perf_counter()))
        abrupt = args.abrupt_every > 0 and rng.randrange(args.abrupt_every) == 0
        await one_client(url, seconds, abrupt, frame, rng.randrange(2**31), soak)
        count += 1


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return math.nan


async def sample_memory(pid: int, began: float, every: float, stop: asyncio.Event, out: list) -> None:
    while not stop.is_set():
        out.append((time.perf_counter() - began, rss_mb(pid)))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


def slope_mb_per_hour(samples: list[tuple[float, float]], warmup_s: float) -> float:
    points = np.array([(t, mb) for t, mb in samples if t >= warmup_s])
    if len(points) < 3:
        return math.nan
    slope, _ = np.polyfit(points[:, 0], points[:, 1], 1)
    return float(slope * 3600.0)


def server_sessions(log_path: str) -> dict[str, dict]:
    """The server's `session ended` log lines, by session id."""
    ended = {}
    with open(log_path) as log:
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "session ended":
                ended[entry["session"]] = entry
    return ended


def check_accounting(records: list[SessionRecord], ended: dict[str, dict]) -> list[str]:
    """Every problem of sample accounting, one line each (empty: exact)."""
    problems = []
    for r in records:
        if r.errors:
            problems.append(f"{r.session}: errors {r.errors[:3]}")
        if not r.abrupt:
            if r.end is None:
                continue  # counted among the errors
            if r.received != r.sent + r.latency:
                problems.append(f"{r.session}: {r.received} samples back for {r.sent} sent (L {r.latency})")
            if r.end["samples_in"] != r.sent or r.end["samples_out"] != r.sent + r.latency:
                problems.append(f"{r.session}: end says {r.end['samples_in']} in, {r.end['samples_out']} out")
        log = ended.get(r.session)
        if log is None:
            problems.append(f"{r.session}: no 'session ended' line in the server's log")
        elif log["samples_in"] + log["samples_dropped"] != log["samples_fed"]:
            problems.append(f"{r.session}: the server read {log['samples_fed']} samples, answered {log['samples_in']} "
                            f"and dropped {log['samples_dropped']}")
        elif r.abrupt and log["samples_fed"] > r.sent:
            problems.append(f"{r.session}: the server read {log['samples_fed']} samples of {r.sent} sent")
    return problems


def run(args: argparse.Namespace) -> int:
    from samstream.clients.cli.bench_e2e import start_server, stop_server
    from samstream.model.embedded import shipped_weights

    model = args.model
    if model == "auto":
        model = "tiny" if shipped_weights().is_file() else "random"
    extra = ("--no-speech-expert",) if args.no_speech_expert else ()
    process, url, log_path = start_server(model, args.threads, args.streams + 2, extra=extra)
    soak = Soak(began=time.perf_counter())
    memory: list[tuple[float, float]] = []

    async def main() -> None:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_memory(process.pid, soak.began, args.sample_s, stop, memory))
        deadline = soak.began + args.minutes * 60.0
        await asyncio.gather(*(slot(url, i, deadline, args, soak) for i in range(args.streams)))
        await asyncio.sleep(2.0)  # the last sessions' log lines
        stop.set()
        await sampler

    try:
        asyncio.run(main())
    finally:
        stop_server(process)
    ended = server_sessions(log_path)
    problems = check_accounting(soak.records, ended)
    minutes = math.ceil(args.minutes)
    by_minute = []
    for minute in range(minutes):
        chunk = [d for t, d in soak.delays if minute * 60 <= t < (minute + 1) * 60]
        values = np.concatenate(chunk) if chunk else np.zeros(0)
        by_minute.append({"minute": minute, "sessions": len(chunk),
                          "p50_ms": round(float(np.percentile(values, 50)) * 1000, 1) if len(values) else None,
                          "p95_ms": round(float(np.percentile(values, 95)) * 1000, 1) if len(values) else None})
    flushed = [r for r in soak.records if not r.abrupt]
    degraded = {"fewer_steps": 0.0, "pass_through": 0.0}
    for r in flushed:
        for name, seconds in ((r.end or {}).get("metrics", {}).get("degraded_s") or {}).items():
            degraded[name] = degraded.get(name, 0.0) + seconds
    all_delays = np.concatenate([d for _, d in soak.delays]) if soak.delays else np.zeros(0)
    rss = [mb for _, mb in memory]
    result = {
        "model": model, "speech_expert": not args.no_speech_expert, "minutes": args.minutes,
        "streams": args.streams, "sessions": len(soak.records), "abrupt": len(soak.records) - len(flushed),
        "audio_s": round(sum(r.sent for r in soak.records) / RATE, 1),
        "latency_ms": round(1000 * soak.records[0].latency / RATE, 2) if soak.records else None,
        "lost_samples": sum(max(0, r.sent + r.latency - r.received) for r in flushed),
        "accounting_exact": not problems, "accounting_problems": problems[:20],
        "rss_mb_first": round(rss[0], 1) if rss else None, "rss_mb_last": round(rss[-1], 1) if rss else None,
        "rss_mb_max": round(max(rss), 1) if rss else None,
        "rss_slope_mb_per_hour": round(slope_mb_per_hour(memory, args.warmup_s), 2),
        "rss_mb": [[round(t, 1), round(mb, 1)] for t, mb in memory],
        "latency_ms_p50": round(float(np.percentile(all_delays, 50)) * 1000, 1) if len(all_delays) else None,
        "latency_ms_p95": round(float(np.percentile(all_delays, 95)) * 1000, 1) if len(all_delays) else None,
        "by_minute": by_minute, "degraded_s": {k: round(v, 3) for k, v in degraded.items()},
    }
    print(f"soak: {args.streams} live streams for {args.minutes:g} min ({model}): {result['sessions']} sessions "
          f"({result['abrupt']} vanished), {result['audio_s']} s of audio; RSS {result['rss_mb_first']} -> "
          f"{result['rss_mb_last']} MB (slope {result['rss_slope_mb_per_hour']} MB/h after {args.warmup_s:g} s); "
          f"accounting {'exact' if not problems else f'{len(problems)} PROBLEMS'}, {result['lost_samples']} lost "
          f"samples; latency p50 {result['latency_ms_p50']} ms, p95 {result['latency_ms_p95']} ms "
          f"(L {result['latency_ms']} ms); degraded {result['degraded_s']}")
    for row in by_minute:
        print(f"  minute {row['minute']:3d}: {row['sessions']:3d} sessions, p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms")
    if args.json:
        print(json.dumps(result))
    return 0 if not problems else 1

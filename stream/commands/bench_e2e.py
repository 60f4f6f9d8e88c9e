"""`samstream bench e2e`: end-to-end latency over WebSocket on loopback, and real-time stream capacity.

It starts `samstream serve` as a separate process on a free loopback port (as in production: the
clients of this benchmark do not share the server's interpreter) and streams synthetic audio at
real-time pace, one frame every `--frame-ms`.

Latency of input sample n = arrival time of output sample n + L (L = latency_samples, the session's
fixed latency) minus the instant sample n was captured (stream start + n / rate; its frame leaves once
the frame's last sample is captured). So it is what a listener gets: the algorithmic latency, the
client's framing, hop buffering, compute, queueing and both transport directions. First-sample latency
is that of sample 0; the steady-state p50/p95 cover the samples captured after the first second (the
flushed tail is excluded).

Capacity: N clients stream at once for `--ramp-seconds`, N = 1, 2, 4, 8, 12, 16, 20, 24, 32, 48, 64, ...;
N holds when no stream was degraded (fewer steps or pass-through) and every stream's steady p95 stays
within L + frame + `--latency-budget-ms`. `max_realtime_ws_streams` is the largest N that held before
the first that did not. The clients run on the same machine as the server and take CPU from it.
"""

from __future__ import annotations

import argparse
import json
import math
import time

RAMP = (1, 2, 4, 8, 12, 16, 20, 24, 32, 48, 64, 96, 128)
WARMUP_S = 1.0  # samples sent in the first second are not steady state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="auto",
                        help="'auto' (tiny if its weights exist, else 'random': the tiny architecture untrained, "
                             "same speed), 'tiny', 'random', or a SAM Audio checkpoint directory")
    parser.add_argument("--rate", type=int, default=16000, help="client sample rate")
    parser.add_argument("--frame-ms", type=float, default=20.0, help="audio per WebSocket frame")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the single-stream latency run")
    parser.add_argument("--ramp-seconds", type=float, default=4.0, help="length of each capacity step")
    parser.add_argument("--max-streams", type=int, default=64, help="largest stream count to try (0: skip)")
    parser.add_argument("--latency-budget-ms", type=float, default=150.0,
                        help="allowed p95 beyond the algorithmic latency and one frame")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")


def percentile_ms(values, q: float) -> float:
    import numpy as np

    return round(float(np.percentile(values, q)) * 1000.0, 2) if len(values) else math.nan


async def stream_realtime(url: str, audio, rate: int, frame: int, start_delay: float = 0.0) -> dict:
    """One client: stream `audio` at real-time pace; returns per-sample latencies and the end message."""
    import asyncio

    import numpy as np

    from samstream.clients.ws_client import SeparationClient

    await asyncio.sleep(start_delay)
    async with await SeparationClient.connect(url) as client:
        started = await client.start(rate, spans=[("+", 0.5, 1.5)], format="pcm16")
        latency = started["latency_samples"]
        outputs = []

        async def receive() -> None:
            while (output := await client.receive_audio()) is not None:
                outputs.append(output)

        receiver = asyncio.create_task(receive())
        begin = time.perf_counter()
        for first in range(0, len(audio), frame):
            piece = audio[first : first + frame]
            # a live source hands over a frame once its last sample was captured
            await asyncio.sleep(max(0.0, begin + (first + len(piece)) / rate - time.perf_counter()))
            await client.send_audio(piece)
        end = await client.flush()
        await receiver
    ends = np.cumsum([len(o) for o in outputs])
    arrived = np.array([o.received_at for o in outputs])
    n = np.arange(len(audio))
    # output sample n + L answers input n; skip the tail (its frame arrives only after the flush)
    answered = n + latency < len(audio)
    frame_of_output = np.searchsorted(ends, n[answered] + latency, side="right")
    delays = arrived[frame_of_output] - (begin + n[answered] / rate)
    steady = delays[n[answered] >= WARMUP_S * rate]
    return {"latency_samples": latency, "latency_ms": started["latency_ms"], "first_s": float(delays[0]),
            "steady_s": steady, "end": end}


def start_server(model: str, threads: int, max_sessions: int):
    """`samstream serve` on a free loopback port, as a child process; returns (process, url, log path)."""
    import os
    import subprocess
    import sys
    import tempfile

    from samstream.model.errors import UserFacingError

    log = tempfile.NamedTemporaryFile("w+", prefix="samstream-bench-e2e-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "samstream.stream.cli", "serve", "--model", model, "--port", "0",
               "--threads", str(threads), "--max-sessions", str(max_sessions), "--no-warmup"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        log.seek(0)
        for line in log:
            try:
                entry = json.loads(line)
            except ValueError:  # not a log entry, or one still being written
                continue
            if entry.get("event") == "listening":
                return process, entry["url"], log.name
        if process.poll() is not None:
            log.seek(0)
            raise UserFacingError(f"the server did not start:\n{log.read()[-2000:]}")
        time.sleep(0.2)
    process.kill()
    raise UserFacingError(f"the server did not start within 300 s (log: {log.name})")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import subprocess

    import numpy as np

    from samstream.model.embedded import WEIGHTS_DIR

    model = args.model
    if model == "auto":
        model = "tiny" if (WEIGHTS_DIR / "tiny.safetensors").is_file() else "random"
        if model == "random":
            print(f"the tiny model's weights ({WEIGHTS_DIR / 'tiny.safetensors'}) do not exist yet: measuring the "
                  "same architecture with random weights (same compute); pass --model to choose")
    rate, frame = args.rate, max(1, round(args.frame_ms * args.rate / 1000))
    rng = np.random.default_rng(0)

    def clip(seconds: float):
        return (0.1 * rng.standard_normal(round(seconds * rate))).astype(np.float32)

    process, url, log_path = start_server(model, args.threads, max(1, args.max_streams))
    try:
        single = asyncio.run(stream_realtime(url, clip(args.seconds), rate, frame))
        result = {
            "model": model, "rate": rate, "frame_ms": args.frame_ms, "threads": args.threads,
            "latency_ms": single["latency_ms"],
            "ws_first_sample_ms": round(single["first_s"] * 1000.0, 2),
            "ws_latency_ms_p50": percentile_ms(single["steady_s"], 50),
            "ws_latency_ms_p95": percentile_ms(single["steady_s"], 95),
            "degraded_s": single["end"]["metrics"]["degraded_s"],
        }
        print(f"single stream ({model}, {rate} Hz, {args.frame_ms:g} ms frames): algorithmic latency "
              f"{result['latency_ms']:.1f} ms, first sample {result['ws_first_sample_ms']:.1f} ms, steady p50 "
              f"{result['ws_latency_ms_p50']:.1f} ms, p95 {result['ws_latency_ms_p95']:.1f} ms")

        limit_s = (single["latency_ms"] + args.frame_ms + args.latency_budget_ms) / 1000.0
        steps, held = [], 0
        for count in (n for n in RAMP if n <= args.max_streams):
            delays = [frame / rate * i / count for i in range(count)]  # spread the frames of the streams over time

            async def ramp_step():
                return await asyncio.gather(*(stream_realtime(url, clip(args.ramp_seconds), rate, frame, delay)
                                              for delay in delays))

            runs = asyncio.run(ramp_step())
            p95 = max(float(np.percentile(r["steady_s"], 95)) for r in runs)
            degraded = sum(sum(r["end"]["metrics"]["degraded_s"].values()) for r in runs)
            ok = degraded == 0 and p95 <= limit_s
            steps.append({"streams": count, "p95_ms": round(p95 * 1000, 2), "degraded_s": round(degraded, 3),
                          "held": ok})
            print(f"{count:4d} streams: worst p95 {p95 * 1000:7.1f} ms, degraded {degraded:.2f} s -> "
                  f"{'real time' if ok else 'NOT real time'}")
            if not ok:
                break
            held = count
        result["max_realtime_ws_streams"] = held if args.max_streams else None
        result["p95_limit_ms"] = round(limit_s * 1000, 2)
        result["ramp"] = steps
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    if args.max_streams:
        print(f"max real-time WebSocket streams: {result['max_realtime_ws_streams']} "
              f"(p95 within {result['p95_limit_ms']:.0f} ms, no degradation; clients on the same machine)")
    if args.json:
        print(json.dumps(result))
    return 0

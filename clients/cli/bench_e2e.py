"""`samstream bench e2e`: end-to-end latency on loopback over WebSocket, over WebRTC (the Python aiortc
client) and from the browser client in headless browsers, and the WebSocket real-time stream capacity.

It starts `samstream serve` as a separate process on a free loopback port (as in
production: the clients of this benchmark do not share the server's interpreter); every leg streams
synthetic audio at real-time pace. The WebRTC and browser legs run inside a private network namespace
(clients/cli/netns.py: loopback plus a veth pair holding a private address that both peers gather; aiortc
offers no loopback candidates), with a server of their own: no packet goes to this machine's interface
addresses. `--legs` chooses the legs; a leg that cannot run here (no root for the namespace, the browser
leg without `bash install.sh test`) says why in the output and in the JSON.

Latency of input sample n = arrival time of the output sample that answers it minus the instant sample n
was captured (stream start + n / rate; its frame leaves once the frame's last sample is captured). So it
is what a listener gets: the algorithmic latency, the client's framing, hop buffering, compute, queueing,
codecs, jitter buffers and both transport directions. First-sample latency is that of sample 0; the
steady-state p50/p95 cover the samples captured after the first second.
- WebSocket (`--frame-ms` frames, `--rate`): output sample n + L answers input n (L = latency_samples,
  the session's fixed latency); the flushed tail is excluded.
- WebRTC (20 ms Opus frames, 48 kHz): the call hears "original" (target + residual, i.e. its own input
  delayed), and cross-correlation finds the delay in samples (L plus both Opus look-aheads); arrival times
  are those of the frames the client's jitter buffer hands out.
- Browser: the page (clients/web) at "original" records its input and what it hears on its AudioContext
  clock; the round trip is the delay between the two, found per quarter second by cross-correlation
  (clients/cli/bench_browser.py). It covers encoding, network, server, decoding and the browser's
  jitter buffer, not the sound card's buffers. Chromium sends its fake microphone (a WAV); Firefox, whose
  fake microphone is a tone, sends the same WAV through the page's audio-file input.

Where the time goes: around each WebSocket run the bench reads the server's /metrics histograms and reports,
for the frames of that run, p50/p95 of each stage (`server` in the JSON): `hop_wait` (a complete hop waiting
for the round that takes it: queueing behind the round in progress, batch formation), `round` (one batched
processor call), `handoff` (worker thread -> event loop), `send_wait` (output ready -> written: reply order
and the socket), `loop_lag` (how late the event loop runs a timer), and `frame_response` (frame in -> its
output out, the server's whole share).

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

from samstream.clients.cli import netns

RAMP = (1, 2, 4, 8, 12, 16, 20, 24, 32, 48, 64, 96, 128)
ISOLATED_LEGS = ("webrtc", "browser")  # they run in a private network namespace (the module docstring)
WARMUP_S = 1.0  # samples sent in the first second are not steady state
LEGS = ("ws", "webrtc", "browser")
SPANS = [["+", 0.5, 1.5]]  # the prompt of every leg: a span needs no text encoder


def names(allowed: tuple[str, ...]):
    """argparse type: a comma-separated list of names out of `allowed`."""

    def parse(text: str) -> list[str]:
        chosen = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}, comma-separated")
        return chosen

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="auto",
                        help="'auto' (tiny if its weights exist, else 'random': the tiny architecture untrained, "
                             "same speed), 'tiny', 'random', or a SAM Audio checkpoint directory")
    parser.add_argument("--rate", type=int, default=16000,
                        help="client sample rate of the WebSocket leg (WebRTC runs at 48 kHz)")
    parser.add_argument("--frame-ms", type=float, default=20.0, help="audio per WebSocket frame (WebRTC: 20 ms)")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="length of each single-stream latency run (WebSocket, WebRTC, browser)")
    parser.add_argument("--ramp-seconds", type=float, default=4.0, help="length of each capacity step")
    parser.add_argument("--max-streams", type=int, default=64, help="largest stream count to try (0: skip)")
    parser.add_argument("--ramp", type=lambda text: [int(n) for n in text.split(",")], default=list(RAMP),
                        help="stream counts of the capacity steps, comma-separated (default: 1,2,4,8,12,16,...)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every step of the ramp, even after one did not hold real time (to see where the "
                             "time goes at a load the machine cannot hold)")
    parser.add_argument("--latency-budget-ms", type=float, default=150.0,
                        help="allowed p95 beyond the algorithmic latency and one frame")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--no-speech-expert", action="store_true",
                        help="default model: its networks alone, without the DeepFilterNet3 speech expert")
    parser.add_argument("--legs", type=names(LEGS), default=list(LEGS),
                        help="what to measure, comma-separated: ws (latency and capacity), webrtc (the Python "
                             "aiortc client), browser (the browser client); default: all")
    parser.add_argument("--browsers", type=names(("chromium", "firefox")), default=["chromium", "firefox"],
                        help="browsers of the browser leg, comma-separated (the first gives the browser_* "
                             "headline figures); default: chromium,firefox")
    from samstream.clients.cli import bench_ray

    bench_ray.add_arguments(parser)  # --ray: the single-process server vs Ray Serve replicas (bench_ray.py)


def percentile_ms(values, q: float) -> float:
    import numpy as np

    return round(float(np.percentile(values, q)) * 1000.0, 2) if len(values) else math.nan


def sample_delays(lengths, arrivals, offset: int, count: int, start: float, rate: int):
    """Seconds from the capture of input sample n (at `start` + n / rate) to the arrival of output sample
    n + `offset` that answers it, for n < `count`: output frames of `lengths` samples arrived at `arrivals`."""
    import numpy as np

    ends = np.cumsum(lengths)
    n = np.arange(max(0, count))
    frame = np.searchsorted(ends, n + offset, side="right")
    return np.asarray(arrivals)[frame] - (start + n / rate)


async def stream_realtime(url: str, audio, rate: int, frame: int, start_delay: float = 0.0) -> dict:
    """One client: stream `audio` at real-time pace; returns per-sample latencies and the end message."""
    import asyncio

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
    # output sample n + L answers input n; skip the tail (its frame arrives only after the flush)
    delays = sample_delays([len(o) for o in outputs], [o.received_at for o in outputs], latency,
                           len(audio) - latency, begin, rate)
    return {"latency_samples": latency, "latency_ms": started["latency_ms"], "first_s": float(delays[0]),
            "steady_s": delays[round(WARMUP_S * rate) :], "end": end}


async def webrtc_realtime(url: str, audio) -> dict:
    """One WebRTC call with the Python client, hearing "original" (its input, delayed): the lag found by
    cross-correlation, and per-sample latencies on the client's clock (see the module's docstring)."""
    from samstream.clients.webrtc_client import FRAME, RATE, WebRTCCall
    from samstream.clients.cli.bench_browser import best_lag

    call = WebRTCCall(audio, {"spans": SPANS}, output={"target": 1.0, "residual": 1.0})
    await call.start(url)
    await call.wait_sent()
    await call.wait_received(call.sent_samples)
    heard = await call.finish()
    lag = best_lag(heard.audio, audio, RATE)
    # The source hands over frame [p, p + FRAME) at started + p / RATE: as if its last sample had just been
    # captured, so sample n is captured at started + (n - FRAME) / RATE.
    delays = sample_delays([len(frame) for frame in call.frames], call.arrivals, lag,
                           min(len(audio), len(heard.audio) - lag), call.source.started - FRAME / RATE, RATE)
    return {"lag_samples": lag, "first_s": float(delays[0]), "steady_s": delays[round(WARMUP_S * RATE) :]}


def start_server(model: str, threads: int, max_sessions: int, extra: tuple[str, ...] = ()):
    """`samstream serve` (with `extra` arguments) on a free loopback port, as a child process; returns (process,
    url, log path)."""
    import os
    import subprocess
    import sys
    import tempfile

    from samstream.model.errors import UserFacingError

    log = tempfile.NamedTemporaryFile("w+", prefix="samstream-bench-e2e-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "samstream", "serve", "--model", model, "--port", "0",
               "--threads", str(threads), "--max-sessions", str(max_sessions), "--no-warmup", *extra]
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


def stop_server(process) -> None:
    """SIGTERM (a graceful shutdown), then a kill if it takes over a minute."""
    import signal
    import subprocess

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def isolated_legs(args: argparse.Namespace, model: str, legs: list[str]) -> dict:
    """Run `legs` (WebRTC, browser) by this command inside a private network namespace, with a server of their
    own there; their figures, or why they could not run."""
    import subprocess
    import sys

    why = netns.unavailable()
    if why is not None:
        print(f"{', '.join(legs)}: skipped: {why}")
        skipped = {}
        if "webrtc" in legs:
            skipped["webrtc"] = {"skipped": why}
        if "browser" in legs:
            skipped["browser"] = {"name": args.browsers[0], "skipped": why}
            skipped["browsers"] = {name: {"name": name, "skipped": why} for name in args.browsers}
        return skipped
    argv = [sys.executable, "-m", "samstream", "bench", "e2e", "--model", model, "--legs", ",".join(legs),
            "--browsers", ",".join(args.browsers), "--seconds", str(args.seconds), "--threads", str(args.threads),
            "--max-streams", "1", "--json", *(["--no-speech-expert"] if args.no_speech_expert else [])]
    child = subprocess.Popen(netns.isolated_command(argv), stdout=subprocess.PIPE, text=True)
    last = ""
    for line in child.stdout:
        last = line
        if not line.startswith("{"):
            print(line, end="", flush=True)
    if child.wait() not in (0, 1):
        return {leg: {"error": f"the isolated run failed (exit status {child.returncode})"} for leg in legs}
    figures = json.loads(last)
    keep = ("webrtc_", "browser")
    result = {key: value for key, value in figures.items() if key.startswith(keep)}
    result["isolated_network"] = f"private namespace ({netns.ADDRESS})"
    return result


def run(args: argparse.Namespace) -> int:
    from samstream.model.embedded import shipped_weights

    if args.ray:
        import sys

        from samstream.clients.cli import bench_ray

        return bench_ray.run(args, sys.modules[__name__])
    model = args.model
    if model == "auto":
        model = "tiny" if shipped_weights().is_file() else "random"
        if model == "random":
            print(f"the tiny model's weights ({shipped_weights()}) do not exist yet: measuring the "
                  "same architecture with random weights (same compute); pass --model to choose")
    result = {"model": model, "threads": args.threads, "legs": args.legs, "speech_expert": not args.no_speech_expert}
    isolated = [leg for leg in args.legs if leg in ISOLATED_LEGS]
    here = [leg for leg in args.legs if leg not in isolated or netns.inside()]
    if isolated and not netns.inside():
        result.update(isolated_legs(args, model, isolated))
    if here:
        extra = ("--no-speech-expert",) if args.no_speech_expert else ()
        process, url, _ = start_server(model, args.threads, max(1, args.max_streams), extra=extra)
        try:
            if "ws" in here:
                result.update(ws_leg(args, url))
            if "webrtc" in here:
                result.update(webrtc_leg(args, url))
            if "browser" in here:
                result.update(browser_leg(args, url))
        finally:
            stop_server(process)
    result["network"] = f"private namespace ({netns.ADDRESS})" if netns.inside() else "loopback"
    if args.json:
        print(json.dumps(result))
    failed = [name for name, figures in result.get("browsers", {}).items() if "error" in figures]
    return 1 if failed else 0


def noise(seconds: float, rate: int, seed: int = 0):
    """White noise at -20 dBFS: every stretch of it is unlike every other, so cross-correlation is unambiguous."""
    import numpy as np

    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(np.float32)


STAGES = ("hop_wait", "round", "handoff", "send_wait", "loop_lag", "frame_response")


def server_histograms(url: str) -> dict[str, tuple[list[float], list[float]]]:
    """The server's timing histograms from /metrics: name -> (upper bounds, cumulative counts)."""
    import urllib.request

    text = urllib.request.urlopen("http" + url.removeprefix("ws") + "/metrics", timeout=10).read().decode()
    histograms: dict[str, tuple[list[float], list[float]]] = {}
    for line in text.splitlines():
        if not line.startswith("samstream_") or "_seconds_bucket{" not in line:
            continue
        name = line[len("samstream_") : line.index("_seconds_bucket")]
        bound = line.split('le="', 1)[1].split('"', 1)[0]
        bounds, counts = histograms.setdefault(name, ([], []))
        bounds.append(math.inf if bound == "+Inf" else float(bound))
        counts.append(float(line.rsplit(" ", 1)[1]))
    return histograms


def histogram_quantile(bounds: list[float], cumulative: list[float], q: float) -> float | None:
    """Prometheus' estimate: linear within the bucket that holds the q-quantile."""
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in zip(bounds, cumulative):
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


def stage_figures(before: dict, after: dict) -> dict:
    """p50/p95 (ms) of each stage over what happened between two readings of the server's histograms."""
    figures = {}
    for name in STAGES:
        if name not in after:
            continue
        bounds, counts = after[name]
        earlier = before.get(name, (bounds, [0.0] * len(counts)))[1]
        window = [a - b for a, b in zip(counts, earlier)]
        for q in (50, 95):
            value = histogram_quantile(bounds, window, q / 100)
            figures[f"{name}_ms_p{q}"] = None if value is None else round(1000 * value, 2)
    return figures


def describe_stages(figures: dict) -> str:
    return ", ".join(f"{name} {figures.get(f'{name}_ms_p95')}" for name in STAGES if f"{name}_ms_p95" in figures)


async def loop_lag(out: list[float], every: float = 0.02) -> None:
    """How late this process's event loop runs a timer (the clients' share of the machine's overload)."""
    import asyncio

    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + every
        await asyncio.sleep(every)
        out.append(max(0.0, loop.time() - due))


def ws_leg(args: argparse.Namespace, url: str) -> dict:
    import asyncio

    import numpy as np

    rate, frame = args.rate, max(1, round(args.frame_ms * args.rate / 1000))
    before = server_histograms(url)
    single = asyncio.run(stream_realtime(url, noise(args.seconds, rate), rate, frame))
    single_stages = stage_figures(before, server_histograms(url))
    result = {
        "rate": rate, "frame_ms": args.frame_ms,
        "latency_ms": single["latency_ms"],
        "ws_first_sample_ms": round(single["first_s"] * 1000.0, 2),
        "ws_latency_ms_p50": percentile_ms(single["steady_s"], 50),
        "ws_latency_ms_p95": percentile_ms(single["steady_s"], 95),
        "degraded_s": single["end"]["metrics"]["degraded_s"], "server": single_stages,
    }
    print(f"WebSocket, single stream ({rate} Hz, {args.frame_ms:g} ms frames): algorithmic latency "
          f"{result['latency_ms']:.1f} ms, first sample {result['ws_first_sample_ms']:.1f} ms, steady p50 "
          f"{result['ws_latency_ms_p50']:.1f} ms, p95 {result['ws_latency_ms_p95']:.1f} ms; server p95 (ms): "
          f"{describe_stages(single_stages)}")

    limit_s = (single["latency_ms"] + args.frame_ms + args.latency_budget_ms) / 1000.0
    steps, held = [], 0
    for count in (n for n in args.ramp if n <= args.max_streams):
        delays = [frame / rate * i / count for i in range(count)]  # spread the frames of the streams over time

        async def ramp_step():
            lags: list[float] = []
            watch = asyncio.ensure_future(loop_lag(lags))
            try:
                return await asyncio.gather(*(stream_realtime(url, noise(args.ramp_seconds, rate, seed), rate, frame,
                                                              delay) for seed, delay in enumerate(delays, 1))), lags
            finally:
                watch.cancel()

        before = server_histograms(url)
        runs, client_lags = asyncio.run(ramp_step())
        stages = stage_figures(before, server_histograms(url))
        p95 = max(float(np.percentile(r["steady_s"], 95)) for r in runs)
        pooled = np.concatenate([r["steady_s"] for r in runs])
        degraded = sum(sum(r["end"]["metrics"]["degraded_s"].values()) for r in runs)
        ok = degraded == 0 and p95 <= limit_s
        steps.append({"streams": count, "p95_ms": round(p95 * 1000, 2), "p50_ms_all": percentile_ms(pooled, 50),
                      "p95_ms_all": percentile_ms(pooled, 95), "degraded_s": round(degraded, 3), "held": ok,
                      "server": stages, "client_loop_lag_ms_p95": percentile_ms(client_lags, 95)})
        print(f"{count:4d} streams: worst p95 {p95 * 1000:7.1f} ms (all streams: p50 {steps[-1]['p50_ms_all']}, p95 "
              f"{steps[-1]['p95_ms_all']}), degraded {degraded:.2f} s -> {'real time' if ok else 'NOT real time'}; "
              f"server p95 (ms): {describe_stages(stages)}; the clients' own event loop lag p95 "
              f"{steps[-1]['client_loop_lag_ms_p95']} ms")
        if ok and all(step["held"] for step in steps):
            held = count
        elif not args.keep_going:
            break
    result["max_realtime_ws_streams"] = held if args.max_streams else None
    result["p95_limit_ms"] = round(limit_s * 1000, 2)
    result["ramp"] = steps
    if args.max_streams:
        print(f"max real-time WebSocket streams: {held} (p95 within {result['p95_limit_ms']:.0f} ms, no "
              "degradation; clients on the same machine)")
    return result


def webrtc_leg(args: argparse.Namespace, url: str) -> dict:
    import asyncio

    from samstream.clients.webrtc_client import RATE

    call = asyncio.run(webrtc_realtime(url, noise(args.seconds, RATE)))
    result = {
        "webrtc_lag_samples": call["lag_samples"],
        "webrtc_first_sample_ms": round(call["first_s"] * 1000.0, 2),
        "webrtc_latency_ms_p50": percentile_ms(call["steady_s"], 50),
        "webrtc_latency_ms_p95": percentile_ms(call["steady_s"], 95),
    }
    print(f"WebRTC, Python aiortc client (48 kHz, 20 ms Opus frames): output lags input by "
          f"{call['lag_samples']} samples ({1000 * call['lag_samples'] / RATE:.1f} ms), first sample "
          f"{result['webrtc_first_sample_ms']:.1f} ms, steady p50 {result['webrtc_latency_ms_p50']:.1f} ms, "
          f"p95 {result['webrtc_latency_ms_p95']:.1f} ms")
    return result


def browser_leg(args: argparse.Namespace, url: str) -> dict:
    """Each of --browsers in turn; the first one's figures are the browser_* headline keys."""
    import asyncio
    import tempfile
    from pathlib import Path

    from samstream.clients.cli.bench_browser import measure_round_trip, unavailable

    page_url = "http" + url.removeprefix("ws")  # the server serves the page where it serves the socket
    browsers: dict[str, dict] = {}
    for name in args.browsers:
        why = unavailable(name)
        if why is None:
            with tempfile.TemporaryDirectory(prefix=f"samstream-bench-{name}-") as work_dir:
                # longer than the run: Chromium loops its fake microphone's file, and repeats would alias
                audio = noise(args.seconds + 30.0, 48000, seed=7)
                try:
                    browsers[name] = asyncio.run(measure_round_trip(name, page_url, audio, args.seconds,
                                                                    Path(work_dir), SPANS))
                except Exception as error:  # reported, and the other figures still come out
                    browsers[name] = {"name": name, "error": f"{type(error).__name__}: {error}"}
        else:
            browsers[name] = {"name": name, "skipped": why}
        figures = browsers[name]
        if "latency_ms_p50" in figures:
            print(f"browser, {name} {figures['version']} (input: {figures['input']}): round trip p50 "
                  f"{figures['latency_ms_p50']:.1f} ms, p95 {figures['latency_ms_p95']:.1f} ms")
        else:
            print(f"browser, {name}: {'skipped' if 'skipped' in figures else 'FAILED'}: "
                  f"{figures.get('skipped') or figures['error']}")
    headline = browsers[args.browsers[0]]
    result = {"browser": {key: headline[key] for key in ("name", "version", "input", "skipped", "error")
                          if key in headline},
              "browsers": browsers}
    if "latency_ms_p50" in headline:
        result["browser_latency_ms_p50"] = headline["latency_ms_p50"]
        result["browser_latency_ms_p95"] = headline["latency_ms_p95"]
    return result

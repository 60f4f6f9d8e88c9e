"""`samstream bench stream`: the streaming engine's cost, latency, exactness and capacity on this machine.

Per model it prints and (with --json) reports:
  rtf                              model compute time / audio time, one stream
  algorithmic_latency_ms           the session's fixed latency L at the model rate (no resampling)
  latency_ms_at_48k                L for a 48 kHz client (adds the streaming resamplers' hold-back)
  pipeline_us_per_10ms             everything but the model (resampling, ring buffers, crossfades,
                                   accounting) per 10 ms of audio, 48 kHz client, 10 ms frames
  stream_vs_offline_snr_db         streamed output vs the offline reference of the same model
                                   (block-causal: the offline causal run; sliding window: the windowed
                                   reference), frame sizes drawn at random
  max_realtime_streams             concurrent streams one batched processor call keeps in real time
  max_realtime_streams_unbatched   the same with one processor call per stream (ratio = batching gain)
  peak_rss_mb_per_stream           resident memory added per open stream in steady state (64 streams)
Models: `tiny` (the embedded default; random weights if the packaged ones are missing, said in the
output) and `sam-tiny` (a random-weight SAM Audio of the official architecture, shrunk to run on a CPU:
16 kHz codec with 25 frames/s, 64-wide DiT), driven by the sliding-window regime.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

SAM_TINY = {
    "in_channels": 96,
    "audio_codec": {"encoder_dim": 8, "encoder_rates": [2, 4, 8, 10], "latent_dim": 32, "decoder_dim": 96,
                    "decoder_rates": [10, 8, 4, 2], "codebook_dim": 16, "sample_rate": 16000},
    "transformer": {"dim": 64, "n_heads": 4, "n_layers": 2, "out_channels": 32, "context_dim": 64},
    "text_encoder": {"name": "t5-base", "dim": 32}, "vision_encoder": {"name": "PE-Core-L14-336", "dim": 48},
    "num_anchors": 3, "anchor_embedding_dim": 16,
}
SAM_TINY_WATERMARK = {"wm_hidden": 32, "wm_channels": 2, "wm_msg_dim": 8}
MEMORY_STREAMS = 64
STEADY_AFTER_S = 5.0  # longer than any context or window used here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="tiny,sam-tiny", help="comma-separated: tiny, sam-tiny")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one core)")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(name: str):
    """-> (processor, offline reference function audio -> [2, S] aligned with the input, note)."""
    import torch

    torch.manual_seed(0)
    if name == "tiny":
        from samstream.model.embedded import EmbeddedConfig, EmbeddedModel, EmbeddedSeparator, load_embedded
        from samstream.model.errors import ModelLoadError
        from samstream.stream.regimes.block_causal import BlockCausalProcessor

        try:
            separator, note = load_embedded(), "packaged weights"
        except ModelLoadError:
            separator, note = EmbeddedSeparator(EmbeddedModel(EmbeddedConfig())), "random weights (no packaged model)"

        def offline(audio, prompt):
            result = separator.separate(audio, separator.sample_rate, spans=prompt.spans)
            return [result.target, result.residual]

        return BlockCausalProcessor(separator), offline, note
    if name == "sam-tiny":
        from samstream.model.loading import rebuild_buffers
        from samstream.model.sam_audio import SAMAudio, SAMAudioConfig
        from samstream.model.separator import SAMAudioSeparator
        from samstream.stream.regimes.sliding_window import SlidingWindowProcessor, WindowConfig, windowed_reference

        model = SAMAudio(SAMAudioConfig.from_dict(SAM_TINY, codec_overrides=SAM_TINY_WATERMARK)).eval()
        rebuild_buffers(model)
        separator = SAMAudioSeparator(model)
        config = WindowConfig.from_seconds(25, window_s=4.0, hop_s=0.52, lookahead_s=0.4, steps=4)
        processor = SlidingWindowProcessor(separator, config)

        def offline(audio, prompt):
            out = windowed_reference(processor, audio, prompt)
            return out[:, processor.delay_samples:processor.delay_samples + audio.shape[0]]

        return processor, offline, "random weights, window 4 s / hop 0.52 s / look-ahead 0.4 s, 4 midpoint steps"
    raise SystemExit(f"unknown model {name!r}: use tiny or sam-tiny")


class TimedProcessor:
    """Wraps a processor and accumulates the time spent inside `process` (the model's share)."""

    def __init__(self, processor):
        self.inner = processor
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def process(self, states, hops, steps):
        start = time.perf_counter()
        out = self.inner.process(states, hops, steps)
        self.seconds += time.perf_counter() - start
        return out


def signal(seconds: float, rate: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voiced = 0.3 * np.sin(2 * np.pi * 220 * t + 2 * np.sin(2 * np.pi * 3 * t)) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    return (voiced + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def measure(name: str, args) -> dict:
    import numpy as np

    from samstream.stream.processor import Prompt
    from samstream.stream.session import StreamSession

    processor, offline, note = build(name)
    rate = processor.sample_rate
    prompt = Prompt(spans=(("+", 0.5, 1.5),))
    audio = signal(args.seconds, rate)

    # RTF and exactness: one stream at the model rate, random frame sizes.
    timed = TimedProcessor(processor)
    session = StreamSession(timed, rate, prompt)
    rng = np.random.default_rng(1)
    outs, position = [], 0
    while position < audio.shape[0]:
        size = int(rng.integers(1, 4096))
        outs.append(session.push(audio[position:position + size]))
        position += size
    outs.append(session.flush())
    streamed = np.concatenate([np.stack(o) for o in outs], axis=1)
    latency = session.latency_samples
    aligned = streamed[:, latency:latency + audio.shape[0]]
    reference = np.asarray(offline(audio, prompt))
    error = float(np.sum((reference - aligned) ** 2))
    snr = 10 * math.log10(float(np.sum(reference**2)) / max(error, 1e-30))
    rtf = timed.seconds / args.seconds

    # Pipeline cost: a 48 kHz client in 10 ms frames; everything but the model's share.
    client = 48000
    timed48 = TimedProcessor(processor)
    session48 = StreamSession(timed48, client, prompt)
    audio48 = signal(args.seconds, client)
    frame = client // 100
    start = time.perf_counter()
    for k in range(0, audio48.shape[0] - frame + 1, frame):
        session48.push(audio48[k:k + frame])
    pipeline = time.perf_counter() - start - timed48.seconds
    pipeline_us = 1e6 * pipeline / (args.seconds * 100)

    # Capacity: the largest batch one processor call keeps within a hop's duration (batched), and how many
    # single-stream calls fit in a hop (unbatched).
    hop_s = processor.hop_samples / rate
    hops = signal(1.0, rate, seed=3)[: processor.hop_samples]

    # Steady state only: the first seconds of a stream are cheaper (no context yet, no full window).
    warmup_hops = math.ceil(STEADY_AFTER_S * rate / processor.hop_samples)

    def batch_time(n: int) -> float:
        states = [processor.init_state(prompt) for _ in range(n)]
        batch = np.repeat(hops[None], n, axis=0)
        for _ in range(warmup_hops):
            processor.process(states, batch, processor.max_steps)
        best = float("inf")
        for _ in range(3):
            begin = time.perf_counter()
            processor.process(states, batch, processor.max_steps)
            best = min(best, time.perf_counter() - begin)
        return best

    single = batch_time(1)
    unbatched = int(hop_s / single)
    batched, n = 1 if single < hop_s else 0, 2
    while n <= 256 and batch_time(n) < hop_s:
        batched, n = n, n * 2

    # Memory per stream: open 64 streams and run them into steady state (one batched call per hop).
    import gc

    gc.collect()
    before = rss_mb()
    sessions = [StreamSession(processor, rate, prompt) for _ in range(MEMORY_STREAMS)]
    states = [session.state for session in sessions]
    batch = np.repeat(hops[None], MEMORY_STREAMS, axis=0)
    for _ in range(warmup_hops):
        processor.process(states, batch, processor.max_steps)
    per_stream = max(0.0, rss_mb() - before) / MEMORY_STREAMS

    return {
        "model": name, "weights": note, "sample_rate": rate, "hop_ms": 1000 * hop_s,
        "rtf": round(rtf, 4),
        "algorithmic_latency_ms": round(1000 * latency / rate, 2),
        "latency_ms_at_48k": round(session48.metrics.latency_ms, 2),
        "pipeline_us_per_10ms": round(pipeline_us, 1),
        "stream_vs_offline_snr_db": round(snr, 1),
        "max_realtime_streams": batched,
        "max_realtime_streams_unbatched": unbatched,
        "batching_gain": round(batched / max(unbatched, 1), 2),
        "peak_rss_mb_per_stream": round(per_stream, 2),
    }


def run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        row = measure(name, args)
        rows.append(row)
        print(f"{name}: rtf {row['rtf']:.3f}  latency {row['algorithmic_latency_ms']:.1f} ms "
              f"(48 kHz client {row['latency_ms_at_48k']:.1f} ms)  pipeline {row['pipeline_us_per_10ms']:.0f} us/10 ms  "
              f"stream vs offline {row['stream_vs_offline_snr_db']:.1f} dB  streams: {row['max_realtime_streams']} "
              f"batched / {row['max_realtime_streams_unbatched']} unbatched  {row['peak_rss_mb_per_stream']:.1f} MB/stream"
              f"  [{row['weights']}]")
    if args.json:
        print(json.dumps({"machine": f"{platform.machine()}, {args.threads} torch thread(s)", "results": rows}))
    return 0

"""`samstream bench embedded`: real-time factor of the embedded model's `stream_step` on one CPU thread.

`rtf` = compute time of the chunk steps / duration of the audio they advance, per stream (with `--sessions`
N, one batched step advances N streams); `rtf_batch_step` = one batched step's time / one chunk's duration. Prompt encoding happens once at session start and is not counted.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="embedded weights (.safetensors); default: the packaged tiny model")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio to stream per session")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--sessions", type=int, default=1, help="streams advanced together in one batched step")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm import tqdm

    from samstream.model.embedded import WEIGHTS_DIR, load_embedded

    torch.set_num_threads(args.threads)
    path = Path(args.model) if args.model else WEIGHTS_DIR / "tiny.safetensors"
    separator = load_embedded(path)
    # a span prompt: the text encoder's one-off load is not part of the per-chunk cost
    states = [separator.init_stream(spans=[("+", 0.0, 1.0)]) for _ in range(args.sessions)]
    chunk_count = int(args.seconds * separator.sample_rate) // separator.chunk_samples
    rng = np.random.default_rng(0)
    chunks = (0.1 * rng.standard_normal((chunk_count, args.sessions, separator.chunk_samples))).astype(np.float32)
    for chunk in chunks[:5]:  # warm-up (allocator, first-call paths)
        separator.stream_step(states, chunk, args.steps)
    times = []
    for chunk in tqdm(chunks, desc="bench", unit="chunk", leave=False):
        start = time.perf_counter()
        separator.stream_step(states, chunk, args.steps)
        times.append(time.perf_counter() - start)
    chunk_seconds = separator.chunk_samples / separator.sample_rate
    params = sum(p.numel() for p in separator.model.parameters())
    result = {
        # per stream: the batched step's time shared by its sessions
        "rtf": round(float(np.sum(times)) / (len(times) * chunk_seconds * args.sessions), 4),
        # one batched step against one chunk of audio: must stay below 1 to keep up
        "rtf_batch_step": round(float(np.mean(times)) / chunk_seconds, 4),
        "rtf_batch_step_p99": round(float(np.percentile(times, 99)) / chunk_seconds, 4),
        "algorithmic_latency_ms": (separator.chunk_samples + separator.delay_samples) / separator.sample_rate * 1000,
        "chunk_ms": chunk_seconds * 1000,
        "delay_ms": separator.delay_samples / separator.sample_rate * 1000,
        "steps": args.steps or separator.config.steps,
        "sessions": args.sessions,
        "threads": args.threads,
        "params": params,
        "weights_mb": round(path.stat().st_size / 1e6, 2),
    }
    print(f"RTF {result['rtf']:.3f} per stream ({args.sessions} session(s), {args.threads} thread(s), "
          f"{result['steps']} step(s)); algorithmic latency {result['algorithmic_latency_ms']:.0f} ms; "
          f"{params / 1e6:.2f} M parameters, {result['weights_mb']} MB")
    if args.json:
        print(json.dumps(result))
    return 0

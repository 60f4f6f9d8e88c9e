"""`samstream bench embedded`: real-time factor and latency of the default model on one CPU thread.

The default model (model/composite.py) runs a different part per prompt, so each part is measured with a prompt that
reaches it: "speech" (the speech expert), "woman speaking" (the expert and its pitch mask), an enrollment clip (the
voice picker; 3 s of noise: the cost does not depend on the voice), a time span (the first general network alone,
after the expert) and, where the default model blends general networks, the class whose blend
runs the most of them (part "blend", after the expert). `rtf` = compute
time of the chunk steps / duration of the audio they advance, per stream (with `--sessions` N, one batched step
advances N streams); the headline `rtf` is the slowest part's. Latency: the fixed latency of a session at 16 kHz
and at 48 kHz (the engine's resamplers included), as a client sees it. Prompt encoding and the first stream's start-up are not counted.
`--model FILE` measures an embedded-network weights file alone, as before the composite.
"""

from __future__ import annotations

import argparse
import json


def part_prompts(separator) -> dict:
    """One prompt per part of the default model: part -> (the branch serving it, `init_stream` keyword arguments)."""
    import numpy as np

    from samstream.model.composite import EXPERT, GENERAL, VOICE

    rate = separator.sample_rate
    enrollment = (0.1 * np.random.default_rng(1).standard_normal(3 * rate)).astype(np.float32)
    parts = {"expert": (EXPERT, dict(prompt="speech")), "pitch_mask": (EXPERT, dict(prompt="woman speaking")),
             "voice": (VOICE, dict(example=enrollment, example_rate=rate)),
             "general": (GENERAL, dict(spans=[("+", 0.0, 1.0)]))}
    widest = max(separator.blends.items(), key=lambda item: len(item[1].weights), default=None)
    if widest is not None and len(widest[1].weights) > 1:
        parts["blend"] = (GENERAL, dict(prompt=widest[0]))
    return parts


def reaches(separator, branch: str, kwargs: dict) -> bool:
    """Whether this prompt reaches its part here (no voice picker shipped, no expert)."""
    return separator.plan(kwargs.get("prompt"), kwargs.get("spans", ()), kwargs.get("example"))[0] == branch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="an embedded network's weights (.safetensors), measured alone; "
                                                      "default: the default model, part by part")
    parser.add_argument("--no-speech-expert", action="store_true", help="the default model without its speech expert")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio to stream per session")
    parser.add_argument("--steps", type=int, help="sampling steps of the general separator (default: the model's)")
    parser.add_argument("--sessions", type=int, default=1, help="streams advanced together in one batched step")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def measure(separator, prompt_kwargs: dict, sessions: int, seconds: float, steps: int | None) -> dict:
    import time

    import numpy as np
    from tqdm import tqdm

    states = [separator.init_stream(**prompt_kwargs) for _ in range(sessions)]
    chunk_count = int(seconds * separator.sample_rate) // separator.chunk_samples
    rng = np.random.default_rng(0)
    chunks = (0.1 * rng.standard_normal((chunk_count, sessions, separator.chunk_samples))).astype(np.float32)
    for chunk in chunks[:5]:  # warm-up (allocator, first-call paths)
        separator.stream_step(states, chunk, steps)
    times = []
    for chunk in tqdm(chunks, desc="bench", unit="chunk", leave=False):
        start = time.perf_counter()
        separator.stream_step(states, chunk, steps)
        times.append(time.perf_counter() - start)
    chunk_seconds = separator.chunk_samples / separator.sample_rate
    return {
        # per stream: the batched step's time shared by its sessions
        "rtf": round(float(np.sum(times)) / (len(times) * chunk_seconds * sessions), 4),
        # one batched step against one chunk of audio: must stay below 1 to keep up
        "rtf_batch_step": round(float(np.mean(times)) / chunk_seconds, 4),
        "rtf_batch_step_p99": round(float(np.percentile(times, 99)) / chunk_seconds, 4),
    }


def session_latency_ms(processor, rate: int) -> float:
    from samstream.stream.processor import Prompt
    from samstream.stream.session import StreamSession

    session = StreamSession(processor, rate, Prompt(spans=(("+", 0.0, 1.0),)))
    return round(1000 * session.latency_samples / rate, 2)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from samstream.model.embedded import load_embedded
    from samstream.stream.regimes.block_causal import BlockCausalProcessor

    torch.set_num_threads(args.threads)
    if args.model:
        separator = load_embedded(Path(args.model))
        parts = {"network": dict(spans=[("+", 0.0, 1.0)])}
    else:
        from samstream.model.composite import load_default

        separator = load_default(speech_expert=not args.no_speech_expert)
        # a part that does not serve its prompt here is not measured
        parts = {name: kwargs for name, (branch, kwargs) in part_prompts(separator).items()
                 if reaches(separator, branch, kwargs)}
    per_part = {name: measure(separator, kwargs, args.sessions, args.seconds, args.steps)
                for name, kwargs in parts.items()}
    worst = max(per_part.values(), key=lambda figures: figures["rtf"])
    processor = BlockCausalProcessor(separator)
    result = {
        **worst,
        "rtf_per_part": {name: figures["rtf"] for name, figures in per_part.items()},
        "algorithmic_latency_ms": (separator.chunk_samples + separator.delay_samples) / separator.sample_rate * 1000,
        "latency_ms_at_16k": session_latency_ms(processor, 16000),
        "latency_ms_at_48k": session_latency_ms(processor, 48000),
        "chunk_ms": separator.chunk_samples / separator.sample_rate * 1000,
        "delay_ms": separator.delay_samples / separator.sample_rate * 1000,
        "speech_expert": not args.model and not args.no_speech_expert,
        "sessions": args.sessions,
        "threads": args.threads,
    }
    print(f"RTF {result['rtf']:.3f} per stream, slowest part ({args.sessions} session(s), {args.threads} thread(s)): "
          + ", ".join(f"{name} {rtf:.3f}" for name, rtf in result["rtf_per_part"].items())
          + f"; latency {result['latency_ms_at_16k']:.1f} ms at 16 kHz, {result['latency_ms_at_48k']:.1f} ms at 48 kHz")
    if args.json:
        print(json.dumps(result))
    return 0

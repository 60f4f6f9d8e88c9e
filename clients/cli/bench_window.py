"""`samstream bench window`: how far sliding-window streaming lies from one whole-file separation.

For each (window, hop, look-ahead) choice it streams a clip through the sliding-window regime and
compares the committed output with a single whole-file separation that starts from the same
frame-indexed noise (so the only difference is the limited window), as an SNR in dB on target and
residual. It uses the shared random-weight SAM Audio test checkpoint, whose codec runs at 25 frames/s
like the real one, so window arithmetic is the same; the latency column is computed with the released
codec's constants (encoder context 6 frames, decoder context 8 frames).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

PARITY_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "parity"
REAL_ENCODER_CONTEXT_S = 6 / 25


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(PARITY_DIR), help="SAM Audio checkpoint directory (random weights are fine)")
    parser.add_argument("--seconds", type=float, default=24.0, help="clip length")
    parser.add_argument("--windows", default="2,4,10", help="window lengths (s)")
    parser.add_argument("--hops", default="0.24,0.52,1.0", help="hop lengths (s)")
    parser.add_argument("--lookaheads", default="0.2,0.52,1.0", help="look-ahead lengths (s)")
    parser.add_argument("--steps", type=int, default=4, help="midpoint steps")


def snr_db(reference, estimate) -> float:
    import numpy as np

    noise = float(np.sum((reference - estimate) ** 2))
    return float(10 * math.log10(float(np.sum(reference**2)) / max(noise, 1e-30)))


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from samstream.model.loading import load_sam_audio
    from samstream.model.separator import SAMAudioSeparator
    from samstream.stream.processor import Prompt
    from samstream.stream.regimes.sliding_window import SlidingWindowProcessor, WindowConfig, windowed_reference

    model = load_sam_audio(args.model, progress=False).model
    separator = SAMAudioSeparator(model)
    rate, frame = separator.sample_rate, model.audio_codec.hop_length
    frame_rate = rate / frame
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 7 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0) + 0.1 * rng.standard_normal(t.size))
    audio = audio.astype(np.float32)
    prompt = Prompt(spans=(("+", 2.0, 4.0),))
    rows = []
    for window_s in map(float, args.windows.split(",")):
        for hop_s in map(float, args.hops.split(",")):
            for lookahead_s in map(float, args.lookaheads.split(",")):
                if hop_s + lookahead_s >= window_s:
                    continue
                config = WindowConfig.from_seconds(frame_rate, window_s, hop_s, lookahead_s, steps=args.steps)
                processor = SlidingWindowProcessor(separator, config)
                start = time.perf_counter()
                streamed = windowed_reference(processor, audio, prompt)
                elapsed = time.perf_counter() - start
                with torch.inference_mode():  # one window over the whole clip, same frame-indexed noise
                    n = streamed.shape[1]
                    padded = np.zeros(n, np.float32)
                    padded[: audio.shape[0]] = audio
                    z = model.audio_codec.encode_frames(torch.from_numpy(padded)[None, None])[0].T
                    frames = z.shape[0]
                    final = processor.separate_windows([(0, frames, processor.frame_base(z), prompt)], args.steps)[0]
                    whole = processor._decode(final)
                delay = processor.delay_samples
                aligned = streamed[:, delay:delay + audio.shape[0]]
                skip = int(window_s * rate)  # the first window grows from the stream start: compare after it
                reference = whole[:, skip:audio.shape[0]]
                estimate = aligned[:, skip:audio.shape[0]]
                rows.append({
                    "window_s": window_s, "hop_s": config.hop_frames / frame_rate,
                    "lookahead_s": config.lookahead_frames / frame_rate,
                    "target_snr_db": round(snr_db(reference[0], estimate[0]), 2),
                    "residual_snr_db": round(snr_db(reference[1], estimate[1]), 2),
                    "algorithmic_latency_s_real_codec": round((config.hop_frames + config.lookahead_frames) / 25
                                                              + REAL_ENCODER_CONTEXT_S, 3),
                    "windows_per_output_second": round(frame_rate / config.hop_frames, 2),
                    "relative_dit_cost": round(config.window_frames / config.hop_frames, 1),
                    "bench_seconds": round(elapsed, 2),
                })
                row = rows[-1]
                print(f"window {window_s:5.2f} s  hop {row['hop_s']:.2f} s  look-ahead {row['lookahead_s']:.2f} s  "
                      f"target SNR {row['target_snr_db']:6.2f} dB  residual SNR {row['residual_snr_db']:6.2f} dB  "
                      f"latency {row['algorithmic_latency_s_real_codec']:.2f} s  DiT cost x{row['relative_dit_cost']}")
    if args.json:
        print(json.dumps({"model": args.model, "seconds": args.seconds, "steps": args.steps, "results": rows}))
    return 0
